"""Face backbones: the improved ResNet ("IResNet") of ArcFace, 112x112 RGB -> embedding.

The architecture follows the one arcface_torch trains (``network = "r18" / "r50" ...``):
a 3x3 stem at full resolution, pre-activation-style basic blocks (BN, conv, BN, PReLU,
strided conv, BN) in four stages of stride 2, then BN, dropout, a fully connected layer
from the 7x7x512 map and a BatchNorm1d whose scale is frozen at 1. Inputs are RGB images
normalised as ``(x / 255 - 0.5) / 0.5`` (what insightface's ``ArcFaceONNX`` feeds).

Networks are looked up by name in :data:`BACKBONES`; :func:`register_backbone` adds one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["BACKBONES", "IResNet", "register_backbone", "build_backbone", "INPUT_SIZE"]

#: Input height and width of every face backbone here (aligned insightface crops).
INPUT_SIZE = 112

#: name -> factory(embedding_size, dropout) returning an nn.Module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register ``factory(embedding_size: int, dropout: float) -> nn.Module``."""
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in BACKBONES:
            raise KeyError(f"a face backbone named {name!r} is already registered")
        BACKBONES[name] = factory
        return factory
    return wrap


def build_backbone(name: str, embedding_size: int = 512, dropout: float = 0.0) -> nn.Module:
    """The registered network ``name`` producing ``embedding_size``-d embeddings."""
    if name not in BACKBONES:
        raise ValueError(f"network = {name!r} is not a known face backbone; use one of {sorted(BACKBONES)}")
    return BACKBONES[name](embedding_size=embedding_size, dropout=dropout)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _Block(nn.Module):
    """IResNet basic block; the second convolution carries the stage's stride."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5), _conv3x3(cin, cout),
            nn.BatchNorm2d(cout, eps=1e-5), nn.PReLU(cout),
            _conv3x3(cout, cout, stride), nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """IResNet with ``blocks`` basic blocks per stage and stage widths ``widths``.

    Args:
        blocks: blocks in each of the four stages, e.g. (2, 2, 2, 2) for r18.
        embedding_size: output dimension (512 in the paper).
        dropout: dropout probability before the embedding layer.
        widths: channels of the stem and the four stages.
    """

    def __init__(self, blocks: Sequence[int], embedding_size: int = 512, dropout: float = 0.0,
                 widths: Sequence[int] = (64, 64, 128, 256, 512)):
        super().__init__()
        stem, *stages = widths
        self.stem = nn.Sequential(_conv3x3(3, stem), nn.BatchNorm2d(stem, eps=1e-5), nn.PReLU(stem))
        layers, cin = [], stem
        for n, cout in zip(blocks, stages):
            layers += [_Block(cin, cout, 2)] + [_Block(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.stages = nn.Sequential(*layers)
        side = INPUT_SIZE // 2 ** len(blocks)
        self.bn = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        # A learnable scale here would only rescale the embedding, which the cosine ignores.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.stages(self.stem(x)))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


for _name, _blocks in {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3),
                       "r100": (3, 13, 30, 3)}.items():
    register_backbone(_name)(lambda embedding_size=512, dropout=0.0, _b=_blocks: IResNet(_b, embedding_size, dropout))
