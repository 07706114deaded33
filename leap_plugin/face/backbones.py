"""Face backbones with arcface_torch's module names, so its weights load strictly.

arcface_torch (``recognition/arcface_torch/backbones`` in deepinsight/insightface) trains
``network = "r18" / "r34" / "r50" / "r100"`` (IResNet, Deng et al., ArcFace, CVPR 2019) and
``"mbf"`` (MobileFaceNet, Chen et al. 2018). The modules here carry exactly its parameter
and buffer names and shapes, so a ``model.pt`` / ``backbone.pth`` it saved loads with
``strict=True`` (:func:`load_backbone_weights`):

- IResNet: ``conv1, bn1, prelu`` (3x3 stem at full resolution), ``layer1``..``layer4`` of
  basic blocks ``bn1, conv1, bn2, prelu, conv2, bn3`` (+ ``downsample.0`` 1x1 conv,
  ``downsample.1`` BN in the first block of a stage, which carries the stride 2), then
  ``bn2, dropout, fc, features`` (BatchNorm1d with its scale frozen at 1);
- MobileFaceNet: ``layers.0``..``layers.7`` (ConvBlock / DepthWise / Residual stages),
  ``conv_sep`` and the global depthwise ``features`` head.

Inputs are RGB images normalised as ``(x / 255 - 0.5) / 0.5`` (what insightface's
``ArcFaceONNX`` feeds), 112 x 112 by default; ``input_size`` (a multiple of 16) scales the
last spatial map, and so the embedding layer's input, for smaller CPU-sized crops.

Networks are looked up by name in :data:`BACKBONES`; :func:`register_backbone` adds one.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["BACKBONES", "IResNet", "MobileFaceNet", "register_backbone", "build_backbone", "INPUT_SIZE",
           "load_backbone_weights", "backbone_state_dict"]

#: Input height and width of arcface_torch's face crops.
INPUT_SIZE = 112

#: name -> factory(embedding_size, dropout, input_size) returning an nn.Module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register ``factory(embedding_size: int, dropout: float, input_size: int) -> nn.Module``."""
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in BACKBONES:
            raise KeyError(f"a face backbone named {name!r} is already registered")
        BACKBONES[name] = factory
        return factory
    return wrap


def build_backbone(name: str, embedding_size: int = 512, dropout: float = 0.0,
                   input_size: int = INPUT_SIZE) -> nn.Module:
    """The registered network ``name`` producing ``embedding_size``-d embeddings."""
    if name not in BACKBONES:
        raise ValueError(f"network = {name!r} is not a known face backbone; use one of {sorted(BACKBONES)}")
    if input_size % 16 or input_size < 16:
        raise ValueError(f"input_size = {input_size} is not allowed: use a multiple of 16 (112 for arcface_torch)")
    return BACKBONES[name](embedding_size=embedding_size, dropout=dropout, input_size=input_size)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


# ----------------------------------------------------------------------------- IResNet
class _IBlock(nn.Module):
    """IResNet basic block (BN, conv, BN, PReLU, conv carrying the stride, BN) + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv(cout, cout, stride=stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, kernel=1, stride=stride), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet with ``blocks`` basic blocks per stage (r18: (2, 2, 2, 2)).

    Args:
        blocks: blocks in each of the four stages.
        embedding_size: output dimension (``num_features`` in arcface_torch; 512).
        dropout: dropout probability before the embedding layer.
        widths: channels of the stem and the four stages (arcface_torch: 64, 64, 128, 256, 512).
        input_size: height and width of the input crops.
    """

    def __init__(self, blocks: Sequence[int], embedding_size: int = 512, dropout: float = 0.0,
                 widths: Sequence[int] = (64, 64, 128, 256, 512), input_size: int = INPUT_SIZE):
        super().__init__()
        stem, *stages = widths
        self.conv1 = _conv(3, stem)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        cin = stem
        for i, (n, cout) in enumerate(zip(blocks, stages), start=1):
            setattr(self, f"layer{i}", nn.Sequential(_IBlock(cin, cout, 2), *[_IBlock(cout, cout, 1)
                                                                              for _ in range(n - 1)]))
            cin = cout
        side = input_size // 2 ** len(blocks)
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        for m in self.modules():  # arcface_torch's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # A learnable scale here would only rescale the embedding, which the cosine ignores.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


#: arcface_torch's IResNet depths: blocks per stage.
IRESNET_BLOCKS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}

