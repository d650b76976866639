"""params.yaml is the one source of defaults; bad values name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from granvae.config import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_load() -> None:
    s = load_settings(ROOT / "params.yaml")
    assert s.model.latent_dim == 10 and s.objective.name == "beta_stcvae"


def test_overrides_merge_deeply(tmp_path) -> None:
    s = load_settings(ROOT / "params.yaml", {"train": {"epochs": 3}})
    assert s.train.epochs == 3 and s.train.batch_size == 64


def test_bad_value_names_file_and_field(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("objective:\n  estimator: kde\n")
    with pytest.raises(SettingsError, match=r"params.yaml: objective.estimator"):
        load_settings(bad)


def test_missing_explicit_file_is_an_error(tmp_path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
