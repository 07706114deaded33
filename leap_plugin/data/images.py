"""Images of any PNG / JPEG flavour as 8-bit RGB, for both adapters."""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["WIDE_MODES", "to_rgb"]

#: PIL modes with more than 8 bits per pixel: 16-bit greyscale PNGs open as ``I;16*``,
#: 32-bit integer and float images as ``I`` and ``F``.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. PIL's own ``convert("RGB")`` clips a 16-bit image at 255
    (almost all white); a wide image is scaled to 8 bits instead: 16-bit and integer images
    by 1/257 (65535 -> 255), float images taken as 0-255 and clipped."""
    if image.mode not in WIDE_MODES:
        return image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode != "F" and (image.mode.startswith("I;16") or pixels.max() > 255):
        pixels = pixels / 257.0
    grey = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return grey.convert("RGB")
