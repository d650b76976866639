"""Score images with a verified bundle and turn raw scores into decisions.

The graph emits raw scores only; the decision ``score > threshold.value`` is taken here from the
manifest, which is what lets a line re-tune its threshold (``granvae-edge calibrate``) without
re-exporting or even touching model.onnx.

A tiled bundle (manifest ``tiling`` block) takes full-size images: each is brought to the
working resolution, cut into tiles for the graph, and judged on the stitched map (tiled.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import position, preprocess, tiled
from .bundle import Bundle, load_bundle
from .tiling import Tiling

MAX_BATCH = 32


@dataclass(frozen=True)
class Verdict:
    """One image's result. ``decision`` True means "reject: anomalous"."""

    score: float
    decision: bool
    threshold: float
    top_group: int
    top_group_share: float
    latency_ms: float
    anomaly_map: np.ndarray = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe fields (the anomaly map is for heatmaps, not for logs)."""
        return {
            "score": self.score if math.isfinite(self.score) else None,
            "decision": self.decision,
            "threshold": self.threshold,
            "top_group": self.top_group,
            "top_group_share": self.top_group_share,
            "latency_ms": round(self.latency_ms, 3),
        }


def _top_group(attribution: np.ndarray) -> tuple[int, float]:
    """Index of the largest group attribution and its share of the (non-negative) total."""
    if attribution.size == 0:
        return -1, 0.0
    top = int(np.argmax(attribution))
    positive = np.clip(attribution.astype(np.float64), 0.0, None)
    total = float(positive.sum())
    share = float(positive[top] / total) if total > 0 and np.isfinite(total) else 0.0
    return top, share


class Inspector:
    """A verified bundle plus the decision rule: the one object the CLI and server share."""

    def __init__(
        self,
        bundle_dir: str | Path,
        intra_op_threads: int | None = None,
        smoke_test: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        self.bundle: Bundle = load_bundle(bundle_dir, intra_op_threads=intra_op_threads)
        self.tiling: Tiling | None = Tiling.from_manifest(self.bundle.manifest)
        # Parts in fixtures: the stitched map standardised per pixel on a registered frame.
        self.position = position.load_for_bundle(self.bundle.directory, self.bundle.manifest)
        # Decoded-pixel cap per input: what one request may cost in memory before resizing.
        self.max_pixels = max_pixels or preprocess.default_max_pixels(self.image_spec)
        self.smoke_score: float | None = None
        if smoke_test:
            # A graph can load yet fail at run time (bad shapes inside); find out now.
            self.smoke_score = self.score_batch([preprocess.blank(self.image_spec)])[0].score

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest

    @property
    def spec(self) -> dict[str, Any]:
        return self.bundle.manifest["input"]

    @property
    def image_spec(self) -> dict[str, Any]:
        """What prepare() makes of an input: the model input, or for a tiled bundle the full
        working resolution (same channels, dtype and resize rule)."""
        if self.tiling is None:
            return self.spec
        t = self.tiling
        return {**self.spec, "height": t.image_height, "width": t.image_width}

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def prepare(self, item: bytes | str | Path | np.ndarray) -> np.ndarray:
        """Bytes, a path or an array -> model array; raises preprocess.InputError."""
        if isinstance(item, bytes | bytearray | memoryview):
            return preprocess.from_bytes(bytes(item), self.image_spec, self.max_pixels)
        if isinstance(item, str | Path):
            return preprocess.from_path(item, self.image_spec, self.max_pixels)
        return self._checked_array(item)

    def _checked_array(self, arr: np.ndarray) -> np.ndarray:
        spec = self.image_spec
        expected = (spec["height"], spec["width"], spec["channels"])
        if arr.shape == expected and arr.dtype == preprocess.blank(spec).dtype:
            return arr
        return preprocess.from_array(arr, spec)

    def score_batch(self, arrays: list[np.ndarray] | np.ndarray) -> list[Verdict]:
        """Score model-ready or raw uint8 arrays, in chunks of MAX_BATCH."""
        prepared = [self._checked_array(np.asarray(a)) for a in arrays]
        if self.tiling is not None:
            return [self._run_tiled(image) for image in prepared]
        verdicts: list[Verdict] = []
        for start in range(0, len(prepared), MAX_BATCH):
            verdicts += self._run(np.stack(prepared[start : start + MAX_BATCH]))
        return verdicts

    def _run(self, batch: np.ndarray) -> list[Verdict]:
        outputs = ["score", "anomaly_map", "group_attribution"]
        t0 = time.perf_counter()
        score, amap, attribution = self.bundle.session.run(outputs, {self.spec["name"]: batch})
        per_item_ms = (time.perf_counter() - t0) * 1000.0 / len(batch)
        return [
            self._verdict(
                float(np.asarray(score[i]).reshape(-1)[0]), attribution[i], amap[i], per_item_ms
            )
            for i in range(len(batch))
        ]

    def _run_tiled(self, image: np.ndarray) -> Verdict:
        assert self.tiling is not None
        t0 = time.perf_counter()
        result = tiled.score_image(self.bundle.session, self.spec["name"], self.tiling, image)
        value, amap = result.score, result.anomaly_map
        if self.position is not None:
            amap = self.position.standardised(image, amap)
            value = self.position.score(amap)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        return self._verdict(value, result.attribution, amap, latency_ms)

    def _verdict(
        self, value: float, attribution: np.ndarray, amap: np.ndarray, latency_ms: float
    ) -> Verdict:
        top, share = _top_group(np.asarray(attribution).ravel())
        return Verdict(
            score=value,
            # Fail safe: a non-finite score rejects the part (NaN > t would pass it).
            decision=bool(not value <= self.threshold),
            threshold=self.threshold,
            top_group=top,
            top_group_share=share,
            latency_ms=latency_ms,
            anomaly_map=np.asarray(amap),
        )

    def score_one(self, item: bytes | str | Path | np.ndarray) -> Verdict:
        """Prepare and score a single input (raises preprocess.InputError on bad input)."""
        return self.score_batch([self.prepare(item)])[0]
