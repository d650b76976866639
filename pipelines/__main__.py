"""`python -m pipelines retrain|schedule ...`: the flow without the granvae CLI."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("retrain", "schedule"):
        p = sub.add_parser(name)
        p.add_argument("--params", default=None, help="default: ./params.yaml over the embedded")
        p.add_argument("--profile", default=None, help="quick | full (params.yaml profiles:)")
        p.add_argument("--set", dest="sets", action="append", help="key.path=value override")
        p.add_argument("--landing", default=None, help="MVTec-style landing folder")
        p.add_argument("--data-repo", default=None, help="git repo for the DVC snapshot")
        p.add_argument("--dask-address", default=None, help="tcp://host:8786 or 'local'")
        if name == "schedule":
            p.add_argument("--cron", default="0 2 * * *")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pipelines import cli

    if args.command == "retrain":
        cli.retrain_main(
            args.params, args.profile, args.landing, args.data_repo, args.dask_address, args.sets
        )
    else:
        cli.schedule_main(
            args.cron, args.params, args.profile, args.landing, args.data_repo,
            args.dask_address, args.sets,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
