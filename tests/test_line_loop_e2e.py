"""A simulated line, end to end, every part real: the device, the operator, ship, the monitor,
the retrain trigger, the data stage of the triggered retrain (git + DVC).

- The device is ``granvae-edge serve`` in its own process, capture on, serving the tiny ONNX
  fixture bundle (onnxruntime); the process refuses and records any import of torch, granvae,
  mlflow or prefect, and the test asserts there was none.
- A camera script sends parts: day 1 good parts under steady lighting (a few real defects);
  day 2, after a device restart, the lamp brightens (LIGHTING_SHIFT grey levels) and the same
  good parts start to raise alarms. An operator script answers every alarm over
  ``POST /feedback``: real defect (class ``blotch``) for the parts that have one, false alarm
  for the rest.
- ``granvae-edge ship`` (its own process, same import guard) moves the spool to the landing
  zone after each day.
- The line-monitor flow (real Prefect run on the session's harness API) stays quiet on day 1
  and starts nothing; on day 2 it fires on the alarm rate inside the drifted parts, names the
  latent shift and the confirmed false alarms, ingests the landing zone into the line's
  landing folder and starts the line's retrain deployment (a real deployment; no worker, so
  the run stays scheduled) with ``pipeline.landing`` pointed at that folder and the line's own
  overrides kept. A second pass over the same drift returns the same run.
- The full retrain (training a sweep) is not run here: tests/test_pipeline_flow.py covers it.
  What the triggered run does first is: its data stage (ingest, validate, version with real
  git + DVC) is run with the triggered run's own parameters, and the versioned snapshot holds,
  for every image that came from the line, its device, bundle revision and model sha, the
  device's verdict and the operator's verdict, read back through DVC at the committed revision.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from edge_fixtures import edge_env, expected_score, free_port, http, make_bundle, png_bytes
from pipeline_fixtures import tiny_params, write_params

LINE, DEVICE, TOKEN = "press-7", "cam-3", "operator-token-0123456789"
LIGHTING_SHIFT = 14.0  # grey levels the lamp adds on day 2
JITTER, NOISE = 8.0, 30.0  # per-part lighting sd; pixel noise half-width
DAY1, DAY2, BASELINE, WINDOW = 400, 200, 200, 200
DEFECT_EVERY = 97  # day 1 and day 2 each see a few real defects
GUARD = """
import importlib.abc, os, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "granvae", "mlflow", "prefect"}:
            with open(os.environ["IMPORT_LOG"], "a") as fh:
                fh.write(name + "\\n")
            raise ImportError(f"{name}: not on the device")
        return None
sys.meta_path.insert(0, _Refuse())
from granvae_edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _part(rng: np.random.Generator, shift: float, defect: bool) -> np.ndarray:
    """One 32x32 grey part: lamp level (+ jitter), sensor noise, maybe a dark blotch."""
    level = 128.0 + shift + rng.normal(0.0, JITTER)
    image = np.clip(level + rng.uniform(-NOISE, NOISE, (32, 32)), 0, 255).astype(np.uint8)
    if defect:
        r, c = rng.integers(2, 22, 2)
        image[r : r + 9, c : c + 9] = 0
    return image


def _calibrated_threshold() -> float:
    """The 99th percentile of good parts' scores (false-alarm rate 1%), as calibrate would."""
    rng = np.random.default_rng(1234)
    return float(np.quantile([expected_score(_part(rng, 0.0, False)) for _ in range(4000)], 0.99))


