"""The frame contract: what the model was trained to see, and the refusal of anything else.

A model scores whatever it is given, so a frame the training data never looked like (another
size shrunk to fit, a dead camera's black frame, a 12-bit frame squeezed into 8 bits) gets a
confident and meaningless score, and usually a silent pass. The exporter writes the contract
into the manifest (``frame_contract``, docs/contracts.md) from the training data; this module
checks every frame against it and raises ``InvalidFrame``, which the CLI and the server report
as the distinct verdict ``invalid`` (neither pass nor reject).

Two checks, in this order:

- header (before any pixel is decoded): size, bit depth and channels. A frame of another size
  is refused unless it is one of the source sizes the training images had before the import
  resize them (then the same bilinear resize is applied); a frame smaller than the working size
  is always refused. A strip or a bomb of the wrong size therefore costs a header read only.
- pixels (after conversion to the working size, uint8): the grey window (16-bit values above
  the trained window) and frame-sanity ranges of mean grey, contrast and sharpness fitted on the
  good training frames, which catch dead, blank, saturated and out-of-focus frames.

The statistics here must equal ``granvae.data.frames.frame_stats`` (the exporter fits the
ranges with it; tests/test_frame_contract.py checks the two agree): one numpy formula each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .preprocess import InputError

STATS = ("mean", "contrast", "sharpness")
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "LA", "La", "PA", "RGBA", "RGBa")
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class InvalidFrame(InputError):
    """The frame breaks the bundle's frame contract; ``check`` names which part."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


def frame_stats(gray: np.ndarray) -> dict[str, float]:
    """Mean grey, contrast (standard deviation) and sharpness (mean |4-neighbour Laplacian|).

    ``gray`` is a (H, W) or (H, W, C) uint8 frame at the working size; channels are averaged.
    Computed in float32 on the working-size frame, so it costs 4 bytes per working pixel.
    """
    x = np.asarray(gray, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=2, dtype=np.float32)
    mean = float(x.mean(dtype=np.float64))
    contrast = float(x.std(dtype=np.float64))
    if min(x.shape) < 3:
        return {"mean": mean, "contrast": contrast, "sharpness": 0.0}
    lap = 4.0 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return {"mean": mean, "contrast": contrast, "sharpness": float(np.abs(lap).mean())}


def _pairs(value: Any, field: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"manifest field 'frame_contract.{field}' must be a non-empty list")
    out = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)
        ):
            raise ValueError(
                f"manifest field 'frame_contract.{field}' must hold [height, width] pairs, "
                f"got {item!r}"
            )
        out.append((item[0], item[1]))
    return tuple(out)


