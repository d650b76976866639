"""`granvae retrain` and `granvae schedule`: the Prefect flow behind the granvae CLI.

granvae never imports prefect at module level (the library must stay usable without an
orchestrator), so these commands import `pipelines` inside their bodies only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PARAMS_HELP = "params.yaml with every default (plus pipeline: and profiles:)"
SET_HELP = "override any param, e.g. --set train.epochs=1 (repeatable)"


def retrain(
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    profile: Annotated[str | None, typer.Option(help="quick | full")] = None,
    landing: Annotated[
        Path | None, typer.Option(help="MVTec-style landing folder (default: the generator)")
    ] = None,
    data_repo: Annotated[
        Path | None, typer.Option(help="git repository for the DVC-tracked snapshot")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="tcp://scheduler:8786, or 'local' for a LocalCluster")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Ingest, validate, version (DVC), sweep, select, export, register: one flow run."""
    from pipelines.cli import retrain_main

    retrain_main(
        str(params),
        profile,
        str(landing) if landing else None,
        str(data_repo) if data_repo else None,
        dask_address,
        set_,
    )


def schedule(
    cron: Annotated[str, typer.Option(help='cron line, e.g. "0 2 * * *"')] = "0 2 * * *",
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    profile: Annotated[str | None, typer.Option(help="quick | full")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Serve the retrain flow on a cron schedule (embedded Prefect; Ctrl-C stops)."""
    from pipelines.cli import schedule_main

    schedule_main(cron, str(params), profile, set_)


def add_commands(app: typer.Typer) -> None:
    """Mount `retrain` and `schedule` on the granvae app."""
    app.command("retrain")(retrain)
    app.command("schedule")(schedule)