def _edge(tmp: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env_log = tmp / "edge-imports.log"
    return [sys.executable, "-c", GUARD, *args], {**edge_env(), "IMPORT_LOG": str(env_log)}


class Device:
    """`granvae-edge serve --capture` as its own process; stop() is a clean SIGTERM."""

    def __init__(self, tmp: Path, bundle: Path, spool: Path) -> None:
        self.port = free_port()
        (tmp / "token").write_text(TOKEN + "\n")
        cmd, env = _edge(tmp, "serve", "--bundle", str(bundle), "--port", str(self.port),
                         "--threads", "1", "--capture", str(spool), "--pass-share", "0.5",
                         "--capture-queue", "4096",
                         "--device-name", DEVICE, "--line", LINE,
                         "--feedback-token-file", str(tmp / "token"))  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", self.url + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"device did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        assert self.proc.returncode == 0, self.proc.stderr.read()


def _operator(url: str, item_id: str, defect: bool) -> None:
    verdict = {"item_id": item_id, "operator": "ana"}
    verdict |= {"verdict": "real_defect", "defect_class": "blotch"} if defect else {
        "verdict": "false_alarm"}  # fmt: skip
    req = urllib.request.Request(url + "/feedback", data=json.dumps(verdict).encode(),
                                 method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def _run_day(device: Device, rng: np.random.Generator, n: int, shift: float) -> dict:
    """The camera sends n parts; the operator answers every alarm. Returns what happened."""
    seen = {"ids": [], "alarms": 0, "defects": []}
    for k in range(n):
        defect = k % DEFECT_EVERY == DEFECT_EVERY // 2
        code, body = http("POST", device.url + "/score", png_bytes(_part(rng, shift, defect)))
        assert code == 200, body
        seen["ids"].append(body["item_id"])
        if body["decision"]:
            seen["alarms"] += 1
            _operator(device.url, body["item_id"], defect)
        if defect:
            seen["defects"].append(body["item_id"])
    return seen


def _ship(tmp: Path, spool: Path, landing: Path) -> dict:
    cmd, env = _edge(tmp, "ship", "--spool", str(spool), "--to", str(landing))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _flow_runs(deployment_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read():
        async with get_client() as client:
            only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            return await client.read_flow_runs(deployment_filter=only)

    return run_coro_as_sync(read())


def test_simulated_line_drift_triggers_a_retrain_on_what_the_line_saw(tmp_path, prefect_harness):
    from granvae.monitor.records import read_stream
    from pipelines import tasks
    from pipelines.config import load_run_config
    from pipelines.monitor import monitor_line
    from pipelines.schedule import scheduled_retrain

    bundle = make_bundle(tmp_path / "bundle", threshold=_calibrated_threshold())
    manifest = json.loads((bundle / "manifest.json").read_text())
    spool, landing, folder = tmp_path / "spool", tmp_path / "landing", tmp_path / "line-new"
    params = write_params(tmp_path / "params.yaml", tiny_params(tmp_path, "sqlite:///unused.db"))
    line_overrides = {"pipeline": {"data_repo": str(tmp_path / "data-repo"),
                                   "work_dir": str(tmp_path / "work")}}  # fmt: skip
    dep_id = scheduled_retrain.to_deployment(
        name=f"retrain-{LINE}",
        parameters={"params": str(params), "profile": None, "overrides": line_overrides},
    ).apply()
    monitor = {"groups": manifest["groups"], "baseline": BASELINE, "window": WINDOW,
               "retrain_deployment": f"scheduled-retrain/retrain-{LINE}",
               "ingest_into": str(folder), "frame_hw": [32, 32]}  # fmt: skip
    rng = np.random.default_rng(7)

    # Day 1: steady lighting. The monitor reads it and stays quiet; nothing is started.
    device = Device(tmp_path, bundle, spool)
    day1 = _run_day(device, rng, DAY1, 0.0)
    device.stop()
    assert _ship(tmp_path, spool, landing)["items"] > 0
    quiet = monitor_line(str(landing), **monitor)
    assert not quiet["fired"] and quiet["reasons"] == [], quiet["reasons"]
    assert "retrain_run_id" not in quiet and _flow_runs(dep_id) == []
    assert not folder.exists()  # a quiet monitor ingests nothing

    # Day 2: the device restarts, the lamp brightens, good parts start to raise alarms.
    device = Device(tmp_path, bundle, spool)
    day2 = _run_day(device, rng, DAY2, LIGHTING_SHIFT)
    device.stop()
    assert day2["alarms"] > 4 * day1["alarms"] * DAY2 / DAY1  # the drift is real
    _ship(tmp_path, spool, landing)
    assert not any(spool.glob("items/*")) and not any(spool.glob("stream/*"))  # all shipped
    assert not (tmp_path / "edge-imports.log").exists()  # the device never loaded torch & co
    shipped = read_stream(landing).ids  # every inspection of both days, once, across the restart
    assert sorted(shipped) == sorted(day1["ids"] + day2["ids"])

    fired = monitor_line(str(landing), **monitor)
    assert fired["fired"], fired
    tests = {r.split(":", 1)[0] for r in fired["reasons"]}
    assert tests == {"alarm rate", "score_shift", "confirmed_false_alarm_rate", "latent shift"}
    first = fired["cusum"]["fired_at_item"]
    assert first in day2["ids"]  # fired inside the drift, not before it
    assert day2["ids"].index(first) < 60  # within 60 parts of the lamp change
    assert fired["moved"]["p_value"] < 1e-6

    runs = _flow_runs(dep_id)
    assert [str(r.id) for r in runs] == [fired["retrain_run_id"]]
    run = runs[0]
    assert {"monitor", "monitor:alarm rate", "monitor:latent shift"} <= set(run.tags)
    overrides = run.parameters["overrides"]
    assert overrides["pipeline"]["landing"] == str(folder)  # retrain on what the line saw
    assert overrides["pipeline"]["data_repo"] == line_overrides["pipeline"]["data_repo"]
    assert run.parameters["params"] == str(params)
    again = monitor_line(str(landing), **monitor)  # the next scheduled pass, same drift
    assert again["retrain_run_id"] == fired["retrain_run_id"]
    assert len(_flow_runs(dep_id)) == 1

    # What the triggered retrain does first: its data stage, with the run's own parameters.
    cfg = load_run_config(run.parameters["params"], None, overrides)
    staging = str(tmp_path / "work" / "staging" / "dataset")
    tasks.validate(tasks.ingest(cfg.settings, cfg.pipeline.landing, staging))
    snap = tasks.version_data(staging, cfg.pipeline, cfg.resolved())
    _assert_origins_versioned(snap, fired["ingested"], day1, day2, manifest)


def _assert_origins_versioned(snap: dict, ingested: dict, day1: dict, day2: dict,
                              manifest: dict) -> None:  # fmt: skip
    """Every line image in the DVC snapshot has its origin, read back at the committed rev."""
    from dvc.api import DVCFileSystem

    from granvae.data import load_dataset
    from granvae.data.provenance import read_provenance

    repo, rel = Path(snap["repo"]), Path(snap["snapshot"]).relative_to(snap["repo"])
    fs = DVCFileSystem(str(repo), rev=snap["git_sha"])
    committed = fs.read_text(f"{rel.as_posix()}/provenance.jsonl")
    assert committed == (Path(snap["snapshot"]) / "provenance.jsonl").read_text()
    origins = read_provenance(snap["snapshot"])
    splits, _ = load_dataset(snap["snapshot"])
    names = sorted(n for split in splits.values() for n in split.names)
    assert names == sorted(origins) and len(names) == ingested["added"]
    sent = set(day1["ids"]) | set(day2["ids"])
    for name, row in origins.items():
        assert row["item_id"] in sent and row["device"] == DEVICE and row["line"] == LINE
        assert row["model_sha256"] == manifest["model_sha256"]
        assert row["revision"] == manifest["revision"]
        assert row["verdict"] in ("pass", "reject")
        labels = {v["verdict"] for v in row["feedback"]}
        if name.startswith("test/blotch/"):
            assert row["verdict"] == "reject" and labels == {"real_defect"}
            assert row["item_id"] in day1["defects"] + day2["defects"]
        elif row["verdict"] == "reject":  # an alarm in the good images: the operator overruled it
            assert labels == {"false_alarm"}
            assert all(v["operator"] == "ana" for v in row["feedback"])
        else:
            assert labels == set()
    blotches = [n for n in names if n.startswith("test/blotch/")]
    assert len(blotches) == len(day1["defects"]) + len(day2["defects"])
    overruled = [r for r in origins.values() if r["verdict"] == "reject" and r["feedback"]
                 and r["feedback"][0]["verdict"] == "false_alarm"]  # fmt: skip
    assert len(overruled) >= 10  # the drifted alarms are now good training images
