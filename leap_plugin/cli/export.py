"""``leap-export``: trained models to ONNX, checked against the torch model.

    leap-export face --weights OUTPUT/model.pt --network r18 [--embedding-size 512] -o face.onnx
    leap-export face --weights OUTPUT/model.pt --config CONFIG.py -o face.onnx
    leap-export reid --config-file CONFIG.yml --weights model_final.pth -o reid.onnx [KEY VALUE ...]

Face models are exported as insightface expects a recognition model: one input
``(batch, 3, 112, 112)`` of RGB images scaled ``(x - 127.5) / 127.5`` and one embedding
output, with no normalisation nodes in the graph, so that PyPI insightface's
``model_zoo.get_model(path)`` loads it as ``ArcFaceONNX`` and its ``get_feat`` returns the
torch model's embedding. re-ID models are fastreid's whole ``Baseline`` in eval mode: it takes
raw 0-255 RGB images of ``INPUT.SIZE_TEST`` and normalises them inside (pixel mean / std),
returning the neck feature that fastreid evaluates.

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

from ..face.backbones import INPUT_SIZE, build_backbone, load_backbone_weights

__all__ = ["export_onnx", "onnx_agreement", "export_face", "export_reid", "insightface_agreement", "main"]

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


def export_face(weights: Optional[str], path: str, network: str = "r50", embedding_size: int = 512) -> nn.Module:
    """Export a face backbone to ``path``: weights from a leap-face-train or arcface_torch
    ``model.pt`` or checkpoint (loaded strictly; None keeps the random initialisation);
    checked with onnxruntime and, if installed, insightface. Returns the torch model."""
    model = build_backbone(network, embedding_size)
    if weights:
        try:
            load_backbone_weights(model, weights, network)
        except ValueError as e:
            raise ValueError(f"{e} (embedding size {embedding_size})") from e
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE) * 2 - 1
    export_onnx(model, example, path)
    logger.info("onnxruntime agreement: cosine %.6f", onnx_agreement(model, path, example))
    if importlib.util.find_spec("insightface") is None:
        logger.info("insightface is not installed: its loader was not tried")
    else:
        faces = list(np.random.default_rng(0).integers(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    face = sub.add_parser("face", help="a leap-face-train backbone, for insightface")
    face.add_argument("--weights", required=True, help="model.pt or a checkpoint of leap-face-train or arcface_torch")
    face.add_argument("--config", help="the training config (gives network and embedding_size)")
    face.add_argument("--network", help="backbone name, e.g. r18, r50 (overrides --config)")
    face.add_argument("--embedding-size", type=int, help="embedding dimension (overrides --config)")
    face.add_argument("-o", "--output", required=True, help="ONNX file to write")
    reid = sub.add_parser("reid", help="a fastreid model (trained with leap-train or fastreid)")
    reid.add_argument("--config-file", required=True, help="fastreid YAML config")
    reid.add_argument("--weights", help="fastreid checkpoint (model_final.pth)")
    reid.add_argument("-o", "--output", required=True, help="ONNX file to write")
    reid.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    try:
        if args.kind == "face":
            network, embedding_size = "r50", 512
            if args.config:
                from ..face.config import load_config

                cfg = load_config(args.config)
                network, embedding_size = cfg.network, cfg.embedding_size
            export_face(args.weights, args.output, args.network or network, args.embedding_size or embedding_size)
        else:
            export_reid(args.config_file, args.weights, args.output, args.opts)
    except (ValueError, FileNotFoundError) as e:  # bad config, key, weights: say which
        parser.error(str(e))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
