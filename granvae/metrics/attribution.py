"""Which latent group raised the alarm: per-image group attribution and its class structure.

Two attributions, because they answer different questions:

- KL attribution (``kl_attribution``): per group, KL(q(z_G|x) || p(z_G)) in
  nats. It is exactly additive (the groups sum to the KL part of the score),
  costs nothing extra and is an output of the ONNX graph, so the line sees it.
  But it ignores the decoder: a group far from the prior that the decoder
  *needs* to explain a perfectly normal image still gets a large share.
- Reset attribution (``reset_attribution``): the drop of the score when one
  group's posterior mean is replaced by the mean over good images, i.e. "how
  much of the alarm goes away if this factor looked like a normal part". It
  goes through the decoder, so it credits the group whose deviation actually
  makes the image look anomalous, but it is counterfactual, not additive, can
  be negative, and costs one extra decode per group; it is computed offline.

``compute_attribution`` asks whether defect classes land on different groups
more often than chance. That is only meaningful for a trained model whose
granularity lets distinct defect mechanisms occupy distinct groups: an untrained
(random) model, or one with a single group, will not separate classes, and the
permutation p-value says so rather than the NMI alone (NMI of a small sample is
biased upwards).

Conventions: labels 0 = good, k = class_names[k]; keys for every defect class
are always present (NaN where the class has no test images) for a stable schema.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from granvae.distributions import kl_to_standard_normal, recon_nll_map
from granvae.metrics.elbo import batches
from granvae.models import FactorizedVAE
from granvae.scoring import InspectionHead, score_images

__all__ = [
    "attribution_table",
    "compute_attribution",
    "kl_attribution",
    "mean_latent",
    "nmi",
    "reset_attribution",
    "score_at_latent",
    "top_groups",
]


# ------------------------------------------------------------------ samplers


def kl_attribution(
    model: FactorizedVAE,
    images: np.ndarray,
    groups: list[list[int]],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, G) per-group KL of q(z|x) against the prior: the head's group_attribution."""
    out = score_images(InspectionHead(model, groups), images, batch_size, device)
    return out["group_attribution"].astype(np.float64)


