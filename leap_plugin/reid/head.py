"""``LeapHead``: fastreid's ``EmbeddingHead`` that feeds LEAP in training.

At inference it is ``EmbeddingHead`` unchanged (the neck feature is the embedding).
In training it updates the class centers and angle memory from the neck features
(Eq. 3-5) and passes each sample's cloud variance to the classification layer
(Eq. 7-8). When the updates happen and when the cloud starts is decided by
:class:`leap_plugin.reid.hooks.LeapHook` through :attr:`update_memory` and
:attr:`cloud_active`; fastreid's trainer attaches it, and hands the head K_i, after
``import leap_plugin``. A LeapHead that would train without either fails at its first
training step instead of training plain CosFace under a LEAP label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY, EmbeddingHead

from ..core import LeapMemory, LeapSettings
from .keys import leap_settings

__all__ = ["LeapHead", "leap_heads"]


@REID_HEADS_REGISTRY.register()
class LeapHead(EmbeddingHead):
    """EmbeddingHead + LEAP. Extra arguments (``leap=None`` turns LEAP off):

    leap: the :class:`leap_plugin.core.LeapSettings` of ``MODEL.HEADS.LEAP`` (the memory's
        settings, and ``alpha_mode`` for the classification layer).
    """

    @configurable
    def __init__(self, *, leap: LeapSettings | None = None, **kwargs):
        super().__init__(**kwargs)
        self.memory = None
        if leap is not None:
            self.cls_layer.alpha_mode = leap.alpha_mode
            self.memory = LeapMemory(self.weight.shape[0], self.weight.shape[1], settings=leap)
        # Set by LeapHook around each training step. Driving the head by hand (tests, your own
        # loop): set hook_attached = True and these two flags yourself.
        self.update_memory = False
        self.cloud_active = False
        self.hook_attached = False

    @classmethod
    def from_config(cls, cfg) -> dict:
        args = super().from_config(cfg)
        leap = leap_settings(cfg)
        args["leap"] = leap if leap.enabled else None
        return args

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None):
        if not self.training or self.memory is None:
            return super().forward(features, targets)

        if not self.hook_attached:
            raise RuntimeError(
                "LeapHead is training without LeapHook, so its feature cloud would never switch on: train "
                "with fastreid's DefaultTrainer (or a subclass that keeps super().build_hooks()) after "
                "`import leap_plugin`, or set MODEL.HEADS.LEAP.ENABLED False")
        if not self.memory.has_counts:
            raise RuntimeError(
                "LeapHead has no class counts K_i (Eq. 5), so no class could ever be clouded: train with "
                "fastreid's DefaultTrainer after `import leap_plugin` (it hands them over), or call "
                "model.heads.memory.set_class_counts(counts) before training")
        pool_feat = self.pool_layer(features)
        neck_feat = self.bottleneck(pool_feat)[..., 0, 0]
        if self.update_memory:
            self.memory.update(neck_feat, targets)
        variance = self.memory.cloud_variance_of(targets) if self.cloud_active else None

        logits = F.linear(F.normalize(neck_feat), F.normalize(self.weight))
        cls_outputs = self.cls_layer(logits.clone(), targets, variance=variance)
        if self.neck_feat == "before":
            feat = pool_feat[..., 0, 0]
        elif self.neck_feat == "after":
            feat = neck_feat
        else:
            raise KeyError(f"{self.neck_feat} is invalid for MODEL.HEADS.NECK_FEAT")
        return {
            "cls_outputs": cls_outputs,
            "pred_class_logits": logits.mul(self.cls_layer.s),
            "features": feat,
        }


def leap_heads(model: torch.nn.Module) -> list[LeapHead]:
    """The LEAP-enabled heads inside ``model`` (DDP-wrapped or not)."""
    return [m for m in model.modules() if isinstance(m, LeapHead) and m.memory is not None]
