"""Hardening of fastreid 1.4.0 that fixes no version breakage: places where a bad input or
an interruption makes it hang, lose work or carry on with a wrong result without a word."""
from __future__ import annotations

import functools
import glob
import logging
import os
from typing import Any

import torch

from ...io import atomic_write
from ...data.images import WIDE_MODES, to_rgb
from ._registry import patch

__all__ = [
    "CheckpointReadError", "ImageReadError", "patch_atomic_checkpoint", "patch_resume_fallback", "patch_image_reading",
    "patch_loader_errors", "patch_short_run_printer", "patch_pretrained_download", "remove_stale_temporaries",
]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


class CheckpointReadError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, not a torch file, missing)."""


class ImageReadError(RuntimeError):
    """A data set image that cannot be decoded in full (missing, empty, truncated, corrupt)."""


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporary files an interrupted :func:`~leap_plugin.io.atomic_write` left
    in ``folder``; call only while no other process writes there (the run's folder lock)."""
    stale = glob.glob(os.path.join(glob.escape(folder), ".tmp-*"))
    for path in stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return stale


@patch("atomic_checkpoint")
def patch_atomic_checkpoint() -> None:
    """fastreid writes checkpoints in place: a crash mid-write corrupts the last good
    one. Write to a temporary file in the same folder and rename it over the target.
    Loading names the file (one line) when it is not a readable checkpoint."""
    from fastreid.utils.checkpoint import Checkpointer

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode()))

    def load_file(self, f: str):
        try:
            checkpoint = torch.load(f, map_location=torch.device("cpu"), weights_only=False)
        except Exception as e:  # noqa: BLE001 - any failure means the file is not a checkpoint
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointReadError(f"checkpoint {f!r} could not be read (damaged or not a torch "
                                      f"checkpoint): {first}") from e
        if not isinstance(checkpoint, dict) or "model" not in checkpoint:
            raise CheckpointReadError(f"checkpoint {f!r} is not a fastreid checkpoint (no 'model' entry)")
        return checkpoint

    Checkpointer.save = save
    Checkpointer.tag_last_checkpoint = tag_last_checkpoint
    Checkpointer._load_file = load_file


@patch("resume_fallback")
def patch_resume_fallback() -> None:
    """``--resume`` loads the file named by ``last_checkpoint`` and dies when it is damaged
    (a crash mid-write before atomic saves, a full disk): fall back to the newest intact
    checkpoint of the folder, saying so; fail with every file named when none is intact."""
    from fastreid.utils.checkpoint import Checkpointer

    original = Checkpointer.resume_or_load

    @functools.wraps(original)
    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self.has_checkpoint()):
            return original(self, path, resume=resume)
        last = self.get_checkpoint_file()
        others = sorted((f for f in self.get_all_checkpoint_files() if os.path.abspath(f) != os.path.abspath(last)),
                        key=os.path.getmtime, reverse=True)
        errors = []
        for candidate in [last] + others:
            if not os.path.isfile(candidate):
                errors.append(f"checkpoint {candidate!r} is missing")
                continue
            try:
                checkpoint = self.load(candidate)
            except CheckpointReadError as e:
                errors.append(str(e))
                continue
            if errors:
                logger.warning("resume: %s; resumed from the newest intact checkpoint %s instead",
                               errors[0], candidate)
            return checkpoint
        raise CheckpointReadError("resume: no intact checkpoint in " + repr(self.save_dir) + ": " + "; ".join(errors))

    Checkpointer.resume_or_load = resume_or_load


