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

from pydantic import BaseModel, Field, ValidationError

from granvae.config import (
    Layer,
    Settings,
    SettingsError,
    check_keys,
    load_layers,
    merge_layers,
    override_layers,
    settings_from_tree,
)
from granvae.param_keys import unknown_keys


class PipelineConfig(BaseModel):
    """Where the flow keeps data, results and bundles, and how it spreads the sweep."""

    data_repo: str | None = None  # git repo of the DVC-tracked snapshot; None: <work_dir>/data-repo
    snapshot: str = "data/snapshot"  # dataset store folder inside data_repo, `dvc add`ed
    remote: str | None = None  # DVC remote URL; None: <data repo>-dvc-remote beside it
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

    def data_repo_path(self) -> Path:
        """The data repository: configured, else under the work folder, never the code repo."""
        return Path(self.data_repo) if self.data_repo else Path(self.work_dir) / "data-repo"


@dataclass(frozen=True)
class RunConfig:
    """Everything one retrain needs, resolved once before the flow starts."""

    settings: Settings
    pipeline: PipelineConfig
    params_path: str | None
    profile: str | None

    def resolved(self) -> dict[str, Any]:
        """The whole params tree as this run used it (profile and overrides applied)."""
        tree = self.settings.model_dump(mode="json")
        return {**tree, "pipeline": self.pipeline.model_dump(mode="json")}

    def digest(self) -> str:
        """A stable hash of the training-relevant settings (the sweep's identity)."""
        keep = self.settings.model_dump(mode="json", exclude={"tracking"})
        blob = json.dumps(keep, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_run_config(
    params: str | Path | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> RunConfig:
    """Embedded params.yaml <- params (or ./params.yaml) <- profiles[profile] <- overrides
    <- --set items.

    The same layering as every other granvae command (granvae.config.load_layers); unknown
    profiles are named with the ones that exist, unknown keys anywhere (every profile
    included) with the closest valid key, a bad value with the layer that set it."""
    layers = load_layers(params)
    tree = merge_layers(layers)
    profiles = tree.get("profiles") or {}
    label = layers[-1].label
    for name, body in profiles.items():
        check_profile(Layer(f"{label}: profiles.{name}", body or {}))
    if profile and profile not in profiles:
        raise SettingsError(f"{label}: no profile {profile!r}; known: {sorted(profiles)}")
    if profile:
        layers.append(Layer(f"{label}: profiles.{profile}", profiles[profile] or {}))
    layers += override_layers(overrides, sets)
    for layer in layers:
        _check_pipeline_keys(layer)
    merged = merge_layers(layers)
    settings = settings_from_tree(merged, label, layers)
    try:
        pipeline = PipelineConfig(**(merged.get("pipeline") or {}))
    except ValidationError as err:
        fields = "; ".join(f"pipeline.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                           for e in err.errors())  # fmt: skip
        raise SettingsError(f"{label}: {fields}") from err
    return RunConfig(settings, pipeline, str(params) if params else None, profile)


def check_profile(layer: Layer) -> None:
    """A profile is a partial params tree: the same keys as params.yaml, no nesting."""
    if not isinstance(layer.tree, dict):
        raise SettingsError(f"{layer.label}: expected a mapping of sections")
    check_keys(Layer(layer.label, {k: v for k, v in layer.tree.items() if k != "pipeline"}))
    _check_pipeline_keys(layer)


def _check_pipeline_keys(layer: Layer) -> None:
    section = layer.tree.get("pipeline")
    if isinstance(section, dict):
        problems = unknown_keys(section, [PipelineConfig], "pipeline.")
        if problems:
            first = problems[0].split(":")[0]
            raise SettingsError(f"{layer.name_for(first)}: {'; '.join(problems)}")
