"""`granvae ...`: thin Typer entry points; each command calls one library function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from granvae.cli_options import SetOpt

HELP = (
    "Retrain, select, export and register the factory's visual-inspection models. "
    "Start with `granvae retrain --profile quick`; `granvae models` lists what is "
    "registered; `granvae COMMAND --help` explains any command."
)
app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
data_app = typer.Typer(no_args_is_help=True, help="Make, load and check data sets.")
app.add_typer(data_app, name="data")
console = Console()


def _option(loc: tuple) -> str:
    """A pydantic field path as the CLI option a user typed: latent_dim -> --latent-dim."""
    return "--" + str(loc[-1]).replace("_", "-")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one line, even piped
    raise typer.Exit(code=2)


@data_app.command("make")
def data_make(
    kind: Annotated[str, typer.Argument(help="shapes | surfaces")],
    out: Annotated[Path, typer.Option(help="dataset store folder to write")],
    n: Annotated[int, typer.Option(help="training images")] = 2048,
    n_val: Annotated[int, typer.Option(help="held-out good images")] = 256,
    n_test: Annotated[int, typer.Option(help="test images (surfaces: half defects)")] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    image_size: Annotated[int, typer.Option(help="image side in px, e.g. 64, 256, 512")] = 64,
    defect_px: Annotated[
        float | None,
        typer.Option(help="defect size in px at severity 1 (default: a share of the side)"),
    ] = None,
) -> None:
    """Generate a synthetic data set and write it as a dataset store."""
    from granvae.data import generate, write_dataset

    try:
        splits, meta = generate(
            kind, n, n_val, n_test, seed, image_size=image_size, defect_px=defect_px
        )
        manifest = write_dataset(out, splits, meta)
    except ValueError as err:
        _fail(str(err))
    counts = {name: s["count"] for name, s in manifest["splits"].items()}
    console.print(f"wrote {kind} data set to [bold]{out}[/bold]: {counts}")


@data_app.command("import")
def data_import(
    root: Annotated[Path, typer.Argument(help="MVTec-AD style folder")],
    out: Annotated[Path, typer.Option(help="dataset store folder to write")],
    image_size: Annotated[
        int | None,
        typer.Option(help="resize to N x N (default: keep the images' own size, H x W)"),
    ] = None,
    channels: Annotated[int, typer.Option(help="1 = grayscale, 3 = RGB")] = 1,
    mixed: Annotated[
        str, typer.Option(help="images of differing sizes: resize | refuse (name them)")
    ] = "resize",
    shard_mb: Annotated[
        int, typer.Option(min=1, help="image + mask MiB per shard, before compression")
    ] = 64,
    bit_depth: Annotated[
        int,
        typer.Option(
            min=8, max=16,
            help="camera bit depth: 8, or 10..16 for 16-bit mono PNG/TIFF (window 0..2^N-1)",
        ),
    ] = 8,  # fmt: skip
    max_pixels: Annotated[
        int, typer.Option(min=1, help="refuse images whose header says more pixels than this")
    ] = 64_000_000,
    val_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=0.95,
                     help="share of train/good held out to calibrate the threshold"),
    ] = 0.1,  # fmt: skip
) -> None:
    """Validate an MVTec-style folder and write it as a dataset store, one shard at a time."""
    from granvae.data import import_mvtec

    try:
        manifest = import_mvtec(
            root, out, image_size=image_size, channels=channels, mixed=mixed,
            shard_bytes=shard_mb * 2**20, bit_depth=bit_depth, max_pixels=max_pixels,
            val_fraction=val_fraction,
        )  # fmt: skip
    except ValueError as err:
        _fail(str(err))
    except OSError as err:  # disk full, read-only target, ...: one line, never a traceback
        _fail(f"cannot write {out}: {err.strerror or err}")
    counts = {name: s["count"] for name, s in manifest["splits"].items()}
    c, h, w = manifest["observation_shape"]
    console.print(
        f"imported {root} into [bold]{out}[/bold] at {h}x{w} (HxW), {c} channel(s), "
        f"{len(manifest['shards'])} shard(s): {counts}"
    )
    for notice in manifest["notices"]:
        console.print(f"[yellow]note:[/yellow] {notice}", highlight=False)


@data_app.command("check")
def data_check(path: Annotated[Path, typer.Argument(help="dataset store folder")]) -> None:
    """Verify every shard's hash and the arrays; print counts per split and class."""
    from granvae.data import check_dataset

    try:
        summary = check_dataset(path)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print_json(json.dumps(summary, default=str))


ParamsOpt = Annotated[
    Path | None,
    typer.Option(help="params.yaml over the embedded defaults (default: ./params.yaml if any)"),
]


