"""A collapsed model (decoder ignoring z) is detected, reported, and not selected."""

import numpy as np
import torch

from granvae.data import generate
from granvae.evaluate import collapse_diagnostics
from granvae.models import FactorizedVAE, ModelConfig
from granvae.select import SelectionPolicy, select

CONFIG = ModelConfig(image_size=32, latent_dim=6, hidden=32, likelihood="gaussian")


def _images() -> np.ndarray:
    splits, _ = generate("surfaces", 64, 4, 4, seed=0, image_size=32)
    return splits["train"].images


def _collapsed() -> FactorizedVAE:
    """Posterior = prior for every image: the mean head outputs zeros whatever x is."""
    model = FactorizedVAE(CONFIG)
    last = model.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return model.eval()


def test_collapsed_model_has_no_active_unit_and_is_flagged():
    diag = collapse_diagnostics(_collapsed(), _images())
    assert diag["active_units"] == 0 and diag["collapsed"] == 1.0
    assert diag["kl_per_image"] == 0.0


class BrightnessCode(FactorizedVAE):
    """One latent that carries each part's brightness, five that carry nothing."""

    def encode(self, x):
        mu = torch.zeros(len(x), self.config.latent_dim)
        mu[:, 0] = (x.mean((1, 2, 3)) - 0.4) * 20.0
        return mu, torch.full_like(mu, -2.0)


def test_a_model_whose_codes_carry_the_image_is_not_flagged():
    model = BrightnessCode(CONFIG)
    diag = collapse_diagnostics(model.eval(), _images())
    assert diag["active_units"] == 1 and diag["collapsed"] == 0.0
    assert diag["kl_per_image"] > 0


def test_selection_gate_refuses_a_collapsed_candidate_even_with_the_best_recall():
    rows = [
        {"candidate_id": "collapsed", "status": "finished", "recall_at_far": 0.9,
         "elbo": -10.0, "active_units": 0.0, "latency_p95_b1_ms": 1.0},
        {"candidate_id": "working", "status": "finished", "recall_at_far": 0.5,
         "elbo": -20.0, "active_units": 5.0, "latency_p95_b1_ms": 1.0},
    ]  # fmt: skip
    policy = SelectionPolicy.model_validate(
        {"gates": [{"metric": "status", "op": "==", "value": "finished"},
                   {"metric": "active_units", "op": ">=", "value": 1}]}  # fmt: skip
    )
    decision = select(rows, policy)
    assert decision.winner == "working"
    assert next(r for r in decision.rows if r["candidate_id"] == "collapsed")["passed_all"] is False
