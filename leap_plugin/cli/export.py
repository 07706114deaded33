"""``leap-export``: trained models to ONNX, checked against the torch model.

    leap-export face --weights OUTPUT/model.pt -o face.onnx       # a leap-face-train run folder
    leap-export face --weights model.pt --network r18 [--embedding-size 512] [--input-size 112] -o face.onnx
    leap-export face --weights OUTPUT/model.pt --config CONFIG.py -o face.onnx
    leap-export reid --config-file CONFIG.yml --weights model_final.pth -o reid.onnx [KEY VALUE ...]

A face backbone's ``network``, ``embedding_size`` and ``input_size`` come from, first to
last: the flags; the leap-face-train checkpoint that wrote the weights (the weights file
itself, or ``checkpoint_rank0.pt`` beside ``model.pt``), which records what was trained,
command-line overrides included; ``--config``; the defaults r50, 512, 112.

Face models are exported as insightface expects a recognition model: one input
``(batch, 3, S, S)`` (S = the input size, 112 for arcface_torch's crops) of RGB images
scaled ``(x - 127.5) / 127.5`` and one embedding output, with no normalisation nodes in the
graph, so that PyPI insightface's ``model_zoo.get_model(path)`` loads it as ``ArcFaceONNX``
and its ``get_feat`` returns the torch model's embedding (insightface routes only sizes of at
least 112, multiples of 16 but 192, to ``ArcFaceONNX``; a model of another size is checked
with onnxruntime alone). re-ID models are fastreid's whole ``Baseline`` in eval mode: it
takes raw 0-255 RGB images of ``INPUT.SIZE_TEST`` and normalises them inside (pixel mean /
std), returning the neck feature that fastreid evaluates.

After export the ONNX model runs in onnxruntime on random input and must agree with the torch
model (cosine > 0.999 per sample); for face models, insightface's own loader is tried too
when it is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._args import reject_flags_after_overrides
from ..face.backbones import INPUT_SIZE, build_backbone, load_backbone_weights

__all__ = ["export_onnx", "onnx_agreement", "export_face", "export_reid", "insightface_agreement",
           "insightface_loads_as_recognition", "face_settings", "main"]

logger = logging.getLogger(__name__)

#: Smallest cosine between the torch and the ONNX embedding of one input that passes.
MIN_COSINE = 0.999


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, opset: int = 17) -> None:
    """Export ``model`` (eval mode) with one input ``input`` and one output ``embedding``,
    the batch dimension dynamic."""
    model.eval()
    with torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript, and the graph here is static.
        torch.onnx.export(model, (example.clone(),), path, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})


def onnx_agreement(model: nn.Module, path: str, example: torch.Tensor) -> float:
    """Smallest per-sample cosine between the torch model and onnxruntime on ``example``;
    raises ``RuntimeError`` below :data:`MIN_COSINE`."""
    import onnxruntime

    model.eval()
    with torch.no_grad():
        expected = model(example.clone()).float().numpy()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    worst = float(_cosine(expected, got).min())
    if not worst > MIN_COSINE:
        raise RuntimeError(f"ONNX model {path} disagrees with the torch model: cosine {worst:.6f}")
    return worst


def insightface_agreement(model: nn.Module, path: str, images_bgr: Sequence[np.ndarray]) -> float:
    """Load ``path`` with insightface's ``model_zoo.get_model`` and compare its ``get_feat``
    on BGR uint8 face crops with the torch model on the same images; returns the smallest
    cosine and raises ``RuntimeError`` if insightface does not see a recognition model."""
    from insightface.model_zoo import get_model

    from ..face.data import images_to_tensor

    loaded = get_model(path, providers=["CPUExecutionProvider"])
    if type(loaded).__name__ != "ArcFaceONNX" or (loaded.input_mean, loaded.input_std) != (127.5, 127.5):
        raise RuntimeError(f"insightface loads {path} as {type(loaded).__name__} with input mean/std "
                           f"{getattr(loaded, 'input_mean', None)}/{getattr(loaded, 'input_std', None)}, "
                           "not as an ArcFaceONNX recognition model taking (x - 127.5) / 127.5")
    got = loaded.get_feat(list(images_bgr))
    rgb = np.stack([image[:, :, ::-1] for image in images_bgr])
    model.eval()
    with torch.no_grad():
        expected = model(images_to_tensor(rgb)).numpy()
    worst = float(_cosine(expected, got).min())
    if not worst > MIN_COSINE:
        raise RuntimeError(f"insightface's get_feat on {path} disagrees with the torch model: cosine {worst:.6f}")
    return worst


def insightface_loads_as_recognition(input_size: int) -> bool:
    """Whether insightface's ``model_zoo.get_model`` routes a one-input model of this square
    input size to ``ArcFaceONNX`` (192 is its landmark model's, 96 its attribute model's;
    below 112 it returns None)."""
    return input_size >= 112 and input_size % 16 == 0 and input_size != 192


def export_face(weights: Optional[str], path: str, network: str = "r50", embedding_size: int = 512,
                input_size: int = INPUT_SIZE) -> nn.Module:
    """Export a face backbone to ``path`` with an ``(batch, 3, input_size, input_size)``
    input: weights from a leap-face-train or arcface_torch ``model.pt`` or checkpoint
    (loaded strictly; None keeps the random initialisation); checked with onnxruntime and,
    if installed, insightface. Returns the torch model."""
    model = build_backbone(network, embedding_size, input_size=input_size)
    if weights:
        try:
            load_backbone_weights(model, weights, network)
        except ValueError as e:
            raise ValueError(f"{e} (embedding size {embedding_size}, input size {input_size})") from e
    example = torch.rand(2, 3, input_size, input_size) * 2 - 1
    export_onnx(model, example, path)
    logger.info("onnxruntime agreement: cosine %.6f", onnx_agreement(model, path, example))
    if importlib.util.find_spec("insightface") is None:
        logger.info("insightface is not installed: its loader was not tried")
    elif not insightface_loads_as_recognition(input_size):
        logger.warning("insightface's model_zoo.get_model takes a model as a recognition model (ArcFaceONNX) "
                       "only for square inputs of at least 112, a multiple of 16, other than 192: at input size "
                       "%d its loader was not tried; run the ONNX with onnxruntime or "
                       "insightface.model_zoo.arcface_onnx.ArcFaceONNX(path)", input_size)
    else:
        faces = list(np.random.default_rng(0).integers(0, 256, (2, input_size, input_size, 3), dtype=np.uint8))
        logger.info("insightface agreement: cosine %.6f", insightface_agreement(model, path, faces))
    return model


class _CopyInput(nn.Module):
    """fastreid's ``Baseline`` normalises its input tensor in place; on a copy, the exported
    graph's input stays read-only and callers keep their images."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.clone())


