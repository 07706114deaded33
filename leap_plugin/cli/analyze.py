"""``leap-analyze``: the paper's feature-space diagnostics for a trained fastreid model.

Extracts the features fastreid evaluates (eval-mode neck features) of the training set
(default: the paper analyses training features, Sec. 1) or of the test set, measures the
intra-class angular spread of head and tail classes (:mod:`leap_plugin.analysis.stats`) and
writes ``analysis.json`` plus the figures (:mod:`leap_plugin.analysis.plots`) to ``--output``:

- ``angles.png``: head vs tail angle distributions (Figs. 2-3) and spread vs K_i;
- ``tsne.png``: t-SNE of a few head (dots) and tail (triangles) classes (Fig. 1);
- ``training_curves.png``: the run's ``metrics.json`` (when ``OUTPUT_DIR`` has one),
  overlaid with the runs given by ``--compare LABEL=METRICS_JSON``.

Usage::

    leap-analyze --config-file configs/X.yml [--weights model_final.pth] [--output DIR]
                 [--tail-threshold T] [--split train|test] [--max-classes-tsne N]
                 [--compare baseline=out/baseline/metrics.json] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import Mapping, Optional, Sequence

import leap_plugin  # noqa: F401  (patches fastreid, registers LEAP)
import torch
from fastreid.data.build import fast_batch_collator
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.modeling import build_model
from fastreid.utils.checkpoint import Checkpointer
from torch.utils.data import DataLoader

from ..analysis.plots import pick_tsne_classes, plot_angle_distributions, plot_training_curves, plot_tsne
from ..analysis.stats import STATISTICS, angle_statistics, format_summary, head_tail_summary
from ._args import reject_flags_after_overrides
from ..io import FolderInUse, atomic_write, lock_folder
from ..reid.checkpoint import load_weights
from ..reid.config import ConfigError, load_config
from ..reid.datasets import build_dataset
from ..reid.engine import build_train_set, class_counts

__all__ = ["SPLITS", "analyze", "extract_features", "main"]

logger = logging.getLogger("leap_plugin")

SPLITS = ("train", "test")

def _analysis_set(cfg, split: str, train_set: CommDataset) -> tuple[CommDataset, torch.Tensor]:
    """The images to analyse with fastreid's test transforms (no augmentation), relabelled,
    and the K_i that decide head vs tail: the training counts for ``train``; for ``test``
    (identities disjoint from training) each identity's number of test images."""
    transforms = build_transforms(cfg, is_train=False)
    if split == "train":
        return CommDataset(train_set.img_items, transforms, relabel=True), class_counts(train_set)
    items = []
    for name in cfg.DATASETS.TESTS:
        data = build_dataset(cfg, name)
        # Test pids are plain ints: prefix them so that two test sets do not merge identities.
        items.extend((path, f"{name}_{pid}", camid) for path, pid, camid in data.query + data.gallery)
    dataset = CommDataset(items, transforms, relabel=True)
    return dataset, class_counts(dataset)


