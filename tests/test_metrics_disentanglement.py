"""Behaviour of the disentanglement metrics on codes whose answer is known:
perfect (factors + tiny noise, permuted, with a nuisance dim), the same code
fully mixed by a rotation, and codes independent of the factors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from granvae.metrics.disentanglement import (
    compute_dci,
    compute_factor_vae,
    compute_mig,
    compute_sap,
    dci_completeness,
    dci_disentanglement,
    evaluate_all,
    histogram_discretize,
    sample_codes,
)

SIZES = np.array([3, 4, 5, 6])
N_TRAIN, N_TEST = 1000, 500
FAST_GBT = 20  # estimators: enough for these easy codes, keeps the file fast


class GridDataset:
    """Factor grid whose observation is the factor vector plus a little noise."""

    def __init__(self, factor_sizes: Sequence[int], noise: float = 0.0) -> None:
        self.factor_sizes = tuple(factor_sizes)
        self.noise = noise

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)))

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return factors.astype(np.float64) + self.noise * rng.standard_normal(factors.shape)


def _factors(n: int, rng: np.random.Generator, sizes: np.ndarray = SIZES) -> np.ndarray:
    return rng.integers(0, sizes, size=(n, len(sizes)))


def _perfect_code(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standardised factors + tiny noise, one pure-noise dim, dims permuted."""
    sizes = np.maximum(factors.max(axis=0) + 1, 2)
    z = (factors - (sizes - 1) / 2) / (sizes / np.sqrt(12))
    z = z + 0.01 * rng.standard_normal(z.shape)
    z = np.concatenate([z, rng.standard_normal((len(z), 1))], axis=1)
    return z[:, np.random.default_rng(7).permutation(z.shape[1])]


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    f_train, f_test = _factors(N_TRAIN, rng), _factors(N_TEST, rng)
    z_train, z_test = _perfect_code(f_train, rng), _perfect_code(f_test, rng)
    rotation, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))
    noise = rng.standard_normal((N_TRAIN + N_TEST, 5))
    return {
        "perfect": (z_train, f_train, z_test, f_test),
        "rotated": (z_train @ rotation, f_train, z_test @ rotation, f_test),
        "random": (noise[:N_TRAIN], f_train, noise[N_TRAIN:], f_test),
    }


