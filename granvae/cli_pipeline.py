"""`granvae retrain` and `granvae schedule`: the Prefect flow behind the granvae CLI.

granvae never imports prefect at module level (the library must stay usable without an
orchestrator), so these commands import `pipelines` inside their bodies only. Both take
the same options; a bad option or params file ends in one error line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from granvae.cli_options import SetOpt

PARAMS_HELP = "params.yaml over the embedded defaults (default: ./params.yaml if present)"
console = Console(stderr=True)

ParamsOpt = Annotated[Path | None, typer.Option(help=PARAMS_HELP)]
ProfileOpt = Annotated[str | None, typer.Option(help="a params.yaml profile: quick | full")]
LandingOpt = Annotated[
    Path | None, typer.Option(help="MVTec-style landing folder (default: the generator)")
]
RepoOpt = Annotated[
    Path | None,
    typer.Option(help="git repo of the DVC-tracked snapshot (default: <work_dir>/data-repo)"),
]
DaskOpt = Annotated[
    str | None, typer.Option(help="tcp://scheduler:8786, or 'local' for a LocalCluster")
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _known_errors() -> tuple[type[BaseException], ...]:
    from granvae.config import SettingsError
    from pipelines.flow import RetrainRefused
    from pipelines.versioning import VersioningError

    return (SettingsError, RetrainRefused, VersioningError, ValueError, FileNotFoundError)


def _strs(*paths: Path | None) -> list[str | None]:
    return [str(p) if p else None for p in paths]


def retrain(
    params: ParamsOpt = None,
    profile: ProfileOpt = None,
    landing: LandingOpt = None,
    data_repo: RepoOpt = None,
    dask_address: DaskOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ingest, validate, version (DVC), sweep, select, export, register: one flow run."""
    from pipelines.cli import retrain_main

    try:
        retrain_main(*_strs(params), profile, *_strs(landing, data_repo), dask_address, set_)
    except _known_errors() as err:
        _fail(str(err))


def schedule(
    cron: Annotated[str, typer.Option(help='cron line, e.g. "0 2 * * *"')] = "0 2 * * *",
    params: ParamsOpt = None,
    profile: ProfileOpt = None,
    landing: LandingOpt = None,
    data_repo: RepoOpt = None,
    dask_address: DaskOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve the retrain flow on a cron schedule (embedded Prefect; Ctrl-C stops)."""
    from pipelines.cli import schedule_main

    try:
        schedule_main(cron, *_strs(params), profile, *_strs(landing, data_repo), dask_address, set_)
    except _known_errors() as err:
        _fail(str(err))


def add_commands(app: typer.Typer) -> None:
    """Mount `retrain` and `schedule` on the granvae app."""
    app.command("retrain")(retrain)
    app.command("schedule")(schedule)
