"""Score images with a verified bundle and turn raw scores into decisions.

The graph emits raw scores only; the decision ``score > threshold.value`` is taken here from the
manifest, which is what lets a line re-tune its threshold (``granvae-edge calibrate``) without
re-exporting or even touching model.onnx.

A tiled bundle (manifest ``tiling`` block) takes full-size images: each is brought to the
working resolution, cut into tiles for the graph, and judged on the stitched map (tiled.py).

Every input first meets the bundle's frame contract (contract.py): a frame the model was not
trained to see raises ``contract.InvalidFrame``, reported as the verdict ``invalid``. The three
verdicts are ``pass``, ``reject`` and ``invalid``; ``decision`` (True = reject) is kept for
clients written before ``verdict`` existed.
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
from .contract import NO_CONTRACT, FrameContract
from .signature import TrustStore
from .tiling import Tiling

# The attribution's significance level: below it the explaining group is shown (docs/results.md).
ATTRIBUTION_ALPHA = 0.01

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
    # Posterior means (for the line monitor's per-group shift); None when the graph has none.
    latent_mean: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """"reject" or "pass" (an invalid frame never gets a Verdict: it raises InvalidFrame)."""
        return "reject" if self.decision else "pass"

    def to_json(self, show_group: bool = False) -> dict[str, Any]:
        """The JSON-safe fields (the anomaly map is for heatmaps, not for logs).

        ``top_group`` only when the bundle's attribution passed its significance test: an
        explaining group that does not predict the defect would mislead an operator."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "score": self.score if math.isfinite(self.score) else None,
            "threshold": self.threshold,
            "decision": self.decision,
            "latency_ms": round(self.latency_ms, 3),
        }
        if show_group:
            out.update(top_group=self.top_group, top_group_share=self.top_group_share)
        return out


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
        trust: TrustStore | None = None,
    ) -> None:
        self.bundle: Bundle = load_bundle(
            bundle_dir, intra_op_threads=intra_op_threads, trust=trust
        )
        self.tiling: Tiling | None = Tiling.from_manifest(self.bundle.manifest)
        # checked with the rest of the manifest (manifest._check_frame_contract)
        self.contract: FrameContract | None = FrameContract.from_manifest(self.bundle.manifest)
        attribution = self.bundle.manifest.get("attribution")
        self.show_group = bool(
            isinstance(attribution, dict) and attribution.get("significant") is True
        )
        # Parts in fixtures: the stitched map standardised per pixel on a registered frame.
        self.position = position.load_for_bundle(self.bundle.directory, self.bundle.manifest)
        # Decoded-pixel cap per input: what one request may cost in memory before resizing.
        self.max_pixels = max_pixels or preprocess.default_max_pixels(self.image_spec)
        self.smoke_score: float | None = None
        names = {o.name for o in self.bundle.session.get_outputs()}
        self._outputs = ["score", "anomaly_map", "group_attribution"] + (
            ["latent_mean"] if "latent_mean" in names and self.tiling is None else []
        )
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

    def contract_status(self) -> dict[str, Any] | str:
        """The frame contract as /healthz and `verify` show it, or what its absence means."""
        return NO_CONTRACT if self.contract is None else self.contract.describe()

    def normalised_map(self, verdict: Verdict) -> np.ndarray:
        """The anomaly map on the fixed scale where 1.0 is the threshold, for every image.

        A tiled bundle's score is a reduction (max or top-k mean) of this very map, so the map
        divided by the threshold is exact: a pixel above 1.0 is beyond the threshold. A
        whole-image bundle's score is not a reduction of its map, so the map is scaled so that
        its peak equals score / threshold: the same reading (peak above 1.0 = reject) without
        claiming a per-pixel meaning the graph does not have.
        """
        amap = np.nan_to_num(np.asarray(verdict.anomaly_map, dtype=np.float32), nan=0.0)
        amap = np.squeeze(amap)
        if self.threshold <= 0:
            # No ratio scale exists around a threshold <= 0 (e.g. a Gaussian NLL): the peak
            # only says which side of it the part is on (1.5 reject, 0.5 pass).
            peak = float(amap.max()) if amap.size else 0.0
            target = 1.5 if verdict.decision else 0.5
            return amap * np.float32(target / peak) if peak > 0 else np.zeros_like(amap)
        if self.tiling is not None or not math.isfinite(verdict.score):
            return amap / np.float32(self.threshold)
        peak = float(amap.max()) if amap.size else 0.0
        if peak <= 0:
            return np.zeros_like(amap)
        return amap * np.float32(verdict.score / self.threshold / peak)

    def prepare(self, item: bytes | str | Path | np.ndarray) -> np.ndarray:
        """Bytes, a path or an array -> model array; raises preprocess.InputError."""
        spec, cap, contract = self.image_spec, self.max_pixels, self.contract
        if isinstance(item, bytes | bytearray | memoryview):
            return preprocess.from_bytes(bytes(item), spec, cap, contract)
        if isinstance(item, str | Path):
            return preprocess.from_path(item, spec, cap, contract)
        if contract is not None:
            return preprocess.from_array(np.asarray(item), spec, contract)
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
        t0 = time.perf_counter()
        score, amap, attribution, *latent = self.bundle.session.run(
            self._outputs, {self.spec["name"]: batch}
        )
        per_item_ms = (time.perf_counter() - t0) * 1000.0 / len(batch)
        return [
            self._verdict(
                float(np.asarray(score[i]).reshape(-1)[0]), attribution[i], amap[i], per_item_ms,
                latent[0][i] if latent else None,
            )  # fmt: skip
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
        self, value: float, attribution: np.ndarray, amap: np.ndarray, latency_ms: float,
        latent_mean: np.ndarray | None = None,
    ) -> Verdict:  # fmt: skip
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
            latent_mean=None if latent_mean is None else np.asarray(latent_mean).ravel(),
        )

    def score_one(self, item: bytes | str | Path | np.ndarray) -> Verdict:
        """Prepare and score a single input (raises preprocess.InputError on bad input)."""
        return self.score_batch([self.prepare(item)])[0]