@pytest.fixture(scope="module")
def scores(splits: dict[str, tuple[np.ndarray, ...]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, split in splits.items():
        out[name] = {
            **compute_mig(split[0], split[1]),
            **compute_dci(*split, np.random.default_rng(0), n_estimators=FAST_GBT),
            **compute_sap(*split),
            "sap_continuous": compute_sap(*split, continuous_factors=True)["sap"],
        }
    return out


def test_perfect_code_scores_high(scores: dict[str, dict[str, float]]) -> None:
    s = scores["perfect"]
    assert s["mig"] > 0.9
    assert s["dci_disentanglement"] > 0.9
    assert s["dci_completeness"] > 0.9
    assert s["dci_informativeness_test"] > 0.95
    assert s["sap_continuous"] > 0.9
    # Discrete SAP uses disentanglement_lib's 1-D one-vs-rest LinearSVC(C=0.01),
    # which cannot separate middle classes of a 3..6-valued factor: it tops out
    # well below 1 even for a perfect code, so compare against random instead.
    assert s["sap"] > 0.3
    assert s["sap"] > 10 * scores["random"]["sap"]


def test_rotation_mixes_and_lowers_scores(scores: dict[str, dict[str, float]]) -> None:
    perfect, rotated = scores["perfect"], scores["rotated"]
    assert rotated["mig"] < 0.5 * perfect["mig"]
    assert rotated["dci_disentanglement"] < 0.5 * perfect["dci_disentanglement"]
    assert rotated["dci_completeness"] < 0.5 * perfect["dci_completeness"]
    assert rotated["sap_continuous"] < 0.5 * perfect["sap_continuous"]
    # A rotation loses no information: the GBT still predicts well above chance.
    assert rotated["dci_informativeness_test"] > 0.6


def test_random_code_scores_near_zero(scores: dict[str, dict[str, float]]) -> None:
    s = scores["random"]
    for key in ("mig", "dci_disentanglement", "dci_completeness", "sap", "sap_continuous"):
        assert s[key] < 0.1, key
    assert s["dci_informativeness_test"] < 0.4  # chance is about 1/3..1/6


def test_all_scores_in_unit_interval(scores: dict[str, dict[str, float]]) -> None:
    for name, values in scores.items():
        for key, value in values.items():
            assert 0.0 <= value <= 1.0, (name, key, value)


def test_constant_factor_is_skipped() -> None:
    rng = np.random.default_rng(3)
    sizes = np.array([3, 1, 4])
    f_train, f_test = _factors(600, rng, sizes), _factors(300, rng, sizes)
    z_train, z_test = _perfect_code(f_train, rng), _perfect_code(f_test, rng)
    with np.errstate(all="raise"):
        mig = compute_mig(z_train, f_train)["mig"]
        dci = compute_dci(z_train, f_train, z_test, f_test, rng, n_estimators=FAST_GBT)
        sap = compute_sap(z_train, f_train, z_test, f_test)["sap"]
    assert mig == pytest.approx(compute_mig(z_train, f_train[:, [0, 2]])["mig"])
    assert mig > 0.9 and dci["dci_disentanglement"] > 0.9 and 0.0 < sap <= 1.0
    only_constant = np.zeros((50, 1), dtype=int)
    codes = rng.standard_normal((50, 3))
    assert compute_mig(codes, only_constant) == {"mig": 0.0}
    assert compute_sap(codes, only_constant, codes, only_constant) == {"sap": 0.0}
    assert set(compute_dci(codes, only_constant, codes, only_constant, rng).values()) == {0.0}


def test_mig_exact_on_copied_factor() -> None:
    factors = np.repeat(np.arange(4), 25)[:, None]
    codes = np.stack([factors[:, 0] * 1.0, np.zeros(100)], axis=1)
    assert compute_mig(codes, factors)["mig"] == pytest.approx(1.0)
    assert compute_mig(codes[:, ::-1], factors)["mig"] == pytest.approx(1.0)
    assert compute_mig(codes[:, 1:], factors)["mig"] == pytest.approx(0.0)
    # Two codes that both copy the factor: full information, zero gap.
    duplicated = np.stack([codes[:, 0], 2.0 * codes[:, 0]], axis=1)
    assert compute_mig(duplicated, factors)["mig"] == pytest.approx(0.0)


def test_histogram_discretize_matches_disentanglement_lib_bins() -> None:
    codes = np.linspace(-1.0, 1.0, 41)[:, None]
    bins = histogram_discretize(np.concatenate([codes, np.ones_like(codes)], axis=1), 20)
    assert bins[:, 0].min() == 1 and bins[:, 0].max() == 20  # max lands in last bin
    assert np.all(np.diff(bins[:, 0]) >= 0)
    assert np.unique(bins[:, 1]).size == 1  # constant dim: one bin, no information


def test_dci_scores_on_known_importance_matrices() -> None:
    assert dci_disentanglement(np.eye(3)) == pytest.approx(1.0)
    assert dci_completeness(np.eye(3)) == pytest.approx(1.0)
    assert dci_disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
    # Each code serves every factor, but each factor lives in one code only.
    one_code = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert dci_disentanglement(one_code) == pytest.approx(0.0, abs=1e-9)
    assert dci_completeness(one_code) == pytest.approx(1.0)
    assert dci_disentanglement(np.zeros((2, 2))) == pytest.approx(0.0, abs=1e-9)
    assert dci_disentanglement(np.array([[0.3], [0.7]])) == pytest.approx(1.0)


def test_dci_is_reproducible_with_same_rng(splits: dict[str, tuple[np.ndarray, ...]]) -> None:
    split = splits["rotated"]
    first = compute_dci(*split, np.random.default_rng(5), n_estimators=5)
    second = compute_dci(*split, np.random.default_rng(5), n_estimators=5)
    assert first == second


def test_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        compute_mig(np.zeros((10, 2)), np.zeros((2, 10), dtype=int))


def test_sample_codes_batches_and_shapes() -> None:
    calls: list[int] = []

    def represent(obs: np.ndarray) -> np.ndarray:
        calls.append(len(obs))
        return obs[:, ::-1]

    dataset = GridDataset((3, 4))
    codes, factors = sample_codes(represent, dataset, 70, np.random.default_rng(0), 32)
    assert calls == [32, 32, 6]
    assert codes.shape == (70, 2) and factors.shape == (70, 2)
    np.testing.assert_array_equal(codes, factors[:, ::-1])


def test_factor_vae_perfect_representation_is_accurate() -> None:
    dataset = GridDataset((3, 4, 5, 1), noise=0.0)
    perm = np.array([3, 1, 0, 2])
    result = compute_factor_vae(
        lambda obs: obs[:, perm], dataset, np.random.default_rng(0), 32, 150, 100, 500
    )
    assert result["factor_vae_eval_accuracy"] > 0.97
    assert result["factor_vae_train_accuracy"] > 0.97
    assert result["factor_vae_num_active_dims"] == 3  # the constant factor's dim is pruned


def test_factor_vae_random_representation_is_near_chance() -> None:
    noise_rng = np.random.default_rng(11)
    dataset = GridDataset((3, 4, 5, 1))

    def represent(obs: np.ndarray) -> np.ndarray:
        return noise_rng.standard_normal((len(obs), 4))

    result = compute_factor_vae(represent, dataset, np.random.default_rng(0), 32, 300, 300, 500)
    chance = 1 / 3  # only the three varying factors are ever fixed
    assert abs(result["factor_vae_eval_accuracy"] - chance) < 0.12


def test_factor_vae_without_active_dims_scores_zero() -> None:
    dataset = GridDataset((3, 4))
    result = compute_factor_vae(
        lambda obs: np.zeros((len(obs), 2)), dataset, np.random.default_rng(0), 16, 10, 10, 50
    )
    assert result["factor_vae_eval_accuracy"] == 0.0
    assert result["factor_vae_num_active_dims"] == 0


def test_evaluate_all_keys_and_ranges() -> None:
    dataset = GridDataset((3, 4, 1), noise=0.01)
    result = evaluate_all(
        lambda obs: obs,
        dataset,
        np.random.default_rng(0),
        n_train=400,
        n_test=200,
        n_estimators=10,
        factor_vae_votes=(60, 40),
    )
    assert set(result) == {
        "mig",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness_test",
        "sap",
        "factor_vae_accuracy",
    }
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert result["mig"] > 0.9 and result["factor_vae_accuracy"] > 0.95
