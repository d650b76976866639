"""Turn an image file, bytes or array into exactly the model's input spec.

Everything a camera or an operator can send wrong is turned into an ``InputError`` naming the
problem, so one bad frame costs one error line (or one HTTP 400), never the process. Decoding
happens in two steps: the header first (size known without decompressing, so a decompression
bomb is refused before it allocates, and a frame that breaks the bundle's frame contract is
refused before it costs more than its header), then the pixels (truncated files fail here).

Memory, per decoded pixel (the bound ``inflight x max_pixels x DECODE_BYTES_PER_PIXEL`` that
docs/reliability.md states and tests/reliability/test_frames.py measures): Pillow's decoded
frame (at most 4 bytes: "I" or RGB), one numpy view or copy of it (at most 4), the uint8 grey
frame (1) and its Pillow image (1). 16-bit frames go through a 65536-entry lookup table in
row blocks of LUT_BLOCK pixels, so no int64 copy of a frame is ever made.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile

# Never decode more than this, whatever the model (64 M pixels is ~64 MB of grey pixels).
DEFAULT_MAX_PIXELS = 64_000_000
# The per-bundle default is this many times the model's input area, but at least
# MIN_DEFAULT_PIXELS, so a 4096x4096 camera frame is accepted even for a 32x32 model.
PIXELS_PER_MODEL_PIXEL = 64
MIN_DEFAULT_PIXELS = 4096 * 4096

# Bytes a decoded pixel may cost at its peak (see the module docstring); the server's stated
# memory bound is inflight x max_pixels x this.
DECODE_BYTES_PER_PIXEL = 12
LUT_BLOCK = 1 << 20  # pixels mapped per lookup-table step (its int64 index copy: 8 MB)
MAX_SHRINK = 16  # bilinear shrink factor beyond which a box reduction runs first

if TYPE_CHECKING:
    from .contract import FrameContract

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
        hint = ""
        if data[:2] == b"--" or b"Content-Disposition" in data[:512]:
            hint = " (this looks like a multipart form sent without its Content-Type header)"
        raise InputError(
            f"not a decodable image: unknown or unsupported image format{hint}"
        ) from None
    except Exception as exc:  # Pillow raises SyntaxError, struct.error, ... on bad headers
        raise InputError(f"not a decodable image: bad header ({type(exc).__name__})") from None


def decode(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, contract: FrameContract | None = None
) -> Image.Image:
    """Decode image bytes with a pixel-count guard and, when the bundle has one, the frame
    contract's header checks; raises InputError (InvalidFrame) on anything bad."""
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
    if contract is not None:
        contract.check_header(width, height, img.mode)
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


def window_lut(low: int, high: int) -> np.ndarray:
    """uint8 lookup table for 16-bit values: low..high -> 0..255 (rounded), outside clipped."""
    values = np.arange(65536, dtype=np.int64)
    scaled = ((np.clip(values, low, high) - low) * 255 + (high - low) // 2) // (high - low)
    return scaled.astype(np.uint8)


_FULL_RANGE = window_lut(0, 65535)


def _deep_to_l(img: Image.Image, contract: FrameContract | None) -> Image.Image:
    """16-bit (and 32-bit "I" holding 16-bit values) mono -> 8-bit through the grey window.

    With a frame contract the window is the trained one (e.g. 12-bit: 0..4095) and a value
    above it is an invalid frame (another camera setting); without one, 0..65535 -> 0..255 as
    before. 32-bit values outside 0..65535 have no scale we could know: refused, never clipped.
    """
    arr = np.asarray(img)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise InputError(
            f"32-bit image with values {lo}..{hi} outside 0..65535: its scale is unknown; "
            "convert it to 8 or 16 bit"
        )
    lut = _FULL_RANGE
    if contract is not None:
        from .contract import InvalidFrame

        w_lo, w_hi = contract.window
        if hi > w_hi:
            raise InvalidFrame(
                "window",
                f"frame has values up to {hi}, above the trained {contract.bit_depth}-bit "
                f"window {w_lo}..{w_hi} (another camera bit depth?)",
            )
        lut = window_lut(w_lo, w_hi)
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint8)
    for start in range(0, flat.size, LUT_BLOCK):  # bounded index temporaries
        out[start : start + LUT_BLOCK] = lut[flat[start : start + LUT_BLOCK]]
    del arr, flat
    return Image.fromarray(out.reshape(img.size[1], img.size[0]), mode="L")