def _train_overrides(**flags: object) -> dict:
    """CLI flags as a partial params tree: only what the user typed overrides params.yaml."""
    sections = {
        "model": ("arch", "latent_dim", "likelihood"),
        "objective": ("name", "beta", "granularity", "estimator"),
        "train": ("epochs", "batch_size", "lr", "seed", "device"),
    }
    out: dict[str, dict] = {}
    for section, keys in sections.items():
        picked = {k: flags[k] for k in keys if flags.get(k) is not None}
        if picked:
            out[section] = picked
    return out


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option(help="dataset store folder")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoint, model, status")],
    params: ParamsOpt = None,
    objective: Annotated[
        str | None, typer.Option(help="vae | beta_vae | beta_tcvae | beta_stcvae")
    ] = None,
    granularity: Annotated[int | None, typer.Option(min=1)] = None,
    beta: Annotated[float | None, typer.Option(min=0)] = None,
    latent_dim: Annotated[int | None, typer.Option(min=1)] = None,
    arch: Annotated[str | None, typer.Option(help="conv | mlp")] = None,
    likelihood: Annotated[str | None, typer.Option(help="bernoulli | gaussian")] = None,
    estimator: Annotated[str | None, typer.Option(help="mws | mss")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=2)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    resume: Annotated[bool, typer.Option(help="continue from out/checkpoint.pt")] = True,
    set_: SetOpt = None,
) -> None:
    """Train one candidate on the good training images; unset options come from params.yaml
    (the same model, objective and training settings `sweep` and `retrain` use)."""
    from pydantic import ValidationError

    from granvae.config import SettingsError, load_settings
    from granvae.data import load_dataset
    from granvae.train import train

    overrides = _train_overrides(
        arch=arch, latent_dim=latent_dim, likelihood=likelihood, name=objective, beta=beta,
        granularity=granularity, estimator=estimator, epochs=epochs, batch_size=batch_size,
        lr=lr, seed=seed, device=device,
    )  # fmt: skip
    try:
        settings = load_settings(params, overrides, set_)
        splits, meta = load_dataset(data)
        channels, size, _ = meta.observation_shape
        size = settings.tiling.tile or size
        model_cfg = type(settings.model).model_validate(
            {**settings.model.model_dump(), "in_channels": channels, "image_size": size}
        )
        result = train(
            splits["train"].images, model_cfg, settings.objective, settings.train, out,
            resume=resume, tiling=settings.tiling,
        )  # fmt: skip
    except ValidationError as err:
        _fail("; ".join(f"{_option(e['loc'])}: {e['msg']}" for e in err.errors()))
    except (SettingsError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    if result.status != "finished":
        _fail(f"training failed: {result.reason} (status in {out / 'status.json'})")
    last, cfg = result.history[-1], model_cfg
    console.print(
        f"trained {settings.objective.name} (g={settings.objective.granularity}, "
        f"beta={settings.objective.beta:g}, {cfg.likelihood} decoder) on {result.device} in "
        f"{result.seconds:.1f}s: elbo {last['elbo']:.2f}"
    )
    console.print(f"model: [bold]{result.model_dir}[/bold]  status: {out / 'status.json'}")


def _floats(text: str | None) -> list[float] | None:
    return [float(v) for v in text.split(",")] if text else None


def _ints(text: str | None) -> list[int] | None:
    return [int(v) for v in text.split(",")] if text else None


@app.command("sweep")
def sweep_cmd(
    data: Annotated[Path, typer.Option(help="dataset store folder")],
    out: Annotated[Path, typer.Option(help="sweep folder (rerun to resume)")],
    params: ParamsOpt = None,
    granularities: Annotated[
        str | None, typer.Option(help="e.g. 1,2,5,10 (default: divisors of D)")
    ] = None,
    betas: Annotated[str | None, typer.Option(help="capacities, e.g. 1,2,4,8")] = None,
    latent_dims: Annotated[str | None, typer.Option(help="e.g. 10 or 6,10")] = None,
    seeds: Annotated[str | None, typer.Option(help="e.g. 0,1")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="default: one per core")] = None,
    track: Annotated[
        bool,
        typer.Option(help="log to MLflow: each candidate's curves while it trains "
                     "(tracking.live), its metrics and plots after the sweep"),
    ] = False,  # fmt: skip
    set_: SetOpt = None,
) -> None:
    """Train and evaluate every candidate of the granularity x capacity x seed grid."""
    from granvae.config import SettingsError, load_settings
    from granvae.sweep import run_sweep

    grid = {
        "granularities": _ints(granularities),
        "betas": _floats(betas),
        "latent_dims": _ints(latent_dims),
        "seeds": _ints(seeds),
        "workers": workers,
    }
    overrides = {"sweep": {k: v for k, v in grid.items() if v is not None}}
    if epochs:
        overrides["train"] = {"epochs": epochs}
    try:
        settings = load_settings(params, overrides, set_)
        rows = run_sweep(settings, data, out, candidate_fn=_live_candidates(settings, track))
    except (SettingsError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    failed = [r["candidate_id"] for r in rows if r["status"] != "finished"]
    console.print(
        f"{len(rows) - len(failed)} candidates finished, {len(failed)} failed "
        f"{failed or ''}; results: [bold]{out / 'results.csv'}[/bold]"
    )
    if track:
        from granvae.report import build_report
        from granvae.tracking import Store, TrackingSettings, log_sweep

        build_report(out, all_candidates=True)  # every child run gets its pictures
        tracking = TrackingSettings.model_validate(settings.tracking)
        ids = log_sweep(out, experiment=tracking.experiment, store=Store(tracking))
        uri, run = ids["tracking_uri"], ids["parent_run_id"]
        console.print(f"tracked in MLflow ({uri}): parent run {run}")


def _live_candidates(settings, track: bool):
    """With --track and `tracking.live` on: the candidate runner that opens each candidate's
    MLflow run as its training starts and logs every epoch (as `retrain` does), after
    printing where to watch; else None (train without tracking)."""
    if not track:
        return None
    from granvae.tracking import TrackingSettings
    from granvae.tracking.live_sweep import tracked_candidate

    if not TrackingSettings.model_validate(settings.tracking).live:
        return None
    from pipelines.artifacts import live_runs_line

    line = live_runs_line(dict(settings.tracking))  # also creates the experiment up front
    if line:
        console.print(line, soft_wrap=True, highlight=False)
    return tracked_candidate


@app.command("report")
def report_cmd(sweep_dir: Annotated[Path, typer.Argument(help="a sweep folder")]) -> None:
    """Write report/report.html (and its PNGs) for a finished sweep."""
    from granvae.report import build_report

    try:
        path = build_report(sweep_dir)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"report: [bold]{path}[/bold]")


