"""Product lines: one name that selects a line's model, data, remote, landing folder, schedule.

A plant runs one retrain per line (press-7, press-9, ...) on shared services. Each line
must keep its own registered model (so aliases never cross), its own data repository and
DVC remote prefix (so data versions never cross), its own work folder (so bundles never
cross) and may have its own landing folder and cron. Everything derives from the line
name unless params.yaml says otherwise:

    lines:
      press-7: {cron: "0 2 * * *", landing: /mnt/press-7/new}
      press-9: {cron: "30 2 * * *", model_name: press9-inspector}

Derived defaults for line L: model `<tracking.model_name>-L`, experiment
`<tracking.experiment>-L`, data repository `lines/L/data-repo`, work folder `lines/L/work`,
DVC remote `<pipeline.remote>/L` (or the local default beside the line's repository), the
landing folder `<pipeline.landing>/L` when a plant-wide landing root is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
KEYS = {"model_name", "experiment", "data_repo", "work_dir", "remote", "landing", "cron"}


class LineError(ValueError):
    """A line name or a `lines:` entry that cannot be used; names the line and the key."""


@dataclass(frozen=True)
class Line:
    """Where one product line's model, data and results live."""

    name: str
    model_name: str
    experiment: str
    data_repo: str
    work_dir: str
    remote: str | None
    landing: str | None
    cron: str | None

    def overrides(self) -> dict[str, Any]:
        """A partial params tree for the retrain flow (merged over params.yaml)."""
        pipeline = {"data_repo": self.data_repo, "work_dir": self.work_dir,
                    "remote": self.remote, "landing": self.landing}  # fmt: skip
        return {
            "tracking": {"model_name": self.model_name, "experiment": self.experiment},
            "pipeline": pipeline,
        }


def check_name(line: str) -> str:
    if not NAME.match(line or ""):
        raise LineError(
            f"line {line!r}: use 1-40 lower-case letters, digits and '-' (it becomes part "
            "of a model name, a folder and an S3 prefix)"
        )
    return line


def resolve_line(params: dict[str, Any], line: str, remote_root: str | None = None) -> Line:
    """The line's settings from a raw params tree (params.yaml as loaded)."""
    check_name(line)
    entry = (params.get("lines") or {}).get(line) or {}
    unknown = set(entry) - KEYS
    if unknown:
        raise LineError(f"lines.{line}: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
    tracking = params.get("tracking") or {}
    pipe = params.get("pipeline") or {}
    root = remote_root or pipe.get("remote")
    landing_root = pipe.get("landing")
    return Line(
        name=line,
        model_name=entry.get("model_name")
        or f"{tracking.get('model_name') or 'granvae-inspector'}-{line}",
        experiment=entry.get("experiment") or f"{tracking.get('experiment') or 'granvae'}-{line}",
        data_repo=entry.get("data_repo") or str(Path("lines") / line / "data-repo"),
        work_dir=entry.get("work_dir") or str(Path("lines") / line / "work"),
        remote=entry.get("remote") or (f"{root.rstrip('/')}/{line}" if root else None),
        landing=entry.get("landing")
        or (str(Path(landing_root) / line) if landing_root else None),
        cron=entry.get("cron"),
    )


def line_model_name(params: dict[str, Any], line: str) -> str:
    """`granvae models --line L`: the registered model that holds line L."""
    return resolve_line(params, line).model_name
