"""``feat_knn``: PatchCore's memory bank on the VAE's own first-layer features.

Why: on a textured line (brick, woven cloth, cast surfaces) a good image is one draw from
a repeating pattern. A reconstruction residual, smoothed or not, mixes the model's ordinary
error on busy texture with the defect and stays near chance (docs/inspection.md). What
works there is asking, for every small patch, whether any good patch looked like it: the
raw-patch nearest neighbour (PatchCore's method). PatchCore describes patches with an
ImageNet network's features, which means downloaded weights; here the descriptor is the
trained VAE's first convolution (4x4 filters, stride 2, ReLU): features learned on the
line's own good images, no weights from anywhere else, and already inside the exported
graph. Deeper layers were measured and are worse (docs/inspection.md, "Textures"): they
describe where the pattern is, not whether a 2-px scratch crosses it.

The map is the distance of each position's feature vector to its nearest neighbour in a
greedy k-centre coreset of good training features (a graph constant, ``feature_bank.npz``
beside the candidate), brought to the image's size, smoothed like every localised rule,
and reduced by its maximum. Distances, not squared distances: on brick the squared map,
smoothed, caught 31% at 1% false alarms against 41% (one seed; squaring lets a few large
texture distances dominate the smoothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_FILE = "feature_bank.npz"
BANK_SIZE = 4096  # coreset rows: the edge's cost is positions x this x channels
POOL = 65536  # random training positions the coreset is chosen from
BANK_CHUNK = 256  # bank rows per distance step: bounds memory at batch x positions x this
# positions per step when scoring in torch: a (positions x chunk) block that stays in cache;
# 256 images of 64 px at once ran 1.4x slower than 4 at a time (6.4 s against 4.6 s)
POSITIONS_PER_STEP = 4096
FEATURE_RULES = frozenset({"feat_knn"})


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The encoder's first convolution; an MLP encoder has no patch features to offer."""
    layer = model.encoder[0]
    if not isinstance(layer, nn.Conv2d):
        raise ValueError("score rule 'feat_knn' needs a convolutional encoder "
                         "(model.arch: conv); this model's encoder starts with "
                         f"{type(layer).__name__}")  # fmt: skip
    return layer


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] -> (N, K, H/2, W/2) first-layer features after ReLU."""
    return F.relu(first_conv(model)(x))


def nearest_distance(features: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) features, (B, K) bank -> (N, h, w) distance to the nearest bank row.

    The nearest row is found with the expansion -2 f.b + |b|^2, which keeps memory at
    N*h*w*chunk (the difference tensor would be N*h*w*B*K); the distance itself is then
    taken once, from the difference to that row. The expansion alone cancels to float32 noise
    near a bank row, and the square root turns 1e-7 of noise into 3e-4 that torch and
    onnxruntime round differently. The bank is walked in fixed chunks, so the exported
    graph has the same static shape for any batch."""
    n, k, h, w = features.shape
    if not torch.onnx.is_in_onnx_export():  # the exported graph takes any batch whole
        step = max(1, POSITIONS_PER_STEP // (h * w))
        if n > step:
            return torch.cat([nearest_distance(features[i : i + step], bank)
                              for i in range(0, n, step)])  # fmt: skip
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, k)
    bank_sq = bank.pow(2).sum(1)
    best_val = best_idx = None
    for start in range(0, bank.shape[0], BANK_CHUNK):
        chunk = bank[start : start + BANK_CHUNK]
        # |b|^2 - 2 f.b ranks the rows as |f - b|^2 does (|f|^2 is the same for every row)
        val, idx = torch.addmm(bank_sq[start : start + BANK_CHUNK], flat, chunk.t(),
                               alpha=-2.0).min(1)  # fmt: skip
        idx = idx + start
        if best_val is None or best_idx is None:
            best_val, best_idx = val, idx
        else:
            better = val < best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx, best_idx)
    assert best_idx is not None
    best = (flat - bank[best_idx]).pow(2).sum(1)
    return best.sqrt().reshape(n, h, w)


def distance_map(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) unsmoothed map at the image's size (bilinear from the feature grid)."""
    if not getattr(head, "feature_fitted", False):
        raise ValueError("score rule 'feat_knn' needs the feature bank (fit_feature_bank)")
    d = nearest_distance(feature_map(head.model, x), head.feature_bank)
    return F.interpolate(d[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def register_buffers(head: nn.Module, model: nn.Module) -> None:
    """A placeholder the fitted bank replaces (a graph constant once exported)."""
    layer = model.encoder[0]
    channels = layer.out_channels if isinstance(layer, nn.Conv2d) else 1
    head.register_buffer("feature_bank", torch.zeros(1, channels))
    head.feature_fitted = False


def set_bank(head: nn.Module, bank: np.ndarray) -> None:
    k = head.feature_bank.shape[1]
    if bank.ndim != 2 or bank.shape[1] != k or len(bank) < 1:
        raise ValueError(f"feature bank of shape {bank.shape}, model needs (B, {k})")
    if not np.all(np.isfinite(bank)):
        raise ValueError("feature bank is not finite")
    head.feature_bank = torch.as_tensor(np.asarray(bank, np.float32))
    head.feature_fitted = True


def save_bank(head: nn.Module, directory: Path | str) -> Path:
    path = Path(directory) / FEATURE_FILE
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, bank=head.feature_bank.detach().cpu().numpy())
    tmp.replace(path)
    return path


def load_bank(head: nn.Module, directory: Path | str) -> bool:
    """Attach the candidate's bank if it has one (whole-image candidates since feat_knn)."""
    path = Path(directory) / FEATURE_FILE
    if not path.exists():
        return False
    with np.load(path) as data:
        if "bank" not in data:
            raise ValueError(f"{path}: no 'bank' array")
        set_bank(head, np.asarray(data["bank"], np.float32))
    return True


@torch.no_grad()
def fit_feature_bank(
    head: nn.Module,
    train_images: np.ndarray,
    rng: np.random.Generator | None = None,
    bank_size: int = BANK_SIZE,
    pool: int = POOL,
) -> np.ndarray:
    """Fill ``head.feature_bank`` from uint8 NCHW good training images; returns it.

    A random pool of positions first (a greedy pass over every position of a thousand
    images costs minutes for little gain), then greedy k-centre on a random projection,
    as PatchCore does, so rare-but-good patches keep a neighbour."""
    from granvae.peers.patch_nn import greedy_coreset  # one coreset routine for both banks

    if len(train_images) < 1:
        raise ValueError("need good training images to fit the feature bank")
    rng = rng or np.random.default_rng(0)
    model = head.model.cpu().eval()
    feats = []
    per_image = max(1, pool // len(train_images) + 1)
    for start in range(0, len(train_images), 64):
        x = torch.from_numpy(np.asarray(train_images[start : start + 64], np.float32) / 255.0)
        f = feature_map(model, x)
        flat = f.permute(0, 2, 3, 1).reshape(len(x), -1, f.shape[1])
        take = rng.integers(flat.shape[1], size=(len(x), min(per_image, flat.shape[1])))
        picked = flat[torch.arange(len(x))[:, None], torch.from_numpy(take)]
        feats.append(picked.reshape(-1, f.shape[1]))
    pooled = torch.cat(feats)[:pool]
    idx = greedy_coreset(pooled, bank_size, int(rng.integers(2**31)))
    bank = pooled[idx].numpy().astype(np.float32)
    set_bank(head, bank)
    return bank
