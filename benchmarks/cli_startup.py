"""How long the read-only registry commands take to start, and what they import.

    python benchmarks/cli_startup.py [--store DIR] [--runs 3] [--before DIR]

`granvae models` is what a person types to see the registry; it should answer in about the
time MLflow's own client takes to open the store, not pay for torch, which it never uses.
With no --store, a tiny retrain (one candidate, one epoch, 32 px; the embedded defaults:
sqlite MLflow store, local DVC remote, ephemeral Prefect API) writes a real store into a
scratch folder first (a minute or two); --store DIR reuses a project folder that has one
(its params.yaml + mlflow.db), e.g. runs/demo after `make run`.

For each command it prints the median wall time of --runs fresh processes, and, from one
`python -X importtime` run, the cumulative import time of the heavy packages and whether
torch was imported at all. --before DIR also times another copy of the granvae package
(DIR/granvae, e.g. `git archive <commit> granvae | tar -x -C DIR`), alternating run by run
with this checkout's so both see the same machine load. Results: docs/benchmarks.md
("CLI start-up").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pipeline_fixtures import ONE_CANDIDATE  # noqa: E402  (the tests' one-candidate run)

# Run the real console entry point in a fresh interpreter; sys.argv[1:] are the CLI args.
ENTRY = "import sys; from granvae.cli import main; sys.argv[0] = 'granvae'; main()"
COMMANDS = (("--help",), ("models",), ("rollback",))  # rollback: refused, nothing to undo
HEAVY = ("torch", "mlflow", "sklearn", "pandas", "scipy.stats", "prefect", "granvae.cli")


def make_store(folder: Path) -> None:
    """A project folder with a registered version: `granvae retrain` on tiny params."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(ONE_CANDIDATE, sort_keys=False))
    cmd = [sys.executable, "-c", ENTRY, "retrain", "--data-repo", str(folder / "data-repo"),
           "--set", f"pipeline.work_dir={folder / 'work'}"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"tiny retrain failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    print(f"store: tiny retrain into {folder} took {time.perf_counter() - started:.0f} s")


def _env(code: Path | None = None) -> dict[str, str]:
    """This checkout's granvae, or the copy under `code` (PYTHONPATH beats the editable
    install's finder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", **({"PYTHONPATH": str(code)} if code else {})}


def once_s(folder: Path, args: tuple[str, ...], code: Path | None) -> float:
    """Wall seconds of one fresh `granvae ARGS` process started in `folder`."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=folder, env=_env(code),
                   capture_output=True, check=False)  # fmt: skip
    return time.perf_counter() - started


def import_times(folder: Path, args: tuple[str, ...], code: Path | None) -> dict[str, float]:
    """Seconds of the largest cumulative import under each HEAVY package (the package itself
    or a submodule: `from scipy import stats` is listed by its submodules); absent: not
    imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", ENTRY, *args],
                          cwd=folder, env=_env(code), capture_output=True, text=True)  # fmt: skip
    out: dict[str, float] = {}
    line = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$")
    for text in done.stderr.splitlines():
        match = line.match(text)
        name = match.group(3) if match else ""
        for heavy in HEAVY:
            if name == heavy or name.startswith(heavy + "."):
                out[heavy] = max(out.get(heavy, 0.0), int(match.group(1)) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a project folder with params + mlflow.db")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a folder holding another granvae/ to compare")
    args = parser.parse_args()
    scratch = None
    folder = args.store
    if folder is None:
        scratch = Path(tempfile.mkdtemp(prefix="granvae-cli-startup-"))
        folder = scratch / "project"
        make_store(folder)
    codes = {"before": args.before, "now": None} if args.before else {"now": None}
    try:
        print(f"{'code':6} {'command':24} {'median s':>8}  {'runs (s)':18} imports (cumulative s)")
        for cmd in COMMANDS:
            times: dict[str, list[float]] = {label: [] for label in codes}
            for _ in range(args.runs):  # alternate, so both see the same load
                for label, code in codes.items():
                    times[label].append(once_s(folder, cmd, code))
            for label, code in codes.items():
                imports = import_times(folder, cmd, code)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(imports.items()))
                torch = "" if "torch" in imports else "  [torch not imported]"
                runs = " ".join(f"{t:.2f}" for t in times[label])
                median, name = statistics.median(times[label]), " ".join(cmd)
                print(f"{label:6} granvae {name:16} {median:8.2f}  {runs:18} {shown}{torch}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
