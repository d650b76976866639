"""Decoding image files and the colour-mode policy, shared by validation and loading.

Mode policy (decided once here, so validation and loading can never disagree):

    converted  "L", "RGB", "1" (bilevel), "P" (palette).
               To 1 channel: Pillow's ITU-R 601-2 luma. To 3 channels: gray is replicated.
               These conversions are lossless or standard, so nothing is guessed.
               "RGBA", "LA", "PA", "P" with a transparency entry: only when every pixel is
               fully opaque (the alpha is then dropped) - the edge's rule too.
               "I;16*", "I" (16-bit mono): only when the import declares the camera's bit
               depth (``--bit-depth 12``): the window 0..2^bits-1 maps to 0..255 by the
               lookup table the edge uses (granvae.data.frames.window_lut).
    rejected   alpha with a transparent pixel: what lies under it is undefined.
               "CMYK", "YCbCr", "LAB", "HSV": faithful conversion needs a colour profile.
               16-bit without a declared bit depth, "F": no agreed window to 8 bits;
               silently dividing by 256 can wipe out a subtle defect. 8-bit images in a
               16-bit import: they would be read on another scale.

Files: only regular files are opened (a FIFO named x.png would block the import forever); a
dangling link, a link loop, a FIFO or a device with an image suffix is a problem line, as on the
edge (granvae_edge.preprocess.read_regular_file). An image whose header says it has more than
``max_pixels`` pixels is refused before its pixels are decoded.

Truncated files must fail: Pillow's global ImageFile.LOAD_TRUNCATED_IMAGES must stay False
(granvae never sets it; validate_folder refuses to run if something else did).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from granvae.data.frames import bit_window, window_lut

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TARGET_MODES = {1: "L", 3: "RGB"}
ACCEPTED_MODES = ("L", "RGB", "1", "P")
MASK_MODES = ("L", "1", "P")
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA_BASE = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGB"}
MAX_PIXELS = 64_000_000  # the edge's ceiling too (granvae_edge.preprocess.DEFAULT_MAX_PIXELS)
LUT_BLOCK = 1 << 20

_ALPHA = "has an alpha channel; pixels under transparency are undefined (flatten it first)"
_PROFILE = "needs a colour profile to convert faithfully (export as RGB or L)"
_DEEP = ("has more than 8 bits per pixel; no agreed window to 8 bits (declare the camera's "
         "--bit-depth, e.g. 12, or export 8-bit L or RGB)")
REJECTED_MODES = {
    "RGBA": _ALPHA,
    "LA": _ALPHA,
    "PA": _ALPHA,
    "RGBa": _ALPHA,
    "La": _ALPHA,
    "CMYK": _PROFILE,
    "YCbCr": _PROFILE,
    "LAB": _PROFILE,
    "HSV": _PROFILE,
    "I": _DEEP,
    "I;16": _DEEP,
    "I;16B": _DEEP,
    "I;16L": _DEEP,
    "I;16N": _DEEP,
    "F": _DEEP,
}


def is_image_file(path: Path) -> bool:
    """Image files by suffix, whatever kind of file; hidden files (.DS_Store, editor swap
    files) never count. Non-regular ones are listed so that validation names them."""
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (path.is_symlink() or not path.is_dir())
    )


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` must not be opened (not a regular file), or None; never opens it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "dangling symbolic link" if path.is_symlink() else "no such file"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == 40 else (exc.strerror or str(exc))
    if stat.S_ISREG(info.st_mode):
        return None
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(info.st_mode):
            return f"not a regular file ({name})"
    return "not a regular file"


class ImageTooLarge(ValueError):
    """The header announces more pixels than allowed; nothing was decoded."""


def decode(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode a regular file; raises on unreadable, truncated or oversized data.

    The pixel count is checked from the header before decoding, so a 13000x13000 PNG of a few
    hundred KB costs a header read, not gigabytes.
    """
    problem = regular_file_problem(Path(path))
    if problem:
        raise OSError(problem)
    with Image.open(path) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} = {width * height} pixels exceeds the cap of {max_pixels} "
                "(--max-pixels)"
            )
        image.load()
        return image


def _has_transparency(image: Image.Image) -> bool:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ALPHA_BASE:
        return False
    return int(np.asarray(image.getchannel("A")).min()) < 255


def mode_problem(
    image: Image.Image, accepted: tuple[str, ...] = ACCEPTED_MODES, bit_depth: int = 8
) -> str | None:
    """Why this image's mode is refused, or None if it converts cleanly."""
    if _has_transparency(image):
        return f"mode {image.mode} has transparent pixels; pixels under transparency are undefined"
    if image.mode in DEEP_MODES and bit_depth > 8:
        lo, hi = bit_window(bit_depth)
        arr = np.asarray(image)
        low, high = int(arr.min()), int(arr.max())
        if low < lo or high > hi:
            return (f"16-bit values {low}..{high} fall outside the declared {bit_depth}-bit "
                    f"window {lo}..{hi}")  # fmt: skip
        return None
    if bit_depth > 8:
        return (f"mode {image.mode} is not 16-bit mono; the import declared --bit-depth "
                f"{bit_depth} (16-bit grey PNG or TIFF expected)")  # fmt: skip
    if image.mode in accepted or image.mode in ALPHA_BASE and accepted == ACCEPTED_MODES:
        return None
    reason = REJECTED_MODES.get(image.mode, "is not a supported mode")
    return f"mode {image.mode} {reason}; accepted modes: {', '.join(accepted)}"


def deep_to_l(image: Image.Image, bit_depth: int) -> Image.Image:
    """16-bit mono -> 8-bit grey through the declared window, in blocks (no int64 frame)."""
    lut = window_lut(*bit_window(bit_depth))
    flat = np.asarray(image).reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint8)
    for start in range(0, flat.size, LUT_BLOCK):
        out[start : start + LUT_BLOCK] = lut[flat[start : start + LUT_BLOCK]]
    return Image.fromarray(out.reshape(image.size[1], image.size[0]), mode="L")


def pixel_digest(image: Image.Image) -> str:
    """sha256 of the decoded pixels (with mode and size), blind to file format and metadata."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


Size = int | tuple[int, int]  # a square side, or (height, width)


def as_hw(size: Size) -> tuple[int, int]:
    """(height, width) of a working resolution given as a side or as (H, W)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = (int(v) for v in size)
    return height, width


def to_array(image: Image.Image, channels: int, size: Size, bit_depth: int = 8) -> np.ndarray:
    """uint8 (C, H, W): convert by the mode policy, then bilinear resize if the size differs."""
    height, width = as_hw(size)
    if image.mode in DEEP_MODES:
        image = deep_to_l(image, bit_depth)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_BASE:  # validated fully opaque
        image = image.convert(ALPHA_BASE[image.mode])
    if image.mode == "P":
        image = image.convert("RGB")
    image = image.convert(TARGET_MODES[channels])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def mask_to_array(image: Image.Image, size: Size) -> np.ndarray:
    """uint8 (H, W) of 0/1: nearest resize so no pixel is half defective."""
    height, width = as_hw(size)
    image = image.convert("L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    return (np.asarray(image) > 0).astype(np.uint8)
