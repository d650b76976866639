"""The peer detectors the benchmark compares granvae against: each must do its own job."""

import numpy as np
import torch

from granvae.data.textures import CLASS_NAMES, TEST_BANDS, TRAIN_BANDS, VAL_BANDS, make_texture
from granvae.peers import PEERS
from granvae.peers.patch_nn import greedy_coreset


def test_greedy_coreset_takes_one_point_from_each_far_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    points = np.concatenate([c + rng.normal(0, 1, (200, 2)) for c in centres])
    chosen = greedy_coreset(torch.tensor(points, dtype=torch.float32), 3, proj_dim=2)
    assert sorted(int(i) // 200 for i in chosen) == [0, 1, 2]


def _aligned_parts(n: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    pattern = 100 + 40 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    return np.clip(pattern + rng.normal(0, 3, (n, 1, 32, 32)), 0, 255).astype(np.uint8)


def test_every_peer_finds_a_spot_on_an_aligned_part_and_points_at_it():
    rng = np.random.default_rng(0)
    train, test = _aligned_parts(200, rng), _aligned_parts(20, rng)
    test[10:, 0, 20:23, 8:11] = 250
    for name, peer_cls in PEERS.items():
        peer = peer_cls(bank=256) if name == "patch_nn" else peer_cls()
        peer.fit(train)
        out = peer.score(test)
        assert out.scores[10:].min() > out.scores[:10].max(), name
        peaks = [np.unravel_index(np.argmax(m), m.shape) for m in out.maps[10:]]
        assert all(abs(y - 21) <= 3 and abs(x - 9) <= 3 for y, x in peaks), name


def test_patch_memory_bank_sees_foreign_material_on_real_brick():
    """Raw patches on a repeating real texture: the peer's home ground."""
    splits, _ = make_texture("brick", n_train=256, n_val=16, n_test=96, seed=0)
    test = splits["test"]
    foreign = test.labels == CLASS_NAMES.index("foreign")
    peer = PEERS["patch_nn"](bank=1024)
    peer.fit(splits["train"].images)
    out = peer.score(test.images)
    good = out.scores[test.labels == 0]
    assert float(np.mean(out.scores[foreign][:, None] > good[None, :])) > 0.7


def test_texture_sets_are_reproducible_and_keep_test_pixels_out_of_training():
    a, meta = make_texture("gravel", 32, 8, 24, seed=5)
    b, _ = make_texture("gravel", 32, 8, 24, seed=5)
    assert np.array_equal(a["test"].images, b["test"].images)
    assert meta.class_names == CLASS_NAMES
    assert len(set(TRAIN_BANDS) | set(VAL_BANDS) | set(TEST_BANDS)) == 8  # disjoint, all used
    defect = a["test"].labels > 0
    assert all(a["test"].masks[i].sum() > 0 for i in np.flatnonzero(defect))
    assert not a["test"].masks[~defect].any()