@torch.no_grad()
def mean_latent(
    model: FactorizedVAE,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(D,) mean posterior mean over (good) images: the reference a group is reset to."""
    model = model.to(device).eval()
    mus = [model.encode(x)[0].float().cpu().numpy() for x in batches(images, batch_size, device)]
    return np.concatenate(mus).mean(0).astype(np.float64)


def score_at_latent(
    model: FactorizedVAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """The head's score (recon NLL at z = mu + analytic KL) for a given, possibly edited, mu."""
    cfg = model.config
    nll = recon_nll_map(cfg.likelihood, x, model.decode(mu).float(), cfg.obs_std)
    return nll.flatten(1).sum(1) + kl_to_standard_normal(mu, logvar).sum(1)


def _reset_batch(
    model: FactorizedVAE,
    x: torch.Tensor,
    groups: list[list[int]],
    reference: torch.Tensor,
) -> torch.Tensor:
    """(B, G) score drop when each group's mu is set to `reference` ((D,) or (B, D))."""
    mu, logvar = (t.float() for t in model.encode(x))
    base = score_at_latent(model, x, mu, logvar)
    ref = reference.expand_as(mu)
    drops = []
    for dims in groups:
        edited = mu.clone()
        edited[:, dims] = ref[:, dims]
        drops.append(base - score_at_latent(model, x, edited, logvar))
    return torch.stack(drops, dim=1)


@torch.no_grad()
def reset_attribution(
    model: FactorizedVAE,
    images: np.ndarray,
    groups: list[list[int]],
    good_mean_mu: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, G) score(x) - score(x with group G's mu := good mean), nats; positive = raised alarm.

    The posterior variance is kept: only the location is reset, so the change
    is the decoder's reconstruction change plus the KL of the moved mean.
    good_mean_mu is (D,) (usually ``mean_latent`` of good images) or (N, D)
    for a per-image reference.
    """
    model = model.to(device).eval()
    ref_all = torch.as_tensor(np.asarray(good_mean_mu), dtype=torch.float32, device=device)
    per_image = ref_all.ndim == 2
    if per_image and len(ref_all) != len(images):
        raise ValueError(f"a per-image reference needs {len(images)} rows, got {len(ref_all)}")
    out, start = [], 0
    for x in batches(images, batch_size, device):
        ref = ref_all[start : start + len(x)] if per_image else ref_all
        out.append(_reset_batch(model, x, groups, ref).double().cpu().numpy())
        start += len(x)
    return np.concatenate(out) if out else np.zeros((0, len(groups)))


# -------------------------------------------------------------- pure compute


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of (a, b) pairs; a and b are small non-negative ints."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1.0)
    return table


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (sklearn's default).

    Written on a contingency table (not sklearn) because the permutation test
    calls it hundreds of times. NaN when either labelling has one value: then
    there is no association to measure.
    """
    table = _contingency(np.asarray(a), np.asarray(b))
    if min(table.shape) < 2:
        return math.nan
    n = table.sum()
    row, col = table.sum(1), table.sum(0)
    nz = table > 0
    mi = float((table[nz] / n * np.log(table[nz] * n / np.outer(row, col)[nz])).sum())
    denom = 0.5 * (_entropy(row) + _entropy(col))
    return max(mi, 0.0) / denom if denom > 0 else math.nan


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square based association in [0, 1]; scale-free companion to the NMI."""
    table = _contingency(a, b)
    k = min(table.shape) - 1
    if k < 1:
        return math.nan
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (table.sum() * k))


def _permutation_pvalue(
    classes: np.ndarray, tops: np.ndarray, observed: float, rng: np.random.Generator, n_perm: int
) -> float:
    """P(NMI >= observed) when class labels are shuffled among defect images, +1 smoothed."""
    if math.isnan(observed) or n_perm < 1:
        return math.nan
    null = np.array([nmi(rng.permutation(classes), tops) for _ in range(n_perm)])
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))


def top_groups(
    attr: np.ndarray, labels: np.ndarray, good_reference_attr: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(class label, top group) of every defect image.

    The top group is argmax over groups of attr minus the mean good-image
    attribution: a group that is large on every image (it carries most of the
    normal variation) would otherwise win for every defect. The reference is
    good_reference_attr (e.g. validation good images) if given, else the good
    images in `attr`; with neither, no centring is done.
    """
    attr = np.asarray(attr, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if attr.ndim != 2 or len(attr) != len(labels):
        raise ValueError(f"attr must be (N, G) with N = len(labels), got {attr.shape}")
    ref = attr[labels == 0] if good_reference_attr is None else np.asarray(good_reference_attr)
    centre = ref.mean(0) if len(ref) else np.zeros(attr.shape[1])
    defect = labels > 0
    return labels[defect], np.argmax(attr[defect] - centre, axis=1)


def _class_keys(classes: np.ndarray, tops: np.ndarray, class_names: Sequence[str]) -> dict:
    out: dict[str, float] = {}
    for k, name in enumerate(class_names[1:], start=1):
        mine = tops[classes == k]
        top, share = math.nan, math.nan
        if len(mine):
            counts = np.bincount(mine)
            top, share = float(counts.argmax()), float(counts.max() / len(mine))
        out[f"attribution_top_group_{name}"] = top
        out[f"attribution_top_share_{name}"] = share
    return out


def compute_attribution(
    attr: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    good_reference_attr: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    n_perm: int = 500,
) -> dict[str, float]:
    """Do defect classes raise the alarm in different latent groups? Named floats.

    attribution_class_group_nmi: NMI between class and top group over defect
    images (0 = no relation, 1 = each class has its own group);
    attribution_cramers_v: the same question on the chi-square scale;
    attribution_pvalue: permutation test of that NMI (class labels shuffled),
    small = more separation than chance. Both NaN with fewer than two defect
    classes present or a single top group (nothing to separate).
    Per class: the most common top group and its share.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    classes, tops = top_groups(attr, labels, good_reference_attr)
    observed = nmi(classes, tops) if len(classes) else math.nan
    out = {
        "attribution_class_group_nmi": observed,
        "attribution_cramers_v": _cramers_v(classes, tops) if len(classes) else math.nan,
        "attribution_pvalue": _permutation_pvalue(classes, tops, observed, rng, n_perm),
        "attribution_n_defect": float(len(classes)),
    }
    out.update(_class_keys(classes, tops, class_names))
    return out


def attribution_table(
    attr: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    good_reference_attr: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per defect class: how many of its images have each group on top (report)."""
    n_groups = np.asarray(attr).shape[1]
    classes, tops = top_groups(attr, labels, good_reference_attr)
    rows = []
    for k, name in enumerate(class_names[1:], start=1):
        counts = np.bincount(tops[classes == k], minlength=n_groups)
        row: dict[str, Any] = {"class": name, "n": int(counts.sum())}
        row.update({f"group_{g}": int(c) for g, c in enumerate(counts)})
        rows.append(row)
    return rows