for _name, _blocks in IRESNET_BLOCKS.items():
    register_backbone(_name)(
        lambda embedding_size=512, dropout=0.0, input_size=INPUT_SIZE, _b=_blocks:
        IResNet(_b, embedding_size, dropout, input_size=input_size))


# ----------------------------------------------------------------------- MobileFaceNet
class _ConvBN(nn.Module):
    """conv + BN (+ PReLU): arcface_torch's ConvBlock / LinearBlock, ``layers.0/1/2``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, prelu: bool = True,
                 padding: int | None = None):
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        parts = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, groups=groups, bias=False),
                 nn.BatchNorm2d(cout)]
        if prelu:
            parts.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _DepthWise(nn.Module):
    """1x1 expansion to ``hidden`` channels, 3x3 depthwise, 1x1 linear projection; a residual
    connection when ``residual``."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(_ConvBN(cin, hidden), _ConvBN(hidden, hidden, 3, stride, groups=hidden),
                                    _ConvBN(hidden, cout, prelu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.residual else self.layers(x)


class _Residual(nn.Module):
    def __init__(self, channels: int, blocks: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(*[_DepthWise(channels, channels, hidden, 1, residual=True) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class _GlobalDepthwise(nn.Module):
    """The embedding head: a depthwise conv over the whole last map, then a linear layer and BN."""

    def __init__(self, side: int, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(_ConvBN(512, 512, side, groups=512, prelu=False, padding=0), _Flatten(),
                                    nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al., "MobileFaceNets", 2018) as arcface_torch's ``mbf``.

    Args:
        embedding_size: output dimension.
        blocks: residual blocks of the four stages (``mbf``: (1, 4, 6, 2)).
        scale: width multiplier of the stages (``mbf``: 2).
        input_size: height and width of the input crops (the global depthwise kernel is
            ``input_size / 16``).
    """

    def __init__(self, embedding_size: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 2,
                 input_size: int = INPUT_SIZE, dropout: float = 0.0):
        super().__init__()
        c1, c2 = 64 * scale, 128 * scale
        stem = _ConvBN(c1, c1, 3, 1, groups=64) if blocks[0] == 1 else _Residual(c1, blocks[0], 128)
        self.layers = nn.ModuleList([
            _ConvBN(3, c1, 3, 2), stem,
            _DepthWise(c1, c1, 128, 2), _Residual(c1, blocks[1], 128),
            _DepthWise(c1, c2, 256, 2), _Residual(c2, blocks[2], 256),
            _DepthWise(c2, c2, 512, 2), _Residual(c2, blocks[3], 256),
        ])
        self.conv_sep = _ConvBN(c2, 512)
        self.features = _GlobalDepthwise(input_size // 16, embedding_size)
        for m in self.modules():  # arcface_torch's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


@register_backbone("mbf")
def mbf(embedding_size: int = 512, dropout: float = 0.0, input_size: int = INPUT_SIZE) -> MobileFaceNet:
    return MobileFaceNet(embedding_size, (1, 4, 6, 2), 2, input_size)


@register_backbone("mbf_large")
def mbf_large(embedding_size: int = 512, dropout: float = 0.0, input_size: int = INPUT_SIZE) -> MobileFaceNet:
    return MobileFaceNet(embedding_size, (2, 8, 12, 4), 4, input_size)


# ----------------------------------------------------------------------------- weights
def backbone_state_dict(obj: Any, what: str) -> dict:
    """The backbone state dict inside what ``torch.load`` gave for ``what``: arcface_torch's
    ``model.pt`` (a plain state dict) or ``checkpoint_gpu_<rank>.pt`` (``state_dict_backbone``),
    or a leap-face-train checkpoint (``backbone``); a DDP ``module.`` prefix is removed."""
    if isinstance(obj, dict):
        for key in ("state_dict_backbone", "backbone"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what} holds no backbone state dict (a model.pt, an arcface_torch checkpoint "
                         "or a leap-face-train checkpoint)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_backbone_weights(model: nn.Module, path: str, network: str = "") -> None:
    """Load face backbone weights into ``model`` with ``strict=True``.

    Raises:
        ValueError: the file cannot be read, holds no backbone, or does not fit ``model``
            (naming missing / unexpected / misshaped entries).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for missing, truncated or foreign files
        raise ValueError(f"cannot read face weights {path!r} ({type(e).__name__}: {e})") from e
    state = backbone_state_dict(obj, repr(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {name}, e.g. {v[:3]}" for name, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
        raise ValueError(f"weights {path!r} do not fit network {network or type(model).__name__!r}: "
                         + "; ".join(parts))
    model.load_state_dict(state, strict=True)
