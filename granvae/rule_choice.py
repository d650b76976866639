"""Each candidate chooses its score rule on its own line, from synthetic defects.

Why: no rule wins on every line. The smoothed residual (``l2_max``) is best on smooth
machined parts and at chance on textures; the first-layer feature bank (``feat_knn``) is
the reverse (docs/inspection.md). A line that has only good images has no labelled defect
to choose with, and a line that has a few should not tune a threshold rule on them. So the
choice is made on defects synthesised (granvae.data.synthetic_defects: foreign patch,
scratch, smear, dent, blob) on the candidate's *validation* images, thresholded at the
line's false-alarm rate on the same images' good scores (granvae.synthetic_choice). The
test split stays untouched: the recall reported on real defects is measured after the
choice, with the chosen rule, and the gap between the two is reported beside it.
"""

from __future__ import annotations

import numpy as np

from granvae.data.synthetic_defects import synthetic_set
from granvae.scoring import InspectionHead, score_images
from granvae.scoring.features import FEATURE_RULES
from granvae.synthetic_choice import CandidateScores, choose_rule, selection_columns

__all__ = ["choose_score_rule", "usable_rules"]


def usable_rules(rules: list[str], head_is_tiled: bool, conv_encoder: bool) -> list[str]:
    """The choices this candidate can score: none for a tiled model (its rule is
    evaluation.tile_score), no feature bank without a convolutional encoder."""
    if head_is_tiled:
        return []
    return list(dict.fromkeys(r for r in rules if conv_encoder or r not in FEATURE_RULES))


def choose_score_rule(
    head: InspectionHead,
    val_images: np.ndarray,
    rules: list[str],
    false_alarm_rate: float,
    seed: int = 0,
) -> dict[str, float]:
    """Set ``head.score_kind`` to the rule with the best synthetic-defect recall; returns
    the metrics to log: the chosen rule's estimate (``synthetic_recall_at_far``, per class)
    and every rule's (``choice_<rule>_synthetic_recall``), so the choice can be audited."""
    defective, masks, kinds = synthetic_set(val_images, np.random.default_rng(seed))
    changed = masks.any(axis=(1, 2))
    defective, kinds = defective[changed], kinds[changed]
    candidates = {}
    for rule in rules:
        head.score_kind = rule
        good = score_images(head, val_images)["score"]
        bad = score_images(head, defective)["score"]
        candidates[rule] = CandidateScores(
            good, {str(k): bad[kinds == k] for k in dict.fromkeys(kinds.tolist())}
        )
    choice = choose_rule(candidates, false_alarm_rate)
    head.score_kind = choice.best
    metrics = {f"choice_{e.name}_synthetic_recall": e.synthetic_recall for e in choice.estimates}
    metrics.update(selection_columns(choice.estimate(choice.best)))
    return {k: float(v) for k, v in metrics.items()}
