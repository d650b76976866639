"""Line loop on the device: capture, spool bounds, power-cut recovery, feedback, ship.

Real files, real threads, a real HTTP server on loopback; nothing mocked but a stalled disk
(an Event holding the writer) to show that scoring never waits for it.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from edge_fixtures import http, make_bundle, noisy_gray, png_bytes, run_cli
from granvae_edge.capture import Capture, CaptureConfig
from granvae_edge.feedback import FeedbackError, record_feedback
from granvae_edge.feedback_token import authorised, load_token
from granvae_edge.server import make_server
from granvae_edge.ship import ship
from granvae_edge.spool import Spool, SpoolBounds

IMG = png_bytes(noisy_gray(np.random.default_rng(0), 20))
TOKEN = "s3cret-token-for-tests"


def _capture(tmp_path, **kw) -> Capture:
    return Capture(CaptureConfig(spool=str(tmp_path / "spool"), seed=0, segment_seconds=60, **kw))


def _stream(spool) -> list[dict]:
    return [json.loads(x) for f in sorted(spool.glob("stream/*.jsonl"))
            for x in f.read_text().splitlines()]  # fmt: skip


def _records(spool) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in spool.glob("items/*.json")}


def test_rejects_always_kept_passes_by_share_every_inspection_streamed(tmp_path):
    cap = _capture(tmp_path, pass_share=0.25, queue_size=1000)
    model = {"model_sha256": "abc", "revision": 3}
    verdicts = ["reject" if i % 10 == 0 else "pass" for i in range(400)]
    ids = [cap.submit(IMG, v, float(i), 5.0, latent_mean=[i, -i], model=model)
           for i, v in enumerate(verdicts)]  # fmt: skip
    cap.close()
    spool = tmp_path / "spool"
    stream, records = _stream(spool), _records(spool)
    assert [r["id"] for r in stream] == ids  # every inspection, in order, once
    rejects = {i for i, v in zip(ids, verdicts, strict=True) if v == "reject"}
    assert rejects <= set(records)
    kept_passes = len(records) - len(rejects)
    assert 0.15 * 360 < kept_passes < 0.35 * 360
    rec = records[ids[0]]
    assert rec["verdict"] == "reject" and rec["score"] == 0.0 and rec["threshold"] == 5.0
    assert rec["model_sha256"] == "abc" and rec["revision"] == 3 and rec["feedback"] == []
    assert (spool / "items" / f"{ids[0]}.png").read_bytes() == IMG
    assert stream[1]["latent_mean"] == [1.0, -1.0]
    assert sum(r["captured"] for r in stream) == len(records)


def test_full_spool_drops_passes_before_rejects(tmp_path):
    cap = _capture(tmp_path, pass_share=1.0, bounds=SpoolBounds(max_files=4))
    passes = [cap.submit(IMG, "pass", 1.0, 5.0) for _ in range(3)]
    rejects = [cap.submit(IMG, "reject", 9.0, 5.0) for _ in range(5)]
    late_pass = cap.submit(IMG, "pass", 1.0, 5.0)
    cap.close()
    kept = set(_records(tmp_path / "spool"))
    assert kept == set(rejects[:4])  # passes evicted first, then the 5th reject has no room
    assert not kept & set(passes) and late_pass not in kept
    snap = cap.snapshot()
    assert snap["evicted"] == {"pass": 3}
    assert snap["dropped"] == {"reject": 1, "pass": 1}


def test_submit_never_waits_for_a_stalled_disk(tmp_path):
    cap = _capture(tmp_path, pass_share=1.0, queue_size=4)
    release = threading.Event()
    real_add = cap.spool.add_item
    cap.spool.add_item = lambda *a: release.wait(10) and real_add(*a)  # a disk that hangs
    for _ in range(200):
        cap.submit(IMG, "reject", 9.0, 5.0)
    release.set()  # the 200 submits all returned while the writer was stuck
    cap.close()
    counts = cap.snapshot()["counts"]
    assert counts["queue_full_reject"] >= 190  # a blocking put would have dropped none
    assert counts["inspected_reject"] + counts["queue_full_reject"] == 200
    stream = _stream(tmp_path / "spool")  # the monitor still sees every inspection
    assert len(stream) == 200 and len({r["id"] for r in stream}) == 200
    assert sum(not r["captured"] for r in stream) == counts["queue_full_reject"]


def test_power_cut_leftovers_are_removed_on_open(tmp_path):
    cap = _capture(tmp_path, pass_share=1.0)
    whole = cap.submit(IMG, "reject", 9.0, 5.0)
    cap.close()
    items = tmp_path / "spool" / "items"
    (items / "20260101T000000-1-000000001.png").write_bytes(IMG)  # image, record never written
    (items / "20260101T000000-1-000000002.json.tmp").write_text("{\"half")
    spool = Spool(tmp_path / "spool")
    assert spool.recovered == 2
    assert sorted(p.name for p in items.iterdir()) == [f"{whole}.json", f"{whole}.png"]
    assert spool.usage()["files"] == 1


def test_feedback_joins_the_record_or_stands_alone(tmp_path):
    cap = _capture(tmp_path, pass_share=0.0)
    alarm, passed = cap.submit(IMG, "reject", 9.0, 5.0), cap.submit(IMG, "pass", 1.0, 5.0)
    cap.close()
    spool = tmp_path / "spool"
    out = record_feedback(spool, {"item_id": alarm, "verdict": "false_alarm"})
    assert out["stored"] == "record"
    assert _records(spool)[alarm]["feedback"][0]["verdict"] == "false_alarm"
    out = record_feedback(spool, {"item_id": passed, "verdict": "missed_defect",
                                  "defect_class": "scratch"})  # fmt: skip
    assert out["stored"] == "standalone"
    assert json.loads((spool / "feedback" / f"{passed}-000.json").read_text())["defect_class"] \
        == "scratch"  # fmt: skip
    with pytest.raises(FeedbackError, match="defect_class"):
        record_feedback(spool, {"item_id": alarm, "verdict": "real_defect"})
    with pytest.raises(FeedbackError, match="item_id"):
        record_feedback(spool, {"item_id": "../etc", "verdict": "false_alarm"})


def test_token_file_and_constant_time_check(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    token = load_token(path)
    assert authorised(f"Bearer {TOKEN}", token)
    assert not authorised(f"Bearer {TOKEN}x", token) and not authorised(None, token)
    path.write_text("short")
    with pytest.raises(ValueError, match="at least 16"):
        load_token(path)


def _fill(tmp_path, n_rejects: int = 5) -> tuple:
    cap = _capture(tmp_path, pass_share=0.0)
    ids = [cap.submit(png_bytes(noisy_gray(np.random.default_rng(i), 20)), "reject", 9.0, 5.0)
           for i in range(n_rejects)]  # fmt: skip
    cap.submit(IMG, "pass", 1.0, 5.0)
    cap.close()
    return tmp_path / "spool", ids


def test_ship_moves_everything_once_and_empties_the_spool(tmp_path):
    spool, ids = _fill(tmp_path)
    dest = tmp_path / "landing"
    report = ship(spool, dest)
    assert report.errors == [] and report.items == 5 and report.segments == 1
    assert sorted(p.stem for p in (dest / "records").glob("*.json")) == sorted(ids)
    for rid in ids:
        rec = json.loads((dest / "records" / f"{rid}.json").read_text())
        assert (dest / "objects" / f"{rec['image_sha256']}.png").exists()
    assert not list((spool / "items").iterdir()) and not list((spool / "stream").iterdir())
    again = ship(spool, dest)
    assert again.items == 0 and again.bytes_copied == 0


def test_interrupted_ship_resumes_without_loss_or_duplicates(tmp_path):
    spool, ids = _fill(tmp_path)
    dest = tmp_path / "landing"
    first = ship(spool, dest)  # a complete ship, then make the spool look interrupted:
    rec = json.loads((dest / "records" / f"{ids[0]}.json").read_text())
    (spool / "items" / f"{ids[0]}.json.shipping").write_text(json.dumps(rec))  # claimed
    (spool / "items" / f"{ids[0]}.png").write_bytes(
        (dest / "objects" / f"{rec['image_sha256']}.png").read_bytes())  # not yet deleted
    (dest / "records" / f"{ids[0]}.json").unlink()  # the record copy never happened
    record_feedback(spool, {"item_id": ids[0], "verdict": "real_defect", "defect_class": "blob"})
    again = ship(spool, dest)
    assert again.errors == [] and again.items == 1
    assert again.objects_copied == 0 and again.objects_already_there == 1  # nothing twice
    assert again.feedback == 1  # the verdict that arrived mid-ship became a standalone file
    assert len(list((dest / "objects").iterdir())) == first.objects_copied == 5
    assert len(list((dest / "records").iterdir())) == 5
    assert not [p for p in spool.rglob("*") if p.is_file() and p.name != "feedback.lock"]


def test_serve_captures_and_takes_token_protected_feedback(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", threshold=1.0)
    cap = _capture(tmp_path, pass_share=0.0)
    server = make_server(bundle, "127.0.0.1", 0, intra_op_threads=1, capture=cap,
                         feedback_token=TOKEN)  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = "http://{}:{}".format(*server.server_address[:2])
    try:
        bad = png_bytes(np.zeros((32, 32), np.uint8))  # far from mid-grey: a reject
        code, body = http("POST", url + "/score", bad)
        assert code == 200 and body["decision"] is True and "item_id" in body
        verdict = json.dumps({"item_id": body["item_id"], "verdict": "false_alarm"}).encode()
        assert http("POST", url + "/feedback", verdict)[0] == 401
        import urllib.request

        req = urllib.request.Request(url + "/feedback", data=verdict, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        deadline = time.monotonic() + 5
        while not (tmp_path / "spool" / "items" / f"{body['item_id']}.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["stored"] == "record"
        metrics = http("GET", url + "/metrics")[1]
        assert metrics["capture"]["counts"]["inspected_reject"] == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    record = _records(tmp_path / "spool")[body["item_id"]]
    assert record["feedback"][0]["verdict"] == "false_alarm" and record["latent_mean"] is not None


def test_cli_score_capture_feedback_ship(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", threshold=1.0)
    img = tmp_path / "part.png"
    img.write_bytes(png_bytes(np.zeros((32, 32), np.uint8)))
    spool, dest = tmp_path / "spool", tmp_path / "landing"
    res = run_cli("score", str(img), "--bundle", str(bundle), "--capture", str(spool))
    assert res.returncode == 0, res.stderr
    item_id = json.loads(res.stdout)["item_id"]
    res = run_cli("feedback", item_id, "--spool", str(spool), "--verdict", "real_defect",
                  "--class", "blob")  # fmt: skip
    assert res.returncode == 0 and json.loads(res.stdout)["stored"] == "record", res.stderr
    res = run_cli("ship", "--spool", str(spool), "--to", str(dest))
    assert res.returncode == 0 and json.loads(res.stdout)["items"] == 1, res.stderr
    rec = json.loads((dest / "records" / f"{item_id}.json").read_text())
    assert rec["feedback"][0]["defect_class"] == "blob"
