"""The production stack on one host: PostgreSQL, an S3 endpoint, `mlflow server` on Postgres
with proxied S3 artifacts, a Prefect server on Postgres, a process work pool and one worker.

`granvae stack up|down|status|env` (granvae/stack/cli.py) drives it; every service is a
plain process started here, listening on 127.0.0.1 only, with its log and data under one
folder (`--root`, default `runs/stack`). Why processes and not containers: the factory hosts
this targets run Debian with the packages installed, and the tests start exactly what a
user starts. granvae never imports prefect or mlflow: the services are started as commands.
"""

from granvae.stack.config import StackError, StackSettings
from granvae.stack.lifecycle import down, status, up

__all__ = ["StackError", "StackSettings", "down", "status", "up"]