def to_color_mode(
    img: Image.Image, color_mode: str, contract: FrameContract | None = None
) -> Image.Image:
    """Convert to "L" or "RGB" where the conversion keeps the meaning of the pixels."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # a transparent palette entry: judged like any alpha
    if img.mode in _ALPHA_MODES:
        img = _drop_opaque_alpha(img)
    elif img.mode in _SIXTEEN_BIT or img.mode == "I":
        img = _deep_to_l(img, contract)
    elif img.mode == "P":
        img = img.convert("RGB")
    if img.mode not in ("1", "L", "RGB"):
        raise InputError(
            f"image mode {img.mode} ({len(img.getbands())} channels) cannot be converted "
            f"sensibly to {color_mode}"
        )
    return img if img.mode == color_mode else img.convert(color_mode)


def fit_size(
    img: Image.Image, spec: dict[str, Any], contract: FrameContract | None = None
) -> Image.Image:
    """Resize with the manifest's method; with "none" the size must already match.

    With a frame contract only a source size the training data was resized from is resized
    (the header check already refused every other size)."""
    size = (int(spec["width"]), int(spec["height"]))
    if img.size == size:
        return img
    if contract is not None:
        contract.check_header(img.size[0], img.size[1], "L")  # raises for any other size
        # exactly the import's resize (granvae.data.images.to_array), whatever the factor
        return img.resize(size, Image.Resampling.BILINEAR)
    if spec["resize"] == "none":
        raise InputError(
            f"image is {img.size[0]}x{img.size[1]} but the model takes {size[0]}x{size[1]} "
            "and the bundle does not resize"
        )
    return _bilinear(img, size)


def _bilinear(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Pillow's bilinear resize, with a box pre-reduction for extreme shrink factors.

    Pillow's resize keeps a table of float64 filter weights whose length grows with the input
    width (or height) times the shrink factor: a 8,000,000 x 1 strip shrunk to 32 px costs
    ~16 bytes per pixel in that table alone. Beyond MAX_SHRINK an integer box reduction first
    brings the factor down (memory: its output), then the bilinear step runs as usual; frames
    within MAX_SHRINK of the working size are resized exactly as before. Only bundles without
    a frame contract get here (with one, a strip is refused from its header).
    """
    fx, fy = img.size[0] // (size[0] * MAX_SHRINK), img.size[1] // (size[1] * MAX_SHRINK)
    if fx > 1 or fy > 1:
        img = img.reduce((max(1, fx), max(1, fy)))
    return img.resize(size, Image.Resampling.BILINEAR)


def to_model_array(
    img: Image.Image, spec: dict[str, Any], contract: FrameContract | None = None
) -> np.ndarray:
    """A decoded image -> (H, W, C) array in the manifest's dtype (pixel values 0..255);
    with a frame contract the header and frame-sanity checks run too (InvalidFrame)."""
    if contract is not None:
        contract.check_header(img.size[0], img.size[1], img.mode)
    img = fit_size(to_color_mode(img, spec["color_mode"], contract), spec, contract)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if contract is not None:
        contract.check_stats(arr)
    if spec["dtype"] == "float32":
        # Scaling is baked into the graph; the runtime only changes the container type.
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def from_bytes(
    data: bytes,
    spec: dict[str, Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    contract: FrameContract | None = None,
) -> np.ndarray:
    """Image bytes -> model array (H, W, C)."""
    return to_model_array(decode(data, max_pixels, contract), spec, contract)


def read_regular_file(path: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; anything else is one InputError line, never a hang.

    FIFOs, sockets and devices are refused without being read (a FIFO named x.png would block
    a reader forever); the file is opened with O_NONBLOCK and re-checked with fstat, so a swap
    between the check and the open cannot make it block either. Links are followed (a camera
    folder of links is common); a dangling link or a loop is named as such.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        why = "dangling symbolic link" if path.is_symlink() else "no such file"
        raise InputError(f"cannot read {path}: {why}") from None
    except OSError as exc:
        why = "symbolic link loop" if exc.errno == 40 else (exc.strerror or str(exc))
        raise InputError(f"cannot read {path}: {why}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"cannot read {path}: not a regular file ({_kind(info.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        opened = os.fstat(fh.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise InputError(f"cannot read {path}: not a regular file ({_kind(opened.st_mode)})")
        if max_bytes is not None and opened.st_size > max_bytes:
            raise TooLargeError(f"{path} is {opened.st_size} bytes, more than {max_bytes}")
        try:
            return fh.read()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a plain file"


def from_path(
    path: str | Path,
    spec: dict[str, Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    contract: FrameContract | None = None,
) -> np.ndarray:
    """Image file -> model array; an unreadable file is an InputError like a corrupt one."""
    return from_bytes(read_regular_file(path), spec, max_pixels, contract)


def from_array(
    array: np.ndarray, spec: dict[str, Any], contract: FrameContract | None = None
) -> np.ndarray:
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
    return to_model_array(Image.fromarray(arr), spec, contract)


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
            out += _walk(path)
        else:
            out.append(path)
    return out


def _walk(folder: Path) -> list[Path]:
    """Every non-folder entry under ``folder``; linked folders are not entered (no loops)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        # os.walk lists a link to a folder (or a loop) under dirs: report it as an entry.
        found += [base / d for d in dirs if (base / d).is_symlink()]
        found += [base / f for f in files]
    return sorted(found)
