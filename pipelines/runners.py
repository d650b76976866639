"""The sweep's task runner is configuration, not code.

- default: Prefect's ProcessPoolTaskRunner, one process per concurrent candidate. Why not
  threads: training draws its reparameterisation noise from torch's *global* RNG, so two
  candidates training in threads of one process interleave their draws and neither is
  reproducible from its seed. Separate processes keep every candidate bit-reproducible
  (and the same as on Dask), and a crash in one candidate cannot take the flow down.
- `dask: local`: prefect-dask's DaskTaskRunner on a LocalCluster (processes, 1 thread each).
- `dask: tcp://host:8786` (or `--dask-address`): the same runner attached to a running
  cluster, for sweeps that outgrow one machine.

`torch_threads` splits the cores between concurrent candidates so they do not fight.
"""

from __future__ import annotations

import os
import signal

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from pipelines.config import PipelineConfig


def ignore_interrupts() -> None:
    """Run in each candidate worker: Ctrl-C reaches the whole process group, but the CLI
    owns the interrupt (pipelines.interrupt) and stops the workers itself. A worker that
    took the SIGINT too raised KeyboardInterrupt mid-epoch and Prefect logged its traceback
    before the CLI could stop it (seen on a loaded machine)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def local_workers(cfg: PipelineConfig, n_candidates: int) -> int:
    """One worker per core by default, never more workers than candidates."""
    wanted = cfg.max_workers or (os.cpu_count() or 1)
    return max(1, min(wanted, n_candidates))


def torch_threads(workers: int) -> int:
    """Intra-op threads per candidate so that workers x threads = cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def make_runner(cfg: PipelineConfig, n_candidates: int) -> TaskRunner:
    """The task runner named by `pipeline.dask` (None, "local" or a scheduler address)."""
    if not cfg.dask:
        return ProcessPoolTaskRunner(
            max_workers=local_workers(cfg, n_candidates), initializer=ignore_interrupts
        )
    from prefect_dask import DaskTaskRunner

    if cfg.dask == "local":
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": cfg.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    return DaskTaskRunner(address=cfg.dask)


def runner_workers(cfg: PipelineConfig, n_candidates: int) -> int:
    """How many candidates run at once (sets torch threads); a remote cluster decides itself."""
    if not cfg.dask:
        return local_workers(cfg, n_candidates)
    return cfg.dask_workers if cfg.dask == "local" else 1


def cuda_device(index: int, n_gpus: int) -> str | None:
    """On a multi-GPU host, candidate i trains on GPU i mod n (None on a CPU host)."""
    return f"cuda:{index % n_gpus}" if n_gpus > 0 else None
