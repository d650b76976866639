"""`granvae ...`: thin Typer entry points; each command calls one library function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Make, load and check data sets.")
app.add_typer(data_app, name="data")
console = Console()


def _option(loc: tuple) -> str:
    """A pydantic field path as the CLI option a user typed: latent_dim -> --latent-dim."""
    return "--" + str(loc[-1]).replace("_", "-")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


@data_app.command("make")
def data_make(
    kind: Annotated[str, typer.Argument(help="shapes | surfaces")],
    out: Annotated[Path, typer.Option(help="dataset store folder to write")],
    n: Annotated[int, typer.Option(help="training images")] = 2048,
    n_val: Annotated[int, typer.Option(help="held-out good images")] = 256,
    n_test: Annotated[int, typer.Option(help="test images (surfaces: half defects)")] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    image_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Generate a synthetic data set and write it as a dataset store."""
    from granvae.data import generate, write_dataset

    try:
        splits, meta = generate(kind, n, n_val, n_test, seed, image_size=image_size)
        manifest = write_dataset(out, splits, meta)
    except ValueError as err:
        _fail(str(err))
    counts = {name: s["count"] for name, s in manifest["splits"].items()}
    console.print(f"wrote {kind} data set to [bold]{out}[/bold]: {counts}")


@data_app.command("import")
def data_import(
    root: Annotated[Path, typer.Argument(help="MVTec-AD style folder")],
    out: Annotated[Path, typer.Option(help="dataset store folder to write")],
    image_size: Annotated[int, typer.Option()] = 64,
    channels: Annotated[int, typer.Option(help="1 = grayscale, 3 = RGB")] = 1,
) -> None:
    """Validate an MVTec-style folder and write it as a dataset store."""
    from granvae.data import load_mvtec, write_dataset

    try:
        splits, meta = load_mvtec(root, image_size=image_size, channels=channels)
        manifest = write_dataset(out, splits, meta)
    except ValueError as err:
        _fail(str(err))
    counts = {name: s["count"] for name, s in manifest["splits"].items()}
    console.print(f"imported {root} into [bold]{out}[/bold]: {counts}")


@data_app.command("check")
def data_check(path: Annotated[Path, typer.Argument(help="dataset store folder")]) -> None:
    """Verify every shard's hash and the arrays; print counts per split and class."""
    from granvae.data import check_dataset

    try:
        summary = check_dataset(path)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print_json(json.dumps(summary, default=str))


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option(help="dataset store folder")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoint, model, status")],
    objective: Annotated[str, typer.Option(help="vae | beta_vae | beta_tcvae | beta_stcvae")] = (
        "beta_stcvae"
    ),
    granularity: Annotated[int, typer.Option(min=1)] = 1,
    beta: Annotated[float, typer.Option(min=0)] = 1.0,
    latent_dim: Annotated[int, typer.Option(min=1)] = 10,
    arch: Annotated[str, typer.Option(help="conv | mlp")] = "conv",
    likelihood: Annotated[str, typer.Option(help="bernoulli | gaussian")] = "bernoulli",
    estimator: Annotated[str, typer.Option(help="mws | mss")] = "mws",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    resume: Annotated[bool, typer.Option(help="continue from out/checkpoint.pt")] = True,
) -> None:
    """Train one candidate on the good training images of a dataset store."""
    from pydantic import ValidationError

    from granvae.data import load_dataset
    from granvae.models import ModelConfig
    from granvae.objectives import ObjectiveConfig
    from granvae.train import TrainConfig, train

    try:
        splits, meta = load_dataset(data)
        channels, size, _ = meta.observation_shape
        model_cfg = ModelConfig(
            arch=arch,
            in_channels=channels,
            image_size=size,
            latent_dim=latent_dim,
            likelihood=likelihood,
        )
        obj = ObjectiveConfig(
            name=objective, beta=beta, granularity=granularity, estimator=estimator
        )
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
        result = train(splits["train"].images, model_cfg, obj, cfg, out, resume=resume)
    except ValidationError as err:
        _fail("; ".join(f"{_option(e['loc'])}: {e['msg']}" for e in err.errors()))
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    if result.status != "finished":
        _fail(f"training failed: {result.reason} (status in {out / 'status.json'})")
    last = result.history[-1]
    console.print(f"trained on {result.device} in {result.seconds:.1f}s: elbo {last['elbo']:.2f}")
    console.print(f"model: [bold]{result.model_dir}[/bold]  status: {out / 'status.json'}")


def _floats(text: str | None) -> list[float] | None:
    return [float(v) for v in text.split(",")] if text else None


def _ints(text: str | None) -> list[int] | None:
    return [int(v) for v in text.split(",")] if text else None


@app.command("sweep")
def sweep_cmd(
    data: Annotated[Path, typer.Option(help="dataset store folder")],
    out: Annotated[Path, typer.Option(help="sweep folder (rerun to resume)")],
    params: Annotated[Path, typer.Option(help="params.yaml with every default")] = Path(
        "params.yaml"
    ),
    granularities: Annotated[
        str | None, typer.Option(help="e.g. 1,2,5,10 (default: divisors of D)")
    ] = None,
    betas: Annotated[str | None, typer.Option(help="capacities, e.g. 1,2,4,8")] = None,
    latent_dims: Annotated[str | None, typer.Option(help="e.g. 10 or 6,10")] = None,
    seeds: Annotated[str | None, typer.Option(help="e.g. 0,1")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="default: one per core")] = None,
    track: Annotated[bool, typer.Option(help="log runs to MLflow afterwards")] = False,
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
        settings = load_settings(params if params.exists() else None, overrides)
        rows = run_sweep(settings, data, out)
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
    params: Annotated[Path, typer.Option(help="params.yaml (selection policy)")] = Path(
        "params.yaml"
    ),
) -> None:
    """Export a candidate to a verified ONNX edge bundle (parity-gated)."""
    from granvae.config import SettingsError, load_settings
    from granvae.export import ExportError
    from granvae.export.from_sweep import export_from_sweep
    from granvae.select import SelectionPolicy, load_rows, select

    try:
        if candidate is None:
            settings = load_settings(params if params.exists() else None)
            decision = select(load_rows(sweep_dir), SelectionPolicy.model_validate(settings.select))
            if decision.winner is None:
                _fail(f"no candidate passed the gates: {decision.why}")
            candidate = decision.winner
        result = export_from_sweep(sweep_dir, candidate, out, int8=int8)
    except (SettingsError, ExportError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"exported {candidate} ({result.precision}) to [bold]{result.bundle_dir}[/bold]")
    console.print(f"parity: {result.parity.describe()}")


def _mount_command_groups() -> None:
    """Tracking and pipeline commands live in their own modules; both import lazily."""
    from granvae.cli_pipeline import add_commands as add_pipeline
    from granvae.cli_tracking import add_commands as add_tracking

    add_tracking(app)
    add_pipeline(app)
    from granvae.stack.cli import app as stack_app

    app.add_typer(stack_app, name="stack")


_mount_command_groups()


def main() -> None:  # pragma: no cover - console-script shim
    app()
