"""The flow's own settings: params.yaml `pipeline:` plus a named entry of `profiles:`.

granvae's `Settings` ignores these two sections, so the library never learns about
orchestration; the flow reads them here and hands granvae only its usual tree. A profile
is a partial params tree (any section, `pipeline:` included) merged over params.yaml, so
`quick` and `full` differ only in data, not in code paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from granvae.config import Settings, SettingsError, load_settings, merge


class PipelineConfig(BaseModel):
    """Where the flow keeps data, results and bundles, and how it spreads the sweep."""

    data_repo: str = "."  # git repo holding the DVC-tracked snapshot ("." = this working copy)
    snapshot: str = "data/snapshot"  # dataset store folder inside data_repo, `dvc add`ed
    remote: str | None = None  # DVC remote URL; None: a local folder beside the data repo
    remote_name: str = "storage"
    landing: str | None = None  # MVTec-style landing folder; None: the generator (data.source)
    work_dir: str = "runs/retrain"  # sweeps, bundles, Prefect results
    dask: str | None = None  # None: local processes; "local": LocalCluster; "tcp://...": cluster
    dask_workers: int = Field(2, ge=1)
    max_workers: int | None = Field(None, ge=1)  # None: one per core, capped by candidates
    auto_promote: bool = False
    compare_metric: str = "recall_at_far"
    retries: int = Field(3, ge=0)
    retry_delay_s: float = Field(2.0, ge=0)


@dataclass(frozen=True)
class RunConfig:
    """Everything one retrain needs, resolved once before the flow starts."""

    settings: Settings
    pipeline: PipelineConfig
    params_path: str | None
    profile: str | None

    def digest(self) -> str:
        """A stable hash of the training-relevant settings (the sweep's identity)."""
        keep = self.settings.model_dump(mode="json", exclude={"tracking"})
        blob = json.dumps(keep, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _read_yaml(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SettingsError(f"{path}: not valid YAML: {err}") from err


def load_run_config(
    params: str | Path | None = "params.yaml",
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """params.yaml <- profiles[profile] <- overrides; unknown profiles are named."""
    path = Path(params) if params else None
    if path is not None and not path.exists() and str(params) != "params.yaml":
        raise SettingsError(f"{path}: params file not found")
    raw = _read_yaml(path)
    profiles = raw.get("profiles") or {}
    if profile and profile not in profiles:
        raise SettingsError(f"{path}: no profile {profile!r}; known: {sorted(profiles)}")
    combined = merge(profiles.get(profile, {}) if profile else {}, overrides or {})
    settings = load_settings(path if path and path.exists() else None, combined)
    pipeline = PipelineConfig(**merge(raw.get("pipeline") or {}, combined.get("pipeline") or {}))
    return RunConfig(settings, pipeline, str(path) if path else None, profile)
