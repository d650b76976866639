"""The operator-facing parts of ``POST /score`` that are not HTTP plumbing.

- Uploads: the raw image as the body (``curl --data-binary @x.png``) or a multipart form
  (``curl -F file=@x.png``, what most tools and browsers send); the form's first file part is
  the image. Parsed with the stdlib's email parser, no extra dependency on the device.
- The anomaly map on request, on the fixed scale where 1.0 is the threshold (see
  ``Inspector.normalised_map``): ``map=array`` gives a list of rows downsampled to at most
  MAP_ARRAY_SIDE per side (by block maximum, so a small hot spot is never averaged away);
  ``map=png`` gives a base64 8-bit grey PNG where grey level 255 * v / MAP_PNG_CEILING encodes
  v, i.e. 1.0 (the threshold) is grey 127 and anything at twice the threshold or more is 255.
"""

from __future__ import annotations

import base64
import io
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import numpy as np
from PIL import Image

from .preprocess import InputError

MAP_FORMATS = ("png", "array")
MAP_ARRAY_SIDE = 64
MAP_PNG_CEILING = 2.0


def image_bytes(body: bytes, content_type: str) -> bytes:
    """The image inside a request body: the body itself, or a multipart form's file part."""
    if not content_type.lower().startswith("multipart/"):
        return body
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InputError("multipart body without parts: send the image as a form file field")
    parts = list(message.iter_parts())
    files = [p for p in parts if p.get_filename()] or parts
    for part in files:
        payload = part.get_payload(decode=True)
        if payload:
            return bytes(payload)
    raise InputError("multipart form has no file part with bytes (use -F file=@x.png)")


def downsample_max(amap: np.ndarray, side: int = MAP_ARRAY_SIDE) -> np.ndarray:
    """Block maximum down to at most ``side`` per side (a hot pixel stays hot)."""
    h, w = amap.shape
    fy, fx = max(1, -(-h // side)), max(1, -(-w // side))
    if fy == 1 and fx == 1:
        return amap
    ph, pw = -(-h // fy) * fy, -(-w // fx) * fx
    padded = np.full((ph, pw), -np.inf, dtype=np.float32)
    padded[:h, :w] = amap
    return padded.reshape(ph // fy, fy, pw // fx, fx).max(axis=(1, 3))


def encode_map(normalised: np.ndarray, fmt: str) -> dict[str, Any]:
    """The normalised map as JSON: a downsampled array or a base64 PNG (scale in the reply)."""
    amap = np.asarray(normalised, dtype=np.float32)
    if fmt == "array":
        small = downsample_max(amap)
        return {
            "format": "array",
            "scale": "1.0 = threshold",
            "shape": list(small.shape),
            "source_shape": list(amap.shape),
            "values": np.round(small, 4).tolist(),
        }
    grey = np.clip(amap / MAP_PNG_CEILING, 0.0, 1.0) * 255.0
    buf = io.BytesIO()
    Image.fromarray(np.round(grey).astype(np.uint8), mode="L").save(buf, format="PNG")
    return {
        "format": "png",
        "scale": f"grey = 255 * min(value / {MAP_PNG_CEILING:g}, 1); value 1.0 = threshold",
        "shape": list(amap.shape),
        "png_base64": base64.b64encode(buf.getvalue()).decode("ascii"),
    }
