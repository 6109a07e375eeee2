"""What an image file is, how it is decoded, and how images come to one square size.

This module is the one place that decides these things for every source (``nsa-gen``),
test set and ``nsa-eval predict``:

- **Image files** are files whose name ends, in any letter case, in one of
  :data:`IMAGE_SUFFIXES`: the formats this OpenCV build decodes (OpenEXR is off in the
  wheels, so ``.exr`` is not one). A mask is found by :func:`find_mask` under the same rule.
- **Decoding** gives what a viewer shows: the EXIF orientation of a JPEG (or PNG, TIFF,
  WebP) is applied, colour order is RGB, an alpha channel is dropped. A missing, empty (0 bytes),
  corrupt or truncated file raises :class:`ImageReadError` naming it.
- **Bit depth.** 8-bit images are taken as they are. Integer images wider than 8 bits are
  scaled so that their *white level* becomes 255: for a source set (:func:`read_images`),
  the largest value any of its wide images holds, so that 12-bit data in 16-bit PNGs
  (0..4095) uses the full 8-bit range instead of 16 grey levels. ``nsa-gen`` records it in
  the store's settings (``white_level``), the trainer copies those into the run's
  config.json, and ``nsa-eval`` / ``predict`` pass it back to :func:`read_image`, so the
  model sees test images scaled exactly as its training images were (values above it clip
  to 255). Without a recorded level a wide image is scaled by its type's full range
  (65535 for 16 bits). Float images (HDR, PFM, float TIFF) are taken as 0..1.
- **Masks** (:func:`read_mask`): a pixel is a defect iff the mask holds a non-zero value
  there in any channel, whatever the bit depth or mode (0/255, 0/1, class ids, 16-bit; a
  palette image's index, not its colour). The one exception is a lossy file (JPEG, lossy
  WebP): compression leaves small non-zero values all over the 8x8 blocks a region's edge
  crosses (a 13x13 px square saved as JPEG has 293 non-zero pixels, not 169), so there a
  pixel is a defect iff it holds at least half the mask's largest value.
- **Size**: synthesis needs every source image at the preset's ``size``; they are resized
  once here: area interpolation when shrinking (no aliasing), bilinear when enlarging.
  Non-square images are stretched to the square.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nsa.errors import UserError
from nsa.progress import progress_bar

#: File name endings taken as images, compared in lower case: every format this OpenCV
#: build decodes (tests/generate/test_images.py decodes one file of each).
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jp2", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".avif", ".gif", ".pbm", ".pgm", ".ppm", ".pnm", ".pfm", ".sr", ".ras", ".hdr", ".pic",
)
#: How a defect image's mask may be named, ``{stem}`` being the image's file stem; any
#: image suffix, any letter case.
MASK_STEMS = ("{stem}_mask", "{stem}")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112
#: Pillow modes whose pixels are taken as they are (others are converted to RGB).
_PLAIN_MODES = ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F")


class ImageReadError(UserError):
    """An image file that is missing, empty, unreadable, corrupt or truncated."""


def is_image_file(path: Path) -> bool:
    """True when ``path``'s suffix, in lower case, is one of :data:`IMAGE_SUFFIXES`."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path | str, *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (``recursive``: below it), sorted by path.

    Raises UserError when the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if is_image_file(p) and p.is_file())
    if not files:
        where = "in or below" if recursive else "in"
        raise UserError(f"{folder}: no images {where} this folder (looked for "
                        f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)}, any letter case)")
    return files


def find_mask(image: Path, folders: Iterable[Path],
              stems: Sequence[str] = MASK_STEMS) -> Path | None:
    """The mask of ``image``: the first file in ``folders`` (in order) named by
    ``stems`` (default :data:`MASK_STEMS`, ``{stem}`` standing for the image's stem)
    with an image suffix, letter case ignored; None when none is.

    Raises UserError when one folder holds two candidates of the same name pattern
    (``a_mask.png`` and ``a_mask.jpg``), since either could be meant.
    """
    for folder in folders:
        if not folder.is_dir():
            continue
        by_name: dict[str, list[Path]] = {}
        for path in folder.iterdir():
            if is_image_file(path) and path.is_file():
                by_name.setdefault(path.stem.lower(), []).append(path)
        for pattern in stems:
            found = sorted(by_name.get(pattern.format(stem=image.stem).lower(), []))
            if len(found) > 1:
                raise UserError(f"{image}: several masks could be its own: "
                                f"{', '.join(p.name for p in found)}")
            if found:
                return found[0]
    return None


