"""One pydantic tree for every setting, loaded from params.yaml plus overrides.

One source of defaults, the same for every command and every folder: the params.yaml
shipped inside the package (granvae/params.yaml, the project's params.yaml) is the
embedded default; a params.yaml in the working folder (or the file given with --params)
overrides it key by key; CLI flags and --set override both. So a command started from
any folder trains the same model as `make run`, never a built-in fallback that differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from granvae.models import ModelConfig
from granvae.objectives import ObjectiveConfig
from granvae.scoring.tiling import TilingConfig
from granvae.train import TrainConfig

DEFAULT_PARAMS = Path("params.yaml")  # the working folder's override, when present
EMBEDDED_PARAMS = Path(__file__).resolve().parent / "params.yaml"


class DataConfig(BaseModel):
    """Where the images come from: a generator (demos, science) or an MVTec-style folder."""

    source: str = Field("surfaces", pattern="^(shapes|surfaces|folder)$")
    path: str | None = None  # the MVTec-style root when source == "folder"
    n_train: int = Field(2048, ge=1)
    n_val: int = Field(256, ge=1)
    n_test: int = Field(512, ge=1)
    seed: int = 0
    image_size: int | None = Field(64, ge=16)  # None: a folder's own H x W (not generators)
    channels: int = Field(1, ge=1, le=3)
    mixed: str = Field("resize", pattern="^(resize|refuse)$")  # folder images of other sizes
    defect_px: float | None = Field(None, gt=0)  # generated defects' size in px; None: a share
    store: str = "data/dataset"  # the dataset store folder DVC versions


class SweepConfig(BaseModel):
    """The candidate grid: granularity x capacity (beta, optionally latent dim) x seed."""

    objective: str = Field("beta_stcvae", pattern="^(vae|beta_vae|beta_tcvae|beta_stcvae)$")
    granularities: list[int] | None = None  # None: the divisors of latent_dim
    betas: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    latent_dims: list[int] | None = None  # None: [model.latent_dim]
    seeds: list[int] = Field(default_factory=lambda: [0])
    workers: int | None = Field(None, ge=1)  # None: one per core on the CPU, 1 on a GPU
    # Tile sizes in px: null = the `tiling` block as configured (the whole image when its
    # tile is null); a number = the model sees tiles of that side (textures repeat at 16-32
    # px), scored with evaluation.tile_score, tiles `tile_stride_share * tile` apart.
    tiles: list[int | None] = Field(default_factory=lambda: [None])
    tile_stride_share: float = Field(0.25, gt=0, le=1)

    @field_validator("tiles")
    @classmethod
    def _tiles_fit_the_model(cls, v: list[int | None]) -> list[int | None]:
        bad = [t for t in v if t is not None and (t < 16 or t % 16)]
        if bad:
            raise ValueError(f"tiles must be null or multiples of 16 px, got {bad}")
        if not v:
            raise ValueError("tiles must hold at least one entry (null = the tiling block)")
        return v


class EvalConfig(BaseModel):
    """How candidates are measured; the same numbers feed selection and the edge threshold."""

    false_alarm_rate: float = Field(0.01, gt=0, lt=1)
    score: str = "neg_elbo"  # a rule of granvae.scoring.SCORES (validated below)
    iwae_k: int = Field(20, ge=1)
    iwae_images: int = Field(128, ge=1)
    latency_repeats: int = Field(20, ge=1)
    disentanglement: bool = True
    disentanglement_train: int = Field(1000, ge=10)
    disentanglement_test: int = Field(500, ge=10)
    factor_vae_votes: int = Field(300, ge=10)
    dci_estimators: int = Field(20, ge=1)
    smooth_sigma: float = Field(2.0, gt=0)  # px; the localized rules smooth the map first
    topk_frac: float = Field(0.01, gt=0, le=1)  # share of pixels the *_topk rules average
    bootstrap: int = Field(1000, ge=100)  # replicates of the recall interval
    # rule of candidates with a swept tile size (sweep.tiles); null = `score`
    tile_score: str | None = None

    @field_validator("score")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from granvae.scoring.head import SCORES, TILE_RULES

        known = dict.fromkeys([*SCORES, *TILE_RULES])  # tile rules need tiling.tile set
        if v not in known:
            raise ValueError(f"score must be one of {', '.join(known)}; got {v!r}")
        return v

    @field_validator("tile_score")
    @classmethod
    def _known_tile_rule(cls, v: str | None) -> str | None:
        from granvae.scoring.head import TILE_RULES

        if v is not None and v not in TILE_RULES:
            raise ValueError(f"tile_score must be one of {', '.join(TILE_RULES)}; got {v!r}")
        return v


class Settings(BaseModel):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    evaluation: EvalConfig = EvalConfig()
    tiling: TilingConfig = TilingConfig()
    select: dict[str, Any] = Field(default_factory=dict)  # validated by granvae.select
    export: dict[str, Any] = Field(default_factory=dict)  # validated by granvae.export
    tracking: dict[str, Any] = Field(default_factory=dict)  # read by granvae.tracking


class SettingsError(ValueError):
    """A params file or override that does not fit the schema; names the file and field."""


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge; the override wins leaf by leaf (params.yaml <- profile <- --set)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(source: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise SettingsError(f"{source}: not valid YAML: {err}") from err
    except OSError as err:
        raise SettingsError(f"{source}: cannot be read: {err.strerror}") from err
    if raw is not None and not isinstance(raw, dict):
        raise SettingsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    return raw or {}


def params_source(path: Path | str | None = None) -> Path | None:
    """The file that overrides the embedded defaults: `path`, else ./params.yaml if any."""
    if path:
        source = Path(path)
        if not source.is_file():
            raise SettingsError(f"{source}: params file not found")
        return source
    return DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None


def load_tree(path: Path | str | None = None) -> tuple[dict[str, Any], str]:
    """(embedded params.yaml <- the override file, a label naming the files read)."""
    tree = _read_yaml(EMBEDDED_PARAMS) if EMBEDDED_PARAMS.is_file() else {}
    source = params_source(path)
    if source is None:
        return tree, f"{EMBEDDED_PARAMS} (embedded defaults)"
    if source.resolve() == EMBEDDED_PARAMS:
        return tree, str(source)
    return merge(tree, _read_yaml(source)), str(source)


def load_settings(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Embedded defaults <- params.yaml (`path` or ./params.yaml) <- overrides.

    Errors name the file and the field."""
    tree, label = load_tree(path)
    return settings_from_tree(merge(tree, overrides or {}), label)


def settings_from_tree(tree: dict[str, Any], label: str) -> Settings:
    try:
        return Settings(**tree)
    except ValidationError as err:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise SettingsError(f"{label}: {fields}") from err
