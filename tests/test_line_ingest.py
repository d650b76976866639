"""Ingest of a shipped landing zone: goods to training, confirmed defects to evaluation,
everything else kept out with a count, origins recorded, a second ingest adds nothing.

The landing zone is made by the real edge capture and ship (no hand-written records)."""

from __future__ import annotations

import json

import numpy as np
from edge_fixtures import png_bytes
from granvae_edge.capture import Capture, CaptureConfig
from granvae_edge.feedback import record_feedback
from granvae_edge.ship import ship

from granvae.data.line_landing import PROVENANCE, ingest_landing


def _png(seed: int, size: int = 32) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 255, (size, size), np.uint8))


def test_landing_zone_becomes_training_and_evaluation_images(tmp_path):
    spool, landing, folder = tmp_path / "spool", tmp_path / "landing", tmp_path / "mvtec"
    cap = Capture(CaptureConfig(spool=str(spool), pass_share=1.0, seed=0, device="cam-3",
                                line="press-7", queue_size=1000))  # fmt: skip
    model = {"model_sha256": "m" * 64, "revision": 2}
    goods = [cap.submit(_png(i), "pass", 1.0, 5.0, model=model) for i in range(10)]
    alarm_ok = cap.submit(_png(100), "reject", 9.0, 5.0, model=model)
    alarm_real = cap.submit(_png(101), "reject", 9.0, 5.0, model=model)
    unreviewed = cap.submit(_png(102), "reject", 9.0, 5.0, model=model)
    cap.submit(b"not an image", "invalid", None, 5.0, model=model)
    cap.submit(_png(103, size=48), "pass", 1.0, 5.0, model=model)  # wrong frame size
    cap.submit(_png(0), "pass", 1.0, 5.0, model=model)  # the same frame as goods[0]
    cap.close()
    record_feedback(spool, {"item_id": alarm_ok, "verdict": "false_alarm"})
    record_feedback(spool, {"item_id": alarm_real, "verdict": "real_defect",
                            "defect_class": "scratch"})  # fmt: skip
    assert ship(spool, landing).errors == []
    record_feedback(spool, {"item_id": goods[3], "verdict": "missed_defect",
                            "defect_class": "blob"})  # found later: a standalone verdict
    assert ship(spool, landing).feedback == 1
    counts = ingest_landing(landing, folder, expect_hw=(32, 32), eval_good_share=0.3)
    assert counts["added"] == 12  # 9 passes + the overruled alarm, 1 scratch, 1 missed blob
    assert counts["test/scratch"] == 1 and counts["test/blob"] == 1
    assert counts["train/good"] + counts["test/good"] == 10
    assert counts["unreviewed_reject"] == 1 and counts["invalid_frame"] == 1
    assert counts["breaks_frame_contract"] == 1 and counts["duplicate"] == 1
    rows = [json.loads(x) for x in (folder / PROVENANCE).read_text().splitlines()]
    scratch = next(r for r in rows if r["file"].startswith("test/scratch/"))
    assert scratch["item_id"] == alarm_real and scratch["device"] == "cam-3"
    assert scratch["line"] == "press-7" and scratch["revision"] == 2
    assert unreviewed not in {r["item_id"] for r in rows}
    again = ingest_landing(landing, folder, expect_hw=(32, 32), eval_good_share=0.3)
    assert again["added"] == 0 and again["already_ingested"] == 12
    from granvae.data.validate import validate_folder

    layout = validate_folder(folder, None, 1)  # what `granvae retrain --landing` checks first
    assert len(layout.train) == counts["train/good"] and "scratch" in layout.class_names
    _store_keeps_the_origins(folder, tmp_path / "store", alarm_real)


def _store_keeps_the_origins(folder, store, scratch_item: str) -> None:
    """The retrain's import copies each imported image's origin into the dataset store (the
    folder DVC versions); the manifest pins the file, so an edited origin is refused."""
    import pytest

    from granvae.data import DataValidationError, check_dataset, import_mvtec, load_dataset
    from granvae.data.provenance import STORE_PROVENANCE, read_provenance

    manifest = import_mvtec(folder, store)
    assert manifest["provenance"]["rows"] == 12
    origins = read_provenance(store)
    splits, _ = load_dataset(store)
    names = [n for split in splits.values() for n in split.names]
    assert sorted(names) == sorted(origins)  # every stored image has its origin, no extra row
    scratch = next(o for n, o in origins.items() if n.startswith("test/scratch/"))
    assert scratch["item_id"] == scratch_item and scratch["model_sha256"] == "m" * 64
    assert scratch["feedback"][0]["verdict"] == "real_defect"
    check_dataset(store)
    path = store / STORE_PROVENANCE
    path.write_text(path.read_text().replace("cam-3", "cam-9"))
    with pytest.raises(DataValidationError, match="sha256 mismatch"):
        check_dataset(store)
    with pytest.raises(DataValidationError, match="sha256 mismatch"):
        read_provenance(store)


def test_ingest_line_cli_refuses_a_folder_that_is_not_a_landing_zone(tmp_path):
    from typer.testing import CliRunner

    from granvae.cli import app

    res = CliRunner().invoke(app, ["ingest-line", str(tmp_path), "--into", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no records/ folder" in res.stderr
