"""Decoding image files and the colour-mode policy, shared by validation and loading.

Mode policy (decided once here, so validation and loading can never disagree):

    converted  "L", "RGB", "1" (bilevel), "P" (palette without transparency).
               To 1 channel: Pillow's ITU-R 601-2 luma. To 3 channels: gray is replicated.
               These conversions are lossless or standard, so nothing is guessed.
    rejected   "RGBA", "LA", "PA", "P" with transparency: what lies under transparent pixels
               is undefined, and compositing onto some background would invent pixels.
               "CMYK", "YCbCr", "LAB", "HSV": faithful conversion needs a colour profile.
               "I;16*", "I", "F": 16/32-bit or float pixels have no agreed window to 8 bits;
               silently dividing by 256 can wipe out a subtle defect.

Truncated files must fail: Pillow's global ImageFile.LOAD_TRUNCATED_IMAGES must stay False
(granvae never sets it; validate_folder refuses to run if something else did).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TARGET_MODES = {1: "L", 3: "RGB"}
ACCEPTED_MODES = ("L", "RGB", "1", "P")
MASK_MODES = ("L", "1", "P")

_ALPHA = "has an alpha channel; pixels under transparency are undefined (flatten it first)"
_PROFILE = "needs a colour profile to convert faithfully (export as RGB or L)"
_DEEP = "has more than 8 bits per pixel; no agreed window to 8 bits (export 8-bit L or RGB)"
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
    """Image files by suffix; hidden files (.DS_Store, editor swap files) never count."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in (IMAGE_SUFFIXES)
    )


def decode(path: Path) -> Image.Image:
    """Fully decode a file; raises on unreadable or truncated data (no lazy surprises later)."""
    with Image.open(path) as image:
        image.load()
        return image


def mode_problem(image: Image.Image, accepted: tuple[str, ...] = ACCEPTED_MODES) -> str | None:
    """Why this image's mode is refused, or None if it converts cleanly."""
    if image.mode == "P" and "transparency" in image.info:
        return f"mode P with transparency {_ALPHA}"
    if image.mode in accepted:
        return None
    reason = REJECTED_MODES.get(image.mode, "is not a supported mode")
    return f"mode {image.mode} {reason}; accepted modes: {', '.join(accepted)}"


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


def to_array(image: Image.Image, channels: int, size: Size) -> np.ndarray:
    """uint8 (C, H, W): convert by the mode policy, then bilinear resize if the size differs."""
    height, width = as_hw(size)
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
