"""Which latent group explains the anomaly *where the defect is*, and does that predict the class?

The KL and score-drop attributions of ``granvae.metrics.attribution`` look at the whole
image: a group that carries normal variation (orientation, brightness) wins them on every
part, defective or not. What a plant manager is promised is narrower: "this factor caused
the alarm at this spot". So the region attribution asks, per flagged defect image and per
latent group G:

    drop_G = (S - S_G) / S,   S = sum of the anomaly map inside the defect mask,
                              S_G = the same after resetting group G's posterior mean
                                    to the good-image mean and decoding again.

The anomaly map is the inspection head's own map for its rule (for ``l2_max`` the squared
error smoothed with a Gaussian), so the attribution explains the number that raised the
alarm. drop_G = 1: resetting G removes the whole in-mask anomaly; 0: no effect; negative:
the reset makes the defect region look *more* anomalous (G was helping to reconstruct it).
The explaining group is argmax_G drop_G.

``class_group_test`` then asks whether the explaining group predicts the defect class:
NMI between class and group and the accuracy of the best group -> class map (each group
votes for its most common class), with a permutation p-value (class labels shuffled,
seeded) for the NMI. ``combine_seeds`` merges the seeds' p-values with Fisher's method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from granvae.metrics.attribution import nmi
from granvae.scoring import RULES, InspectionHead
from granvae.scoring.head import _Pass, batches_nhwc

__all__ = [
    "best_map_accuracy",
    "class_group_test",
    "combine_seeds",
    "explaining_groups",
    "head_region_drops",
    "region_drops",
]

Decode = Callable[[torch.Tensor], torch.Tensor]
AnomalyMap = Callable[[torch.Tensor], torch.Tensor]


def region_drops(
    mu: torch.Tensor,
    groups: Sequence[Sequence[int]],
    reference: torch.Tensor,
    decode: Decode,
    anomaly_map: AnomalyMap,
    mask: torch.Tensor,
) -> torch.Tensor:
    """(B, G) share of the in-mask anomaly removed by resetting each group to `reference`.

    mu: (B, D) posterior means; reference: (D,) good-image mean; decode: mu -> decoder
    output; anomaly_map: decoder output -> (B, H, W) map against the fixed input images;
    mask: (B, H, W), nonzero inside the defect. Images with no anomaly inside the mask
    (S = 0) get NaN rows: there is nothing to explain.
    """
    inside = (mask > 0).to(mu.dtype)
    base = (anomaly_map(decode(mu)) * inside).flatten(1).sum(1)
    ref = reference.to(mu).expand_as(mu)
    drops = []
    for dims in groups:
        edited = mu.clone()
        edited[:, list(dims)] = ref[:, list(dims)]
        after = (anomaly_map(decode(edited)) * inside).flatten(1).sum(1)
        drops.append((base - after) / base)
    out = torch.stack(drops, dim=1)
    out[base <= 0] = math.nan
    return out


@torch.no_grad()
def head_region_drops(
    head: InspectionHead,
    images: np.ndarray,
    masks: np.ndarray,
    good_mean_mu: np.ndarray,
    batch_size: int = 128,
) -> np.ndarray:
    """(N, G) region_drops of uint8 NCHW images through the head's model and rule map.

    The map is the head's own (``RULES[rule]`` names it), recomputed for each edited
    decoding from the same one-pass object the head scores with, so the attribution
    and the alarm use one definition of "anomalous". Whole-image heads only: a tiled
    head's map is stitched from tiles, each with its own code, so "reset group G" has
    no single meaning for the image.
    """
    if getattr(head, "tiling", None) is not None:
        raise ValueError("region attribution needs a whole-image head; this head is tiled")
    head = head.cpu().eval()
    map_name = RULES[head.score_kind][1]
    groups = [torch.nonzero(col).flatten().tolist() for col in head.groups.T]
    reference = torch.as_tensor(np.asarray(good_mean_mu), dtype=torch.float32)
    out, start = [], 0
    for batch in batches_nhwc(images, batch_size, "cpu"):
        p = _Pass(head, batch)

        def rule_map(params: torch.Tensor, p: _Pass = p) -> torch.Tensor:
            p.params, p._maps = params, {}
            return p.map(map_name)

        mask = torch.as_tensor(masks[start : start + len(batch)]).reshape(len(batch), -1)
        mask = mask.reshape(len(batch), *p.x.shape[-2:])
        drops = region_drops(p.mu.float(), groups, reference, head.model.decode, rule_map, mask)
        out.append(drops.double().numpy())
        start += len(batch)
    return np.concatenate(out) if out else np.zeros((0, head.groups.shape[1]))


def explaining_groups(drops: np.ndarray) -> np.ndarray:
    """argmax over groups of each row; -1 for rows with nothing to explain (all NaN)."""
    drops = np.asarray(drops, dtype=np.float64)
    valid = np.isfinite(drops).any(1)
    out = np.full(len(drops), -1, dtype=np.int64)
    out[valid] = np.nanargmax(drops[valid], axis=1)
    return out


def best_map_accuracy(classes: np.ndarray, groups: np.ndarray) -> float:
    """Accuracy of predicting the class from the group by each group's most common class."""
    classes, groups = np.asarray(classes), np.asarray(groups)
    if len(classes) == 0:
        return math.nan
    hits = sum(np.bincount(classes[groups == g]).max() for g in np.unique(groups))
    return float(hits / len(classes))


def class_group_test(
    classes: np.ndarray,
    groups: np.ndarray,
    n_perm: int = 1000,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """NMI, best-map accuracy and the permutation p-value of the NMI (+1 smoothed).

    p is the share of n_perm label shufflings whose NMI reaches the observed one. NaN
    when there is no association to test: fewer than two classes or a single group.
    Shuffling keeps both marginals, so the NMI's normaliser is the same for every
    shuffle and the null is computed as mutual information of all shuffles at once.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    classes, groups = np.asarray(classes, np.int64), np.asarray(groups, np.int64)
    observed = nmi(classes, groups) if len(classes) else math.nan
    p = math.nan
    if not math.isnan(observed):
        _, c = np.unique(classes, return_inverse=True)
        _, g = np.unique(groups, return_inverse=True)
        shuffled = rng.permuted(np.tile(c, (n_perm, 1)), axis=1)
        mi_null = _mutual_information(shuffled, g)
        mi_obs = _mutual_information(c[None, :], g)[0]
        p = float((1 + np.sum(mi_null >= mi_obs - 1e-12)) / (1 + n_perm))
    return {
        "nmi": observed,
        "accuracy": best_map_accuracy(classes, groups),
        "chance_accuracy": _majority_share(classes),
        "p_value": p,
        "n": float(len(classes)),
    }


def _mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) mutual information (nats) of each row of codes a (P, n) with codes b (n,)."""
    n_rows, n = a.shape
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    flat = (np.arange(n_rows)[:, None] * ka + a) * kb + b[None, :]
    table = np.bincount(flat.ravel(), minlength=n_rows * ka * kb).reshape(n_rows, ka, kb) / n
    outer = table.sum(2, keepdims=True) * table.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(table > 0, table * np.log(table / outer), 0.0)
    return terms.sum((1, 2))


def _majority_share(classes: np.ndarray) -> float:
    return float(np.bincount(classes).max() / len(classes)) if len(classes) else math.nan


def combine_seeds(p_values: Sequence[float]) -> float:
    """Fisher's combined p over the seeds' (independent) tests; NaN if none is finite."""
    ps = [p for p in p_values if math.isfinite(p)]
    if not ps:
        return math.nan
    return float(stats.combine_pvalues(ps, method="fisher").pvalue)
