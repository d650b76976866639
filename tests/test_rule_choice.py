"""Per-candidate choice of the score rule from synthetic defects (granvae.rule_choice), as
evaluate_candidate runs it: on a real texture photograph (brick) the feature bank beats the
smoothed residual on defects drawn on the validation images, the candidate keeps it, and
the recall on real defects is measured with it and set beside the estimate."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import ROOT

from granvae.config import EvalConfig, load_settings
from granvae.data.textures import make_texture
from granvae.evaluate import evaluate_candidate
from granvae.rule_choice import usable_rules
from granvae.train import train

CHEAP = dict(disentanglement=False, latency_repeats=2, iwae_k=2, iwae_images=8, bootstrap=100)


@pytest.fixture(scope="module")
def brick(tmp_path_factory):
    splits, meta = make_texture("brick", n_train=256, n_val=128, n_test=96, image_size=64)
    settings = load_settings(ROOT / "params.yaml")
    model_cfg = settings.model.model_copy(update={"image_size": 64, "latent_dim": 4,
                                                  "hidden": 64})  # fmt: skip
    cfg = settings.train.model_copy(update={"epochs": 3, "batch_size": 64, "seed": 0})
    root = tmp_path_factory.mktemp("rule-choice")
    train(splits["train"].images, model_cfg, settings.objective, cfg, root / "cand",
          resume=False, progress=False)  # fmt: skip
    return root / "cand", splits, meta


def test_a_textured_line_keeps_the_feature_bank_and_reports_the_gap(brick) -> None:
    cand, splits, meta = brick
    cfg = EvalConfig(score="l2_max", score_alternatives=["feat_knn"], **CHEAP)
    metrics = evaluate_candidate(cand, splits, meta, granularity=1, cfg=cfg)
    assert json.loads((cand / "scoring.json").read_text())["rule"] == "feat_knn"
    assert (cand / "feature_bank.npz").is_file()
    assert metrics["choice_feat_knn_synthetic_recall"] > metrics["choice_l2_max_synthetic_recall"]
    assert metrics["synthetic_recall_at_far"] == metrics["choice_feat_knn_synthetic_recall"]
    assert metrics["synthetic_gap"] == pytest.approx(
        metrics["synthetic_recall_at_far"] - metrics["recall_at_far"]
    )
    per_class = [
        k for k in metrics if k.startswith("synthetic_recall_") and k != "synthetic_recall_at_far"
    ]
    assert len(per_class) == 5


def test_without_alternatives_the_configured_rule_is_kept_and_nothing_is_estimated(brick) -> None:
    cand, splits, meta = brick
    metrics = evaluate_candidate(cand, splits, meta, granularity=1,
                                 cfg=EvalConfig(score="l2_max", **CHEAP))  # fmt: skip
    assert json.loads((cand / "scoring.json").read_text())["rule"] == "l2_max"
    assert not any(k.startswith(("choice_", "synthetic_")) for k in metrics)


def test_only_rules_the_candidate_can_score_are_tried() -> None:
    assert usable_rules(["l2_max", "feat_knn", "l2_max"], False, True) == ["l2_max", "feat_knn"]
    assert usable_rules(["l2_max", "feat_knn"], False, False) == ["l2_max"]  # mlp encoder
    assert usable_rules(["l2_max", "feat_knn"], True, True) == []  # tiled: evaluation.tile_score