def mask_names_tried(image: Path, folders: Iterable[Path],
                     stems: Sequence[str] = MASK_STEMS) -> str:
    """The names :func:`find_mask` looked for, for an error message."""
    names = " or ".join(f"{p.format(stem=image.stem)}.<image suffix>" for p in stems)
    return f"{names} (any letter case) in {', '.join(str(f) for f in folders)}"


def _truncated(data: bytes) -> bool:
    """True for a PNG or JPEG whose end marker is missing (the file was cut short)."""
    if data.startswith(_PNG_SIGNATURE):
        return not data.endswith(_PNG_END)
    if data.startswith(_JPEG_START):
        return _JPEG_END not in data[-64:]
    return False


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc.strerror})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes), not an image")
    if _truncated(data):
        raise ImageReadError(f"{path}: image file is truncated")
    return data


def _orientation(data: bytes) -> int:
    """The file's EXIF Orientation (1..8; 1 when it has none), read by Pillow from the
    header only; a file Pillow does not know has none."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return int(opened.getexif().get(_EXIF_ORIENTATION, 1))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError, TypeError):
        return 1


def _decode_oriented(path: Path, data: bytes) -> np.ndarray:
    """A file with an EXIF orientation, decoded and turned by Pillow (OpenCV turns only
    some formats, and not at all when asked to keep the bit depth)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            shown = ImageOps.exif_transpose(opened)
            if shown.mode == "1":
                shown = shown.convert("L")
            elif shown.mode not in _PLAIN_MODES:
                shown = shown.convert("RGB")
            pixels = np.array(shown)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from None
    if pixels.ndim == 2:
        return pixels[..., None]
    return pixels[..., :1] if shown.mode == "LA" else pixels[..., :3]


def _decode(path: Path, data: bytes) -> np.ndarray:
    if _orientation(data) != 1:
        return _decode_oriented(path, data)
    previous = cv2.setLogLevel(0)  # silence OpenCV's own warning; we raise instead
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    finally:
        cv2.setLogLevel(previous)
    if image is None or image.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unknown format)")
    if image.ndim == 2:
        return image[..., None]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image[..., :1]  # grey + alpha


def decode_image(path: Path | str) -> np.ndarray:
    """``path`` as (H, W, C) in its own dtype (uint8, uint16, int32, float32...), C 1 or 3,
    RGB, as a viewer shows it (EXIF orientation applied, alpha dropped)."""
    path = Path(path)
    return _decode(path, _read_bytes(path))


def is_wide(image: np.ndarray) -> bool:
    """True for integer pixels wider than 8 bits (what a white level scales)."""
    return np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8


def white_level_of(image: np.ndarray) -> int:
    """The largest value of a wide integer image (at least 1)."""
    return max(1, int(image.max()))


def to_uint8(image: np.ndarray, white_level: int | None = None) -> np.ndarray:
    """Pixels of any dtype as uint8: 8-bit as is; wider integers scaled so that
    ``white_level`` (default: the type's maximum) becomes 255, negative and larger values
    clipped; floats taken as 0..1. ValueError for any other dtype."""
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.integer):
        white = white_level if white_level is not None else np.iinfo(image.dtype).max
        scaled = image.astype(np.float64) * (255.0 / max(1, white))
        return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {image.dtype}")


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) uint8 with C in {1, 3} to ``channels`` (grey <-> RGB)."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, 3, axis=2)