@dataclass(frozen=True)
class FrameContract:
    """The manifest's ``frame_contract`` block, parsed and checked once at load."""

    working_hw: tuple[int, int]
    source_hw: tuple[tuple[int, int], ...]
    bit_depth: int
    window: tuple[int, int]
    channels: int
    ranges: dict[str, tuple[float, float]]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> FrameContract | None:
        """The contract, or None for a bundle exported before contracts existed."""
        block = manifest.get("frame_contract")
        if block is None:
            return None
        try:
            return cls._parse(block)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"manifest field 'frame_contract' is malformed: {exc}") from None

    @classmethod
    def _parse(cls, block: dict[str, Any]) -> FrameContract:
        if not isinstance(block, dict):
            raise ValueError("manifest field 'frame_contract' must be an object")
        working = _pairs([block["working_size"]], "working_size")[0]
        sources = _pairs(block["source_sizes"], "source_sizes")
        depth = block["bit_depth"]
        if not isinstance(depth, int) or not 8 <= depth <= 16:
            raise ValueError("manifest field 'frame_contract.bit_depth' must be an int 8..16")
        lo, hi = (int(v) for v in block["window"])
        if not 0 <= lo < hi < 2**depth:
            raise ValueError(
                f"manifest field 'frame_contract.window' [{lo}, {hi}] does not fit {depth} bits"
            )
        channels = block["channels"]
        if channels not in (1, 3):
            raise ValueError("manifest field 'frame_contract.channels' must be 1 or 3")
        ranges: dict[str, tuple[float, float]] = {}
        for name, pair in dict(block.get("ranges") or {}).items():
            if name not in STATS:
                raise ValueError(f"manifest field 'frame_contract.ranges.{name}' is unknown")
            low, high = float(pair[0]), float(pair[1])
            if not low <= high:
                raise ValueError(f"manifest field 'frame_contract.ranges.{name}' has low > high")
            ranges[name] = (low, high)
        return cls(working, sources, depth, (lo, hi), channels, ranges)

    # --- header ----------------------------------------------------------------------------
    def resize_allowed(self, height: int, width: int) -> bool:
        """A source size the training images had before import brought them to the working
        size: the edge repeats that same resize."""
        return (height, width) in self.source_hw and (height, width) != self.working_hw

    def check_header(self, width: int, height: int, mode: str) -> None:
        """Size, bit depth and channels, from the header alone (nothing decoded yet)."""
        wh, ww = self.working_hw
        if height < wh or width < ww:
            raise InvalidFrame(
                "too_small",
                f"frame is {width}x{height}, smaller than the working size {ww}x{wh} "
                "(a crop or a dead camera?)",
            )
        if (height, width) != self.working_hw and not self.resize_allowed(height, width):
            known = ", ".join(f"{w}x{h}" for h, w in sorted({self.working_hw, *self.source_hw}))
            raise InvalidFrame(
                "size",
                f"frame is {width}x{height}; the model was trained on {known} frames "
                "(another camera or setting? re-train or re-export for it)",
            )
        deep = mode in DEEP_MODES
        if deep and self.bit_depth == 8:
            raise InvalidFrame(
                "bit_depth",
                f"frame is {mode} (16-bit container); the model was trained on 8-bit frames",
            )
        if not deep and self.bit_depth > 8 and mode in EIGHT_BIT_MODES:
            raise InvalidFrame(
                "bit_depth",
                f"frame is 8-bit ({mode}); the model was trained on {self.bit_depth}-bit frames "
                f"(window {self.window[0]}..{self.window[1]})",
            )
        colour = mode in ("RGB", "RGBA", "RGBa", "P", "PA")
        if self.channels == 1 and colour and mode not in ("P",):
            raise InvalidFrame(
                "channels", f"frame is colour ({mode}); the model was trained on grey frames"
            )
        if self.channels == 3 and not colour:
            raise InvalidFrame(
                "channels", f"frame is grey ({mode}); the model was trained on colour frames"
            )

    # --- pixels ----------------------------------------------------------------------------
    def check_stats(self, frame: np.ndarray) -> dict[str, float]:
        """Frame-sanity ranges on the working-size uint8 frame; returns the statistics."""
        stats = frame_stats(frame)
        for name, (low, high) in self.ranges.items():
            value = stats[name]
            if not low <= value <= high:
                raise InvalidFrame(
                    name,
                    f"frame {name} {value:.3g} is outside the trained range "
                    f"{low:.3g}..{high:.3g} ({_hint(name, value, low)})",
                )
        return stats

    def describe(self) -> dict[str, Any]:
        """What /healthz and `verify` show."""
        return {
            "working_size": list(self.working_hw),
            "source_sizes": [list(s) for s in self.source_hw],
            "bit_depth": self.bit_depth,
            "window": list(self.window),
            "channels": self.channels,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
        }


def _hint(name: str, value: float, low: float) -> str:
    below = value < low
    return {
        "mean": "dark or dead camera, lighting off?" if below else "saturated or overexposed?",
        "contrast": "blank or covered frame?" if below else "not the trained scene?",
        "sharpness": "out of focus or motion blur?" if below else "noise or another scene?",
    }[name]


NO_CONTRACT = (
    "no frame_contract in the manifest (bundle exported before contracts): frames of any size "
    "are resized per input.resize, 16-bit frames are mapped 0..65535 -> 0..255, and no frame is "
    "refused as invalid; re-export the bundle to get the checks"
)
