"""One pydantic tree for every setting, loaded from params.yaml plus overrides.

One source of defaults, the same for every command and every folder: the params.yaml
shipped inside the package (granvae/params.yaml, the project's params.yaml) is the
embedded default; a params.yaml in the working folder (or the file given with --params)
overrides it key by key; CLI flags and --set override both. So a command started from
any folder trains the same model as `make run`, never a built-in fallback that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from granvae.param_keys import apply_gate_sets, blame, parse_sets, unknown_keys
from granvae.project import project_params

# The torch-free homes of these blocks: every command reads params.yaml, and a registry
# command must not import torch to do it (tests/test_cli_startup.py).
from granvae.schemas import ModelConfig, ObjectiveConfig, TrainConfig
from granvae.tile_geometry import TilingConfig

DEFAULT_PARAMS = Path("params.yaml")  # the working folder's override, when present
EMBEDDED_PARAMS = Path(__file__).resolve().parent / "params.yaml"
# Top-level sections of params.yaml that pipelines/ (and granvae.lines) read and check, not
# `Settings`.
OTHER_SECTIONS = ("pipeline", "profiles", "lines")


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
    bit_depth: int = Field(8, ge=8, le=16)  # folder camera depth: > 8 = 16-bit mono, 0..2^N-1
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
    # rules tried beside `score` by each whole-image candidate, which keeps the one with the
    # best recall on synthetic defects drawn on its own validation images (granvae.rule_choice;
    # a recall tie goes to the higher synthetic AUROC, then to `score`); empty: always `score`
    score_alternatives: list[str] = Field(default_factory=list)

    @field_validator("score")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from granvae.score_rules import SCORES, TILE_RULES

        known = dict.fromkeys([*SCORES, *TILE_RULES])  # tile rules need tiling.tile set
        if v not in known:
            raise ValueError(f"score must be one of {', '.join(known)}; got {v!r}")
        return v

    @field_validator("score_alternatives")
    @classmethod
    def _known_choices(cls, v: list[str]) -> list[str]:
        from granvae.score_rules import SCORES

        unknown = [r for r in v if r not in SCORES]
        if unknown:
            raise ValueError(f"score_alternatives: {', '.join(map(repr, unknown))} not a rule; "
                             f"rules: {', '.join(SCORES)}")  # fmt: skip
        return list(dict.fromkeys(v))

    @field_validator("tile_score")
    @classmethod
    def _known_tile_rule(cls, v: str | None) -> str | None:
        from granvae.score_rules import TILE_RULES

        if v is not None and v not in TILE_RULES:
            raise ValueError(f"tile_score must be one of {', '.join(TILE_RULES)}; got {v!r}")
        return v


class PromotionConfig(BaseModel):
    """The non-inferiority rule that lets a challenger replace the champion
    (granvae.metrics.noninferiority; docs/decisions.md has its power at the default sizes)."""

    margin: float = Field(0.09, ge=0, lt=1)  # recall the challenger may lose, at most
    confidence: float = Field(0.90, ge=0.5, lt=1)  # one-sided, of the lower bound
    bootstrap: int = Field(1000, ge=100)  # paired replicates, threshold recalibrated in each


class Settings(BaseModel):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    evaluation: EvalConfig = EvalConfig()
    tiling: TilingConfig = TilingConfig()
    promotion: PromotionConfig = PromotionConfig()
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
    if DEFAULT_PARAMS.is_file():
        return DEFAULT_PARAMS
    return project_params()  # run from a subfolder: the project's params.yaml


@dataclass(frozen=True)
class Layer:
    """One source of settings (a file, a profile, --set); errors are blamed on it by label.

    `origin` maps a dotted key to the exact text that set it (the --set item)."""

    label: str
    tree: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)

    def name_for(self, path: str) -> str:
        """The --set item that set `path` (or the nearest key above it), else the label."""
        hits = [k for k in self.origin if path == k or path.startswith(k + ".")]
        parts = path.split(".")
        while not hits and parts:  # select.gates.op was set as select.gates.<metric>.op
            prefix = ".".join(parts)
            hits = [k for k in self.origin if k.startswith(prefix + ".")]
            parts.pop()
        return self.origin[hits[0]] if hits else self.label


def load_layers(path: Path | str | None = None) -> list[Layer]:
    """[embedded params.yaml, the override file (`path` or ./params.yaml) if any]."""
    embedded = _read_yaml(EMBEDDED_PARAMS) if EMBEDDED_PARAMS.is_file() else {}
    layers = [Layer(f"{EMBEDDED_PARAMS} (embedded defaults)", embedded)]
    source = params_source(path)
    if source is not None and source.resolve() != EMBEDDED_PARAMS:
        layers.append(Layer(str(source), _read_yaml(source)))
    return layers


def load_tree(path: Path | str | None = None) -> tuple[dict[str, Any], str]:
    """(embedded params.yaml <- the override file, a label naming the files read)."""
    layers = load_layers(path)
    tree: dict[str, Any] = {}
    for layer in layers:
        tree = merge(tree, apply_gate_sets(tree, layer.tree))
    return tree, layers[-1].label if path or len(layers) > 1 else layers[0].label


def override_layers(
    overrides: dict[str, Any] | None = None, sets: list[str] | None = None
) -> list[Layer]:
    """Typed command-line options, then `--set key.path=value` items (highest precedence)."""
    layers = [Layer("command-line options", overrides)] if overrides else []
    if sets:
        try:
            tree, origin = parse_sets(sets)
        except ValueError as err:
            raise SettingsError(str(err)) from None
        layers.append(Layer("--set", tree, origin))
    return layers


def load_settings(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Settings:
    """Embedded defaults <- params.yaml (`path` or ./params.yaml) <- overrides <- --set.

    Errors name the file (or the --set item) and the field."""
    return settings_from_layers([*load_layers(path), *override_layers(overrides, sets)])


def check_keys(layer: Layer, elsewhere: tuple[str, ...] = OTHER_SECTIONS) -> None:
    """Refuse keys no schema declares, naming the layer and the closest valid key."""
    tree = {k: v for k, v in layer.tree.items() if k not in elsewhere}
    problems = unknown_keys(tree, [Settings], top=True)
    if problems:
        first = problems[0].split(":")[0]
        raise SettingsError(f"{layer.name_for(first)}: {'; '.join(problems)}")


def merge_layers(layers: list[Layer]) -> dict[str, Any]:
    """Check each layer's keys, then merge them in order (gates set by name, see
    granvae.param_keys.apply_gate_sets)."""
    tree: dict[str, Any] = {}
    for layer in layers:
        check_keys(layer)
        try:
            tree = merge(tree, apply_gate_sets(tree, layer.tree))
        except ValueError as err:
            raise SettingsError(f"{layer.name_for('select.gates')}: {err}") from None
    return tree


def settings_from_layers(layers: list[Layer]) -> Settings:
    return settings_from_tree(merge_layers(layers), layers[-1].label, layers)


def settings_from_tree(
    tree: dict[str, Any], label: str, layers: list[Layer] | None = None
) -> Settings:
    """Validate; each error is blamed on the layer that set the field (else `label`)."""
    try:
        settings = Settings(**{k: v for k, v in tree.items() if k not in OTHER_SECTIONS})
        if settings.select:
            from granvae.select import SelectionPolicy

            SelectionPolicy.model_validate(settings.select)  # fail now, not after the sweep
        return settings
    except ValidationError as err:
        raise SettingsError(_describe(err, label, layers or [])) from err


def _describe(err: ValidationError, label: str, layers: list[Layer]) -> str:
    """'file-or---set: field: message; ...', grouped by the source that set each field."""
    by_source: dict[str, list[str]] = {}
    prefix = ("select",) if err.title == "SelectionPolicy" else ()
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        source = label
        layer = blame(loc, [(ly.label, ly.tree) for ly in layers]) if layers else None
        if layer is not None:
            match = next(ly for ly in reversed(layers) if ly.label == layer)
            source = match.name_for(".".join(str(p) for p in loc if not isinstance(p, int)))
        by_source.setdefault(source, []).append(f"{path}: {e['msg']}")
    return "; ".join(f"{src}: {'; '.join(msgs)}" for src, msgs in by_source.items())