def read_image(path: Path | str, channels: int | None = None,
               white_level: int | None = None) -> np.ndarray:
    """Read ``path`` as (H, W, C) uint8 RGB or grey; ``channels`` 1 or 3 converts.

    Images wider than 8 bits are scaled by ``white_level`` (see the module's docstring);
    raises :class:`ImageReadError` naming a file that cannot be read.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, not {channels}")
    path = Path(path)
    image = _as_uint8(path, decode_image(path), white_level)
    return image if channels is None else convert_channels(image, channels)


def _as_uint8(path: Path, image: np.ndarray, white_level: int | None) -> np.ndarray:
    try:
        return to_uint8(image, white_level)
    except ValueError as exc:
        raise ImageReadError(f"{path}: {exc}") from None


def _lossy(data: bytes) -> bool:
    """True for a JPEG or a lossy (VP8, not VP8L) WebP file."""
    return data.startswith(_JPEG_START) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8 ")


def read_mask(path: Path | str) -> np.ndarray:
    """A mask file as a bool (H, W) map: True where any channel is non-zero.

    Any format and bit depth; a palette image (PNG, GIF mode ``P``) by its indices, so a
    class-id mask whose palette draws class 1 black still counts; a lossy file (JPEG,
    lossy WebP) True where a channel holds at least half the mask's maximum. EXIF
    orientation is applied as for images. Raises :class:`ImageReadError` naming an
    unreadable file.
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.mode == "P":
                return np.asarray(ImageOps.exif_transpose(opened)) != 0
    except (UnidentifiedImageError, OSError, ValueError):
        pass  # not a palette image Pillow knows: OpenCV decodes it below
    mask = _decode(path, data)
    if _lossy(data) and mask.any():
        return (mask >= mask.max() / 2).any(axis=2)
    return (mask != 0).any(axis=2)


def depth_mismatch(path: Path | str, white_level: int | None) -> str | None:
    """A warning when ``path`` is an image wider than 8 bits but no white level is known
    (the model was trained on 8-bit images): it is then scaled by its type's full range,
    which may leave 12-bit data near black. None otherwise. Decodes ``path``."""
    if white_level is not None:
        return None
    image = decode_image(path)
    if not is_wide(image):
        return None
    return (f"{path} holds {image.dtype} pixels (largest {int(image.max())}) but the model "
            f"was trained on 8-bit images: scaled by the type's full range "
            f"{np.iinfo(image.dtype).max}, which may not be how its training images looked")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) to (size, size, C): area when shrinking, bilinear when enlarging."""
    height, width, channels = image.shape
    if (height, width) == (size, size):
        return image
    shrinking = size * size < height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, channels)


@dataclass(frozen=True)
class SourceImages:
    """A source set's images, (size, size, C) uint8 each with one C for all, and the
    white level its wide images were scaled by (None when every image is 8-bit/float)."""

    images: list[np.ndarray]
    white_level: int | None


def read_images(files: Sequence[Path], size: int, channels: int | None = None,
                progress: bool = False) -> SourceImages:
    """Read and resize every file to (size, size, C) uint8, wide images scaled by the
    largest value any of them holds (two passes over those files, so that each is scaled
    before it is resized, exactly as :func:`read_image` does at test time).

    With ``channels=None`` all images get 3 channels if any file is in colour, else 1.
    Raises :class:`ImageReadError` naming the first unreadable file (before any work
    that writes output is done).
    """
    if size < 1:
        raise UserError(f"--size must be a positive number of pixels, not {size}")
    images: list[np.ndarray | None] = []
    wide: list[int] = []
    white = 0
    bar = progress_bar("images") if progress else nullcontext()
    with bar:
        task = bar.add_task("reading images", total=len(files)) if progress else None
        for index, path in enumerate(files):
            image = decode_image(path)
            if is_wide(image):
                wide.append(index)
                white = max(white, white_level_of(image))
                images.append(None)
            else:
                images.append(resize_square(_as_uint8(path, image, None), size))
            if progress:
                bar.advance(task)
        if progress and wide:
            bar.update(task, total=len(files) + len(wide), description="scaling wide images")
        for index in wide:
            images[index] = resize_square(read_image(files[index], white_level=white), size)
            if progress:
                bar.advance(task)
    if channels is None:
        channels = 3 if any(image.shape[2] == 3 for image in images) else 1
    return SourceImages([convert_channels(image, channels) for image in images],
                        white if wide else None)


def with_white_level(settings: dict[str, Any], white_level: int | None) -> dict[str, Any]:
    """``settings`` with ``white_level`` recorded (a new dict), or themselves when None, so
    that stores of 8-bit images keep the settings they always had."""
    return settings if white_level is None else {**settings, "white_level": white_level}


def load_images(files: Sequence[Path], size: int, channels: int | None = None,
                progress: bool = False) -> list[np.ndarray]:
    """The images of :func:`read_images` (without their white level)."""
    return read_images(files, size, channels, progress).images
