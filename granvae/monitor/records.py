"""Read what devices shipped to a landing zone (docs/line-loop.md) into arrays the tests use.

The landing zone holds compact records of every inspection (``stream/*.jsonl``), full records
of captured items (``records/*.json``, operator feedback inside) and standalone verdicts
(``feedback/*.json``). Field names are the contract with granvae_edge.capture; this module
does not import the edge package (it is a separate install on the device).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class RecordsError(ValueError):
    """A landing zone that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Stream:
    """Inspections of one model, in time order."""

    ids: list[str]
    verdicts: np.ndarray  # "pass" | "reject" | "invalid"
    scores: np.ndarray  # NaN where the frame had none (invalid)
    latent_means: np.ndarray | None  # (n, D), NaN rows where none; None if no record had any
    model_sha256: str | None

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, start: int, stop: int | None = None) -> Stream:
        sl = slice(start, stop)
        lat = None if self.latent_means is None else self.latent_means[sl]
        return Stream(self.ids[sl], self.verdicts[sl], self.scores[sl], lat, self.model_sha256)


def _lines(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}:{n}: not a JSON record ({exc.msg})") from exc
    return out


def read_stream(landing: str | Path, model_sha256: str | None = None) -> Stream:
    """Compact records of one model (default: the model of the latest record), time-ordered."""
    folder = Path(landing) / "stream"
    if not folder.is_dir():
        raise RecordsError(f"{landing}: no stream/ folder (is this a landing zone?)")
    rows = [r for f in sorted(folder.glob("*.jsonl")) for r in _lines(f)]
    if not rows:
        raise RecordsError(f"{folder}: no inspection records")
    rows.sort(key=lambda r: (r.get("t", ""), r.get("id", "")))
    model = model_sha256 or rows[-1].get("model_sha256")
    rows = [r for r in rows if r.get("model_sha256") == model]
    dims = max((len(r["latent_mean"]) for r in rows if r.get("latent_mean")), default=0)
    latent = None
    if dims:
        latent = np.full((len(rows), dims), np.nan)
        for i, r in enumerate(rows):
            if r.get("latent_mean") and len(r["latent_mean"]) == dims:
                latent[i] = r["latent_mean"]
    scores = np.array([np.nan if r.get("score") is None else r["score"] for r in rows], float)
    verdicts = np.array([r.get("verdict", "invalid") for r in rows])
    return Stream([r["id"] for r in rows], verdicts, scores, latent, model)


def read_feedback(landing: str | Path) -> dict[str, list[dict]]:
    """Operator verdicts by item id, from the shipped records and the standalone files."""
    landing = Path(landing)
    out: dict[str, list[dict]] = {}
    for path in sorted((landing / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("feedback"):
            out.setdefault(path.stem, []).extend(rec["feedback"])
    for path in sorted((landing / "feedback").glob("*.json")):
        entry = json.loads(path.read_text())
        out.setdefault(entry["item_id"], []).append(entry)
    return out
