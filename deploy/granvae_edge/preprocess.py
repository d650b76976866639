"""Turn an image file, bytes or array into exactly the model's input spec.

Everything a camera or an operator can send wrong is turned into an ``InputError`` naming the
problem, so one bad frame costs one error line (or one HTTP 400), never the process. Decoding
happens in two steps: the header first (size known without decompressing, so a decompression
bomb is refused before it allocates), then the pixels (truncated files fail here).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

# Never decode more than this, whatever the model (64 M pixels is ~64 MB of grey pixels).
DEFAULT_MAX_PIXELS = 64_000_000
# The per-bundle default is this many times the model's input area, but at least
# MIN_DEFAULT_PIXELS, so a 4096x4096 camera frame is accepted even for a 32x32 model.
PIXELS_PER_MODEL_PIXEL = 64
MIN_DEFAULT_PIXELS = 4096 * 4096

# A truncated image must fail, never be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_GRAY_MODES = ("1", "L", "P")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = {"LA": "L", "La": "L", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}


class InputError(ValueError):
    """One input cannot be turned into a model input; the message says why."""


class TooLargeError(InputError):
    """The image would decode to more pixels than allowed (HTTP 413, not 400)."""


def default_max_pixels(spec: dict[str, Any]) -> int:
    """Decoded-pixel cap for a model input spec (see PIXELS_PER_MODEL_PIXEL)."""
    area = int(spec["height"]) * int(spec["width"])
    return min(DEFAULT_MAX_PIXELS, max(MIN_DEFAULT_PIXELS, PIXELS_PER_MODEL_PIXEL * area))


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only; Pillow's own messages name a BytesIO object, ours name the cause."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise TooLargeError(f"image too large: more than {max_pixels} pixels") from None
    except Image.UnidentifiedImageError:
        raise InputError("not a decodable image: unknown or unsupported image format") from None
    except Exception as exc:  # Pillow raises SyntaxError, struct.error, ... on bad headers
        raise InputError(f"not a decodable image: bad header ({type(exc).__name__})") from None


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes with a pixel-count guard; raises InputError on anything bad."""
    if not data:
        raise InputError("empty input: no image bytes")
    img = _open(data, max_pixels)
    width, height = img.size
    if width * height > max_pixels:
        raise TooLargeError(
            f"image too large: {width}x{height} = {width * height} pixels exceeds {max_pixels}"
        )
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"image has {frames} pages/frames; send one image per input (which page is the part "
            "is not guessed)"
        )
    try:
        img.load()
    except Image.DecompressionBombError:
        raise TooLargeError(f"image too large: more than {max_pixels} pixels") from None
    except Exception as exc:  # OSError "image file is truncated", zlib errors, ...
        raise InputError(f"corrupt or truncated image: {_clean(exc)}") from None
    return img


def _clean(exc: Exception) -> str:
    """An exception message without object reprs such as <_io.BytesIO object at 0x...>."""
    text = str(exc)
    return text if "object at 0x" not in text else type(exc).__name__


def _drop_opaque_alpha(img: Image.Image) -> Image.Image:
    """Alpha carries no inspection signal only if it is fully opaque; otherwise refuse."""
    base = _ALPHA_MODES[img.mode]
    alpha = np.asarray(img.getchannel("A"))
    if alpha.min() < 255:
        raise InputError(
            f"image mode {img.mode} has transparent pixels; cannot convert to channels sensibly"
        )
    return img.convert(base)


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit mono (common on line cameras) is rescaled, not clipped as Pillow's convert does."""
    arr = np.asarray(img).astype(np.int64)
    return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _wide_to_l(img: Image.Image) -> Image.Image:
    """32-bit integer mono ("I"): rescaled as 16-bit if its values fit, refused otherwise.

    Pillow opens 16-bit PNGs as "I" too; a 32-bit TIFF whose values exceed 65535 has no scale we
    could know, and clipping it (what convert("L") does) would silently blank the image.
    """
    arr = np.asarray(img)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise InputError(
            f"32-bit image with values {lo}..{hi} outside 0..65535: its scale is unknown; "
            "convert it to 8 or 16 bit"
        )
    return _sixteen_bit_to_l(img)


def to_color_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """Convert to "L" or "RGB" where the conversion keeps the meaning of the pixels."""
    if img.mode in _ALPHA_MODES:
        img = _drop_opaque_alpha(img)
    elif img.mode in _SIXTEEN_BIT:
        img = _sixteen_bit_to_l(img)
    elif img.mode == "I":
        img = _wide_to_l(img)
    elif img.mode == "P":
        img = img.convert("RGB")
    if img.mode not in ("1", "L", "RGB"):
        raise InputError(
            f"image mode {img.mode} ({len(img.getbands())} channels) cannot be converted "
            f"sensibly to {color_mode}"
        )
    return img if img.mode == color_mode else img.convert(color_mode)


def fit_size(img: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """Resize with the manifest's method; with "none" the size must already match."""
    size = (int(spec["width"]), int(spec["height"]))
    if img.size == size:
        return img
    if spec["resize"] == "none":
        raise InputError(
            f"image is {img.size[0]}x{img.size[1]} but the model takes {size[0]}x{size[1]} "
            "and the bundle does not resize"
        )
    return img.resize(size, Image.Resampling.BILINEAR)


def to_model_array(img: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """A decoded image -> (H, W, C) array in the manifest's dtype (pixel values 0..255)."""
    img = fit_size(to_color_mode(img, spec["color_mode"]), spec)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if spec["dtype"] == "float32":
        # Scaling is baked into the graph; the runtime only changes the container type.
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def from_bytes(data: bytes, spec: dict[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS):
    """Image bytes -> model array (H, W, C)."""
    return to_model_array(decode(data, max_pixels), spec)


def from_path(path: str | Path, spec: dict[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS):
    """Image file -> model array; an unreadable file is an InputError like a corrupt one."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"cannot read {path}: dangling symbolic link")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return from_bytes(data, spec, max_pixels)


def from_array(array: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """A uint8 array (H, W) or (H, W, C) -> model array, via the same conversions as files."""
    arr = np.asarray(array)
    if arr.size == 0:
        raise InputError("empty input: array has no pixels")
    if arr.dtype != np.uint8:
        raise InputError(f"array dtype is {arr.dtype}; uint8 pixels are expected")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"array shape {arr.shape} is not (H, W) or (H, W, 1|3|4)")
    return to_model_array(Image.fromarray(arr), spec)


def blank(spec: dict[str, Any]) -> np.ndarray:
    """An all-black input of the right shape: the smoke test's image."""
    dtype = np.float32 if spec["dtype"] == "float32" else np.uint8
    return np.zeros((spec["height"], spec["width"], spec["channels"]), dtype=dtype)


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand folders into every entry that is not a folder (sorted, so runs are reproducible).

    Nothing is filtered, by extension or otherwise: a .gif, an extensionless camera dump, a
    dangling link or a stray text file each get a result or an error line, never silence.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if not p.is_dir())
        else:
            out.append(path)
    return out