@patch("image_reading")
def patch_image_reading() -> None:
    """fastreid's ``read_image`` hands RGBA / palette images on as 4- or 1-channel arrays
    (the transforms then fail far from the cause), fails on 16-bit PNGs with an anonymous
    TypeError mid-training, and a corrupt, truncated or empty file surfaces as a bare PIL
    error without its name. Every image becomes 8-bit RGB (16-bit ones scaled); a file that
    cannot be decoded in full raises an error naming it. ``check_before_run`` raises a
    bare RuntimeError for a missing folder: FileNotFoundError naming the path instead."""
    from PIL import Image, ImageFile, ImageOps

    import fastreid.data.common as common
    import fastreid.data.data_utils as data_utils
    from fastreid.data.datasets.bases import Dataset

    original = data_utils.read_image

    @functools.wraps(original)
    def read_image(file_name, format=None):
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            # Another library's global switch would decode a truncated file as grey
            # padding and train on it: refuse, whatever the switch says.
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with Image.open(file_name) as probe:
                wide = probe.mode in WIDE_MODES
            if wide and format is None:
                # fastreid's read_image fails on these with an anonymous TypeError
                with Image.open(file_name) as image:
                    return to_rgb(ImageOps.exif_transpose(image))
            image = original(file_name, format)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageReadError(f"image {file_name!r} is missing, empty, truncated or not an image: {e}") from e
        return image.convert("RGB") if format is None and image.mode != "RGB" else image

    def check_before_run(self, required_files):
        for path in [required_files] if isinstance(required_files, str) else required_files:
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{type(self).__name__}: data folder {path!r} not found (fastreid looks under "
                    f"$FASTREID_DATASETS, default './datasets')")

    data_utils.read_image = read_image
    common.read_image = read_image
    Dataset.check_before_run = check_before_run


class _Failure:
    """An exception raised while producing a batch, carried to the consuming thread."""

    def __init__(self, error: BaseException):
        self.error = error


@patch("loader_errors")
def patch_loader_errors() -> None:
    """fastreid prefetches batches in a ``BackgroundGenerator`` thread; an exception there
    (a corrupt image, a dead loader worker) ends the thread with a traceback while the
    training loop waits on its queue forever. Carry the exception to the training loop,
    which raises it. The thread selects the CUDA device only where there is one."""
    from fastreid.data.data_utils import BackgroundGenerator

    def run(self):
        try:
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            for item in self.generator:
                if self.exit_event.is_set():
                    break
                self.queue.put(item)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consuming thread
            self.queue.put(_Failure(e))
            return
        self.queue.put(None)

    def next(self):
        item = self.queue.get()
        if item is None:
            raise StopIteration
        if isinstance(item, _Failure):
            self.queue.put(item)  # every later call fails the same way, none waits
            raise item.error
        return item

    BackgroundGenerator.run = run
    BackgroundGenerator.next = next
    BackgroundGenerator.__next__ = next


@patch("short_run_printer")
def patch_short_run_printer() -> None:
    """``CommonMetricPrinter`` estimates the ETA from two writes when the iteration timer
    has no history yet (its first 3 iterations are warm-up) and divides by zero when both
    writes fall on the same iteration: a run of fewer than 4 iterations per epoch (a small
    folder data set) crashes at the end of training. Such a duplicate write is skipped."""
    from fastreid.utils.events import CommonMetricPrinter

    original = CommonMetricPrinter.write

    @functools.wraps(original)
    def write(self):
        try:
            original(self)
        except ZeroDivisionError:
            pass

    CommonMetricPrinter.write = write


@patch("pretrained_download")
def patch_pretrained_download() -> None:
    """``MODEL.BACKBONE.PRETRAIN True`` with an empty ``PRETRAIN_PATH`` makes fastreid's
    ResNet download ImageNet weights (with gdown); without internet that fails deep in a
    network library. Fail with the keys to change instead."""
    import fastreid.modeling.backbones.resnet as resnet

    original = resnet.init_pretrained_weights

    @functools.wraps(original)
    def init_pretrained_weights(key):
        try:
            return original(key)
        except Exception as e:  # noqa: BLE001 - any download failure
            raise RuntimeError(
                f"MODEL.BACKBONE.PRETRAIN True with an empty MODEL.BACKBONE.PRETRAIN_PATH downloads the "
                f"ImageNet weights of ResNet {key} from {resnet.model_urls.get(key)}, which failed "
                f"({type(e).__name__}: {e}); set MODEL.BACKBONE.PRETRAIN_PATH to a local weights file, "
                "or MODEL.BACKBONE.PRETRAIN False") from e

    resnet.init_pretrained_weights = init_pretrained_weights
