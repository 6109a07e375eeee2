"""Decode image files into (H, W, C) uint8 arrays and bring them to one square size.

Synthesis needs all source images at one shape (the preset's ``size``), so they are
resized once here, before generation: area interpolation when shrinking (no aliasing),
bilinear when enlarging. Non-square images are stretched to the square; MVTec, ChestX-ray14
and ELPV images are square already.

Colour order is RGB. A file that cannot be decoded, or that ends early (a truncated
download), raises :class:`ImageReadError` naming it: OpenCV alone would print a warning
and return nothing, or for some formats part of an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from nsa.errors import UserError
from nsa.progress import progress_bar

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


class ImageReadError(UserError):
    """An image file that is missing, unreadable, corrupt or truncated."""


def _truncated(data: bytes) -> bool:
    """True for a PNG or JPEG whose end marker is missing (the file was cut short)."""
    if data.startswith(_PNG_SIGNATURE):
        return not data.endswith(_PNG_END)
    if data.startswith(_JPEG_START):
        return _JPEG_END not in data[-64:]
    return False


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {image.dtype}")


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) uint8 with C in {1, 3} to ``channels`` (grey <-> RGB)."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, 3, axis=2)


def read_image(path: Path | str, channels: int | None = None) -> np.ndarray:
    """Read ``path`` as (H, W, C) uint8 RGB or grey; ``channels`` 1 or 3 converts.

    16-bit images keep their top 8 bits; an alpha channel is dropped.
    """
    path = Path(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, not {channels}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc.strerror})") from None
    if _truncated(data):
        raise ImageReadError(f"{path}: image file is truncated")
    previous = cv2.setLogLevel(0)  # silence OpenCV's own warning; we raise instead
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.setLogLevel(previous)
    if image is None or image.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unknown format)")
    try:
        image = _to_uint8(image)
    except ValueError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    if image.ndim == 2:
        image = image[..., None]
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 2:  # grey + alpha
        image = image[..., :1]
    return image if channels is None else convert_channels(image, channels)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) to (size, size, C): area when shrinking, bilinear when enlarging."""
    height, width, channels = image.shape
    if (height, width) == (size, size):
        return image
    shrinking = size * size < height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, channels)


def load_images(files: Sequence[Path], size: int, channels: int | None = None,
                progress: bool = False) -> list[np.ndarray]:
    """Read and resize every file to (size, size, C) uint8.

    With ``channels=None`` all images get 3 channels if any file is in colour, else 1.
    """
    if size < 1:
        raise UserError(f"--size must be a positive number of pixels, not {size}")
    images = []
    bar = progress_bar("images") if progress else nullcontext()
    with bar:
        task = bar.add_task("reading images", total=len(files)) if progress else None
        for path in files:
            images.append(resize_square(read_image(path, channels), size))
            if progress:
                bar.advance(task)
    if channels is None:
        channels = 3 if any(image.shape[2] == 3 for image in images) else 1
    return [convert_channels(image, channels) for image in images]
