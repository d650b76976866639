"""`granvae-edge ship --to s3://bucket/prefix` against a real S3 endpoint (moto's server, as
the stack runs it): everything lands once under the prefix, a repeat copies nothing, an
interrupted ship resumes without a second copy, and nothing leaves the spool that S3 did not
confirm."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3
import numpy as np
import pytest
from edge_fixtures import free_port, noisy_gray, png_bytes, run_cli
from granvae_edge.capture import Capture, CaptureConfig
from granvae_edge.feedback import record_feedback
from granvae_edge.landing_s3 import S3Landing
from granvae_edge.ship import ship

BUCKET, PREFIX = "line-landing", "press-7"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    env = {"AWS_ACCESS_KEY_ID": "device", "AWS_SECRET_ACCESS_KEY": "device-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _fill(tmp_path, n_rejects: int = 4):
    cap = Capture(CaptureConfig(spool=str(tmp_path / "spool"), pass_share=0.0, seed=0))
    ids = [cap.submit(png_bytes(noisy_gray(np.random.default_rng(i), 20)), "reject", 9.0, 5.0)
           for i in range(n_rejects)]  # fmt: skip
    cap.submit(png_bytes(noisy_gray(np.random.default_rng(99), 20)), "pass", 1.0, 5.0)
    cap.close()
    return tmp_path / "spool", ids


def _left_in(spool) -> list[str]:
    return sorted(p.name for p in spool.rglob("*") if p.is_file() and p.name != "feedback.lock")


def test_cli_ships_to_the_bucket_once(tmp_path, s3, s3_endpoint):
    spool, ids = _fill(tmp_path)
    record_feedback(spool, {"item_id": "never-captured", "verdict": "missed_defect",
                            "defect_class": "blob"})  # fmt: skip
    res = run_cli("ship", "--spool", str(spool), "--to", f"s3://{BUCKET}/{PREFIX}",
                  "--endpoint-url", s3_endpoint)  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["items"] == 4 and report["objects_copied"] == 4 and report["feedback"] == 1
    keys = _keys(s3)
    assert sorted(k for k in keys if k.startswith(f"{PREFIX}/records/")) == sorted(
        f"{PREFIX}/records/{i}.json" for i in ids)  # fmt: skip
    assert len([k for k in keys if k.startswith(f"{PREFIX}/stream/")]) == 1
    assert f"{PREFIX}/feedback/never-captured-000.json" in keys
    rec = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/records/{ids[0]}.json")["Body"]
                     .read())  # fmt: skip
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/objects/{rec['image_sha256']}.png")
    assert head["Metadata"]["sha256"] == rec["image_sha256"]
    assert _left_in(spool) == []
    again = run_cli("ship", "--spool", str(spool), "--to", f"s3://{BUCKET}/{PREFIX}",
                    "--endpoint-url", s3_endpoint)  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["bytes_copied"] == 0
    assert _keys(s3) == keys


def test_interrupted_ship_resumes_without_a_second_copy(tmp_path, s3, s3_endpoint):
    spool, ids = _fill(tmp_path)
    dest = S3Landing.from_url(f"s3://{BUCKET}/{PREFIX}", s3_endpoint)
    assert ship(spool, dest).objects_copied == 4
    key = f"{PREFIX}/records/{ids[0]}.json"
    rec = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    image = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/objects/{rec['image_sha256']}.png")
    (spool / "items" / f"{ids[0]}.json.shipping").write_text(json.dumps(rec))  # claimed
    (spool / "items" / f"{ids[0]}.png").write_bytes(image["Body"].read())  # not yet deleted
    s3.delete_object(Bucket=BUCKET, Key=key)  # the record upload never happened
    again = ship(spool, dest)
    assert again.errors == [] and again.items == 1
    assert again.objects_copied == 0 and again.objects_already_there == 1
    assert key in _keys(s3) and _left_in(spool) == []


def test_nothing_leaves_the_spool_unless_s3_confirmed_it(tmp_path, s3):
    spool, ids = _fill(tmp_path)
    before = _left_in(spool)
    dead = S3Landing.from_url(f"s3://{BUCKET}/{PREFIX}", f"http://127.0.0.1:{free_port()}")
    report = ship(spool, dead)
    assert len(report.errors) == 5 and report.items == 0  # 4 items + the stream segment
    assert sorted(n.removesuffix(".shipping") for n in _left_in(spool)) == before
    res = run_cli("ship", "--spool", str(spool), "--to", "s3://")
    assert res.returncode == 2 and "expected s3://bucket" in res.stderr