@app.command("export")
def export_cmd(
    sweep_dir: Annotated[Path, typer.Argument(help="a finished sweep folder")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (model.onnx + manifest.json)")],
    candidate: Annotated[str | None, typer.Option(help="default: the policy's winner")] = None,
    int8: Annotated[bool, typer.Option(help="ship int8 if it stays within tolerance")] = False,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    force: Annotated[
        bool, typer.Option(help="export a --candidate that fails the gates (loud warning)")
    ] = False,
) -> None:
    """Export a candidate to a verified ONNX edge bundle (parity-gated)."""
    from granvae.config import SettingsError, load_settings
    from granvae.export import ExportError
    from granvae.export.from_sweep import export_from_sweep
    from granvae.select import SelectionPolicy, load_rows, load_scores, select

    try:
        settings = load_settings(params, sets=set_)
        if not (sweep_dir / "results.json").is_file():
            _fail(f"{sweep_dir}: no results.json here; give a finished sweep folder "
                  "(granvae sweep --out, or runs/retrain/sweeps/<key> after a retrain)")
        rows = load_rows(sweep_dir)
        policy = SelectionPolicy.model_validate(settings.select)
        decision = select(rows, policy, load_scores(sweep_dir, rows))
        if candidate is None:
            if decision.winner is None:
                _fail(f"no candidate passed the gates: {decision.why}")
            candidate = decision.winner
        elif candidate not in decision.passed:
            _refuse_failing(decision, candidate, force)
        result = export_from_sweep(sweep_dir, candidate, out, int8=int8)
    except (SettingsError, ExportError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"exported {candidate} ({result.precision}) to [bold]{result.bundle_dir}[/bold]")
    console.print(f"parity: {result.parity.describe()}")


def _refuse_failing(decision, candidate: str, force: bool) -> None:
    """A --candidate that fails the gates (a collapsed model, a slow one) is refused; with
    --force it is exported under a loud warning naming the failed gates."""
    ids = [r["candidate_id"] for r in decision.rows]
    if candidate not in ids:
        return  # export_from_sweep names an unknown candidate itself
    row = decision.row(candidate)
    failed = [g for g in decision.gates if row.get(g) == "FAIL"]
    text = f"candidate {candidate} fails the gates ({'; '.join(failed)})"
    if not force:
        _fail(f"{text}; refusing to export it (pass --force to export it anyway)")
    console.print(f"[bold red]WARNING:[/bold red] {text}; exporting anyway (--force)",
                  soft_wrap=True)


def _mount_command_groups() -> None:
    """Tracking and pipeline commands live in their own modules; both import lazily."""
    from granvae.cli_keys import add_commands as add_keys
    from granvae.cli_monitor import add_commands as add_monitor
    from granvae.cli_pipeline import add_commands as add_pipeline
    from granvae.cli_tracking import add_commands as add_tracking

    add_tracking(app)
    add_pipeline(app)
    add_keys(app)
    add_monitor(app)
    from granvae.stack.cli import app as stack_app

    app.add_typer(stack_app, name="stack")


_mount_command_groups()


def main() -> None:  # pragma: no cover - console-script shim
    app()