def export_reid(config_file: str, weights: Optional[str], path: str, opts: Sequence[str] = ()) -> nn.Module:
    """Export a fastreid model (config + weights; None keeps the initialisation) to ``path``,
    checked with onnxruntime on raw 0-255 images. Returns the torch model."""
    from fastreid.modeling import build_model

    from ..reid.checkpoint import load_weights
    from ..reid.config import load_config

    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    if weights:
        load_weights(model, weights)
    model = _CopyInput(model)
    height, width = cfg.INPUT.SIZE_TEST
    example = torch.rand(2, 3, height, width) * 255
    export_onnx(model, example, path)
    logger.info("onnxruntime agreement: cosine %.6f", onnx_agreement(model, path, example))
    return model


#: A face backbone's settings when neither the flags, the run nor ``--config`` give them.
FACE_DEFAULTS = {"network": "r50", "embedding_size": 512, "input_size": INPUT_SIZE}


def face_settings(args: argparse.Namespace) -> dict:
    """``network``, ``embedding_size`` and ``input_size`` of ``leap-export face``: each from
    its flag, else the leap-face-train run that wrote ``--weights`` (what was trained), else
    ``--config``, else :data:`FACE_DEFAULTS`."""
    from ..face.checkpoint import recorded_settings

    config = {}
    if args.config:
        from ..face.config import load_config

        cfg = load_config(args.config)
        config = {key: getattr(cfg, key) for key in FACE_DEFAULTS}
    recorded = recorded_settings(args.weights) if args.weights else {}
    for key, value in recorded.items():
        if key in config and config[key] != value and getattr(args, key) is None:
            logger.warning("--config has %s = %r, the run that wrote %s trained with %r: exporting with %r",
                           key, config[key], args.weights, value, value)
    chosen = {key: getattr(args, key) for key in FACE_DEFAULTS}
    for key in FACE_DEFAULTS:
        if chosen[key] is None:
            chosen[key] = recorded.get(key, config.get(key, FACE_DEFAULTS[key]))
    logger.info("face backbone: network %s, embedding size %d, input size %d", chosen["network"],
                chosen["embedding_size"], chosen["input_size"])
    return chosen




def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    face = sub.add_parser("face", help="a leap-face-train backbone, for insightface")
    face.add_argument("--weights", required=True, help="model.pt or a checkpoint of leap-face-train or arcface_torch")
    face.add_argument("--config", help="the training config (gives network, embedding_size and input_size)")
    face.add_argument("--network", help="backbone name, e.g. r18, r50 (overrides --config)")
    face.add_argument("--embedding-size", type=int, help="embedding dimension (overrides --config)")
    face.add_argument("--input-size", type=int, help="side of the square input crops the model was trained on "
                      "(default: what the run recorded, else --config's input_size, else 112)")
    face.add_argument("-o", "--output", required=True, help="ONNX file to write")
    reid = sub.add_parser("reid", help="a fastreid model (trained with leap-train or fastreid)")
    # Not required=True: a missing --config-file or -o is reported after reject_flags_after_overrides, which says
    # why it went missing when it was written after the overrides (argparse.REMAINDER took it).
    reid.add_argument("--config-file", help="fastreid YAML config (required)")
    reid.add_argument("--weights", help="fastreid checkpoint (model_final.pth)")
    reid.add_argument("-o", "--output", help="ONNX file to write (required)")
    reid.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.kind == "reid":
        reject_flags_after_overrides(reid, args.opts, "leap-export reid --config-file ... -o ... KEY VALUE ...")
        missing = [flag for flag, value in (("--config-file", args.config_file), ("-o/--output", args.output))
                   if not value]
        if missing:
            reid.error(f"the following arguments are required: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    try:
        if args.kind == "face":
            export_face(args.weights, args.output, **face_settings(args))
        else:
            export_reid(args.config_file, args.weights, args.output, args.opts)
    except (ValueError, FileNotFoundError) as e:  # bad config, key, weights: say which
        parser.error(str(e))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
