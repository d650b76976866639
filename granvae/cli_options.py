"""Options every granvae command that reads params shares, so they read the same way."""

from __future__ import annotations

from typing import Annotated

import typer

SET_HELP = (
    "override any param, e.g. --set train.epochs=1 or a gate by name: "
    "--set select.gates.latency_p95_b1_ms=500 (repeatable; unknown keys are refused)"
)
SetOpt = Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)]