@torch.no_grad()
def extract_features(model: torch.nn.Module, dataset: CommDataset, batch_size: int,
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode model outputs (fastreid's evaluated embedding: the neck feature) and labels,
    in dataset order. Returns ``(features (N, D) float32 on CPU, labels (N,))``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=fast_batch_collator)
    model.eval()
    features, labels = [], []
    for batch in loader:
        features.append(model(batch).float().cpu())
        labels.append(batch["targets"])
    return torch.cat(features), torch.cat(labels)


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def analyze(cfg, weights: Optional[str] = None, output_dir: Optional[str] = None,
            tail_threshold: Optional[int] = None, *, split: str = "train", max_classes_tsne: int = 10,
            compare: Optional[Mapping[str, str]] = None, seed: int = 0) -> dict:
    """Extract features, measure head vs tail angular spread, write ``analysis.json`` and PNGs.

    Args:
        cfg: a loaded config (:func:`leap_plugin.cli.train.load_config`); not modified.
        weights: fastreid checkpoint; default: the last checkpoint in ``cfg.OUTPUT_DIR``.
        output_dir: default ``<OUTPUT_DIR>/analysis``.
        tail_threshold: T (tail: K_i <= T); default ``MODEL.HEADS.LEAP.TAIL_THRESHOLD``.
        split: ``"train"`` (the long-tailed training set, as the paper) or ``"test"``
            (query + gallery of ``DATASETS.TESTS``).
        max_classes_tsne: classes in the t-SNE figure (0: no t-SNE).
        compare: ``{label: metrics.json}`` of other runs overlaid on the training curves.
        seed: seed of the matched-size draws, the t-SNE class choice and t-SNE itself.

    Returns:
        the content of ``analysis.json``::

            {"weights": str, "split": "train" | "test", "datasets": [str],
             "images": N, "classes": C, "feature_dim": D, "unit": "rad",
             "summary": head_tail_summary(...)   (head / tail mean +- CI per statistic,
                                                  tail/head ratios; see its docstring),
             "per_class": [{"label": int, "pid": str, "count": K_i, "images": n_i,
                            "head": bool, <statistic>: float | null, ...}],
             "plots": {"angles": "angles.png", "tsne": "tsne.png",
                       "training_curves": "training_curves.png"}  (names in output_dir;
                                                                    absent when not drawn)}

    Raises:
        ConfigError: bad split, no checkpoint, or a checkpoint that does not fit.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {SPLITS}, got {split!r}")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False  # the checkpoint overwrites the backbone anyway
    threshold = cfg.MODEL.HEADS.LEAP.TAIL_THRESHOLD if tail_threshold is None else int(tail_threshold)
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "analysis")
    weights = weights or Checkpointer(None, cfg.OUTPUT_DIR).get_checkpoint_file()
    if not weights:
        raise ConfigError(f"no --weights given and OUTPUT_DIR {cfg.OUTPUT_DIR!r} has no checkpoint")
    for label, path in (compare or {}).items():
        if not os.path.isfile(path):
            raise ConfigError(f"--compare {label}={path}: no such file")

    train_set = build_train_set(cfg)
    # The classifier is sized as in training, so the checkpoint loads whole.
    cfg.MODEL.HEADS.NUM_CLASSES = train_set.num_classes
    model = build_model(cfg)
    load_weights(model, weights)
    dataset, counts = _analysis_set(cfg, split, train_set)
    features, labels = extract_features(model, dataset, cfg.TEST.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS)
    logger.info("leap-analyze: %d %s images of %d classes, %d-d features",
                len(labels), split, len(counts), features.shape[1])

    stats = angle_statistics(features, labels, counts, threshold, seed=seed)
    summary = head_tail_summary(stats, threshold)
    plots = {"angles": plot_angle_distributions(stats, threshold, os.path.join(output_dir, "angles.png"))}
    head = stats.head_mask(threshold)
    classes = pick_tsne_classes(stats.counts, stats.sizes, threshold, max_classes_tsne, seed)
    if classes:
        plots["tsne"] = plot_tsne(features, labels, classes, head, os.path.join(output_dir, "tsne.png"), seed)
    runs = dict(compare or {})
    metrics = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    if os.path.isfile(metrics):
        runs = {os.path.basename(os.path.normpath(cfg.OUTPUT_DIR)) or "this run": metrics, **runs}
    if runs:
        # The curves are a by-product: a run that has logged nothing plottable yet (or a
        # damaged metrics.json) must not cost the analysis.
        try:
            plots["training_curves"] = plot_training_curves(runs, os.path.join(output_dir, "training_curves.png"))
        except ValueError as e:
            logger.warning("leap-analyze: no training curves: %s", e)

    per_class = [
        {"label": c, "pid": str(dataset.pids[c]), "count": int(stats.counts[c]), "images": int(stats.sizes[c]),
         "head": bool(head[c]),
         **{key: _finite(float(stats.per_class[key][c])) for key in STATISTICS}}
        for c in range(len(counts))
    ]
    result = {
        "weights": os.path.abspath(weights),
        "split": split,
        "datasets": list(cfg.DATASETS.NAMES if split == "train" else cfg.DATASETS.TESTS),
        "images": len(labels),
        "classes": len(counts),
        "feature_dim": int(features.shape[1]),
        "unit": "rad",
        "summary": summary,
        "per_class": per_class,
        "plots": {name: os.path.basename(path) for name, path in plots.items()},
    }
    atomic_write(os.path.join(output_dir, "analysis.json"),
                 lambda f: f.write(json.dumps(result, indent=1, allow_nan=False).encode()))
    logger.info("leap-analyze: wrote %s", os.path.join(output_dir, "analysis.json"))
    return result


def _run(value: str) -> tuple[str, str]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=METRICS_JSON, got {value!r}")
    return label, path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leap-analyze", description=__doc__.split("\n\n")[0])
    # Not required=True: a --config-file written after the overrides is reported by reject_flags_after_overrides.
    p.add_argument("--config-file", metavar="FILE", help="the run's config (required)")
    p.add_argument("--weights", help="fastreid checkpoint (default: the last one in OUTPUT_DIR)")
    p.add_argument("--output", metavar="DIR", help="where to write (default: OUTPUT_DIR/analysis)")
    p.add_argument("--tail-threshold", type=int, metavar="T",
                   help="tail classes have K_i <= T (default: MODEL.HEADS.LEAP.TAIL_THRESHOLD)")
    p.add_argument("--split", choices=SPLITS, default="train",
                   help="features of the training set (as the paper, Sec. 1) or of the test set")
    p.add_argument("--max-classes-tsne", type=int, default=10, metavar="N",
                   help="classes in the t-SNE figure, half head, half tail (0: none)")
    p.add_argument("--compare", type=_run, action="append", default=[], metavar="LABEL=METRICS_JSON",
                   help="another run's metrics.json to overlay on the training curves (repeatable)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


class _Stderr(logging.StreamHandler):
    """A console handler writing to whatever ``sys.stderr`` is when a line is logged."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _setup_logging() -> None:
    """Console logging, each line once.

    ``import leap_plugin`` forwards the records of the ``leap_plugin`` loggers to fastreid's
    logger, so that ``leap-train`` writes them into fastreid's log. With a handler on the root
    logger (``logging.basicConfig``, as this command had) each such line was printed twice:
    through fastreid's logger, which propagates to the root, and through ``leap_plugin``'s
    own propagation to the root. As in ``leap-train`` (fastreid's ``setup_logger``), the
    console handler sits on fastreid's logger, which stops propagating, and the root gets
    none. Idempotent: a fastreid logger set up already keeps its handlers."""
    log = logging.getLogger("fastreid")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False




def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``leap-analyze``. Returns 0, or 2 with a message on a usage error."""
    parser = _parser()
    args = parser.parse_args(argv)
    reject_flags_after_overrides(parser, args.opts, "leap-analyze --config-file ... --output ... KEY VALUE ...")
    if not args.config_file:
        parser.error("the following arguments are required: --config-file")
    _setup_logging()
    try:
        cfg = load_config(args.config_file, args.opts)
        output = args.output or os.path.join(cfg.OUTPUT_DIR, "analysis")
        # A training running in the run's folder holds its lock: never write among its files
        # (the default output is inside it), nor next to another analysis.
        run_dir = os.path.realpath(cfg.OUTPUT_DIR)
        inside = os.path.realpath(output) == run_dir or os.path.realpath(output).startswith(run_dir + os.sep)
        lock_folder(cfg.OUTPUT_DIR if inside else output, "analysis")
        result = analyze(cfg, args.weights, output, args.tail_threshold, split=args.split,
                         max_classes_tsne=args.max_classes_tsne, compare=dict(args.compare))
    except (ConfigError, FileNotFoundError, FolderInUse) as e:
        print(f"leap-analyze: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
