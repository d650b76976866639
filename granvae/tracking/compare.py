"""Champion and challenger scored on the same images: promotion on equal terms.

Why: a scheduled retrain always lands on a new data version, so comparing the numbers each
version recorded at registration compares two different exams. Instead every registered
version carries its evaluation set (the held-out good images that calibrate the threshold
and the test images, `eval_set/eval_set.npz` on its run); at promotion both models score
the *challenger's* evaluation set, each with its own registered artifact (the ONNX bundle,
else the torch checkpoint), the threshold is calibrated with the same order-statistic rule
on the good images, and the non-inferiority rule (granvae.metrics.noninferiority: paired
bootstrap, threshold recalibrated in every replicate) says whether the challenger may be
promoted: only when the data show it is not worse than the champion by more than a margin.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from granvae.config import PromotionConfig
from granvae.metrics.inspection import image_auroc
from granvae.metrics.noninferiority import non_inferiority
from granvae.metrics.thresholds import calibrate_threshold
from granvae.tracking.store import Store

EVAL_DIR = "eval_set"
EVAL_FILE = "eval_set.npz"
EVAL_TAG = "granvae.eval_set"  # "eval_set/eval_set.npz" on the version's run, when recorded
SCORE_TAG = "granvae.score_rule"
FLAVOR_TAG = "granvae.flavor"


class CannotCompare(RuntimeError):
    """The two versions cannot be scored on the same images (no evaluation set, no model)."""


class NonFiniteScores(CannotCompare):
    """A model gave NaN/inf scores on the shared images: no comparison is meaningful, but a
    person may still promote it with --force --reason (the refusal names the version)."""


@dataclass(frozen=True)
class Figures:
    """One model's numbers on the shared evaluation images."""

    version: int
    recall_at_far: float
    image_auroc: float
    recall_by_label: dict[str, float] = field(default_factory=dict)  # per defect class label


@dataclass(frozen=True)
class Comparison:
    """Challenger vs champion on the challenger's evaluation set."""

    data_version: str
    n_good: int
    n_defect: int
    false_alarm_rate: float
    challenger: Figures
    champion: Figures
    difference: float  # recall(challenger) - recall(champion)
    low: float  # one-sided lower confidence bound of the difference
    high: float
    margin: float = 0.0
    confidence: float = 0.95

    @property
    def worse(self) -> bool:
        """Refused: the lower bound does not clear -margin (not shown non-inferior)."""
        return not self.low > -self.margin

    def describe(self) -> str:
        ch, cp = self.challenger, self.champion
        verdict = (
            "REFUSED: may be worse by more than the margin"
            if self.worse
            else "not worse by more than the margin"
        )
        return (
            f"on the same images (data version {self.data_version}: {self.n_good} good, "
            f"{self.n_defect} defect; threshold at {self.false_alarm_rate:g} false alarms): "
            f"challenger v{ch.version} recall_at_far {ch.recall_at_far:.3f}, image_auroc "
            f"{ch.image_auroc:.3f}; champion v{cp.version} recall_at_far {cp.recall_at_far:.3f}, "
            f"image_auroc {cp.image_auroc:.3f}; difference {self.difference:+.3f}, "
            f"one-sided {self.confidence:.0%} lower bound {self.low:+.3f} vs margin "
            f"-{self.margin:g}: {verdict})"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def write_eval_set(data_dir: Path, out: Path, false_alarm_rate: float) -> Path | None:
    """The candidate's evaluation images as one npz; None when the data folder is gone."""
    from granvae.data.store import load_split

    try:
        val, test = load_split(data_dir, "val"), load_split(data_dir, "test")
    except (FileNotFoundError, ValueError, KeyError):
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / EVAL_FILE
    np.savez_compressed(
        path,
        good=val.images,
        test=test.images,
        labels=test.labels,
        false_alarm_rate=np.float64(false_alarm_rate),
    )
    return path


def _download(store: Store, mv: ModelVersion, artifact: str, dest: Path) -> Path:
    local = store.call(
        "download artifacts", store.client.download_artifacts, mv.run_id, artifact, str(dest)
    )
    return Path(local)


def _load_eval_set(store: Store, mv: ModelVersion, tmp: Path) -> dict[str, np.ndarray]:
    artifact = mv.tags.get(EVAL_TAG)
    if not artifact:
        raise CannotCompare(f"version {mv.version} has no evaluation set recorded")
    try:
        path = _download(store, mv, artifact, tmp / "eval")
    except (MlflowException, OSError) as err:
        raise CannotCompare(f"version {mv.version}'s evaluation set is missing: {err}") from err
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _score_onnx(folder: Path, images: np.ndarray) -> np.ndarray:
    from granvae.export.graph import as_nhwc, make_session, run_session

    manifest = json.loads((folder / "manifest.json").read_text())
    spec = manifest.get("input", {})
    size, channels = int(spec.get("height", images.shape[-1])), int(spec.get("channels", 1))
    session = make_session(folder / "model.onnx", threads=1)
    if manifest.get("tiling"):  # the graph scores tiles; the part's score is stitched
        from granvae.export.tiled import onnx_tiled_scores

        return onnx_tiled_scores(session, images, manifest["tiling"])
    return run_session(session, as_nhwc(images, size, channels))["score"]


def _score_torch(folder: Path, images: np.ndarray, mv: ModelVersion) -> np.ndarray:
    """The checkpoint through the head it was evaluated with (rule + fitted statistics)."""
    from granvae.models import FactorizedVAE
    from granvae.objectives import make_groups
    from granvae.scoring import score_images
    from granvae.scoring.fit import head_from_folder

    model = FactorizedVAE.load(folder).eval()
    granularity = int(float(mv.tags.get("granularity") or 1))
    groups = make_groups(model.config.latent_dim, granularity)
    head = head_from_folder(model, groups, folder,
                            default_rule=mv.tags.get(SCORE_TAG) or "neg_elbo")  # fmt: skip
    return score_images(head, images)["score"]


def score_version(store: Store, mv: ModelVersion, images: np.ndarray, tmp: Path) -> np.ndarray:
    """Scores of `images` (uint8 NCHW) by the version's own registered artifact."""
    flavor = mv.tags.get(FLAVOR_TAG) or "bundle"
    try:
        folder = _download(store, mv, flavor, tmp / f"v{mv.version}")
    except (MlflowException, OSError) as err:  # gone or never uploaded; a dead server raises
        raise CannotCompare(f"version {mv.version}'s model could not be downloaded: {err}") from err
    if (folder / "model.onnx").is_file():
        return _score_onnx(folder, images)
    if (folder / "model.pt").is_file():
        return _score_torch(folder, images, mv)
    raise CannotCompare(f"version {mv.version} has neither model.onnx nor model.pt")


def _figures(version: int, good: np.ndarray, test: np.ndarray, labels: np.ndarray, far: float):
    threshold = calibrate_threshold(good, far)
    defect = test[labels != 0]
    recall = float(np.mean(defect > threshold.value)) if defect.size else float("nan")
    by_label = {
        str(int(k)): float(np.mean(test[labels == k] > threshold.value))
        for k in np.unique(labels[labels != 0])
    }
    return Figures(version, recall, float(image_auroc(test, labels)), by_label)


def _finite(version: int, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    bad = int(np.sum(~np.isfinite(scores)))
    if bad:
        raise NonFiniteScores(
            f"version {version} gave {bad} non-finite (NaN/inf) score(s) on the {scores.size} "
            "shared evaluation images"
        )
    return scores


def compare(
    store: Store,
    challenger: ModelVersion,
    champ: ModelVersion,
    rule: PromotionConfig | None = None,
) -> Comparison:
    """Both versions scored on the challenger's evaluation set; CannotCompare if impossible."""
    rule = rule or PromotionConfig()
    with tempfile.TemporaryDirectory(prefix="granvae-compare-") as name:
        tmp = Path(name)
        data = _load_eval_set(store, challenger, tmp)
        images = np.concatenate([data["good"], data["test"]])
        labels, n_good = data["labels"], len(data["good"])
        far = float(data["false_alarm_rate"])
        if not np.any(labels != 0):
            raise CannotCompare(f"version {challenger.version}'s evaluation set has no defects")
        scores = {
            int(mv.version): _finite(int(mv.version), score_version(store, mv, images, tmp))
            for mv in (challenger, champ)
        }
    a, b = scores[int(challenger.version)], scores[int(champ.version)]
    defect = labels != 0
    verdict = non_inferiority(
        a[:n_good], a[n_good:][defect], b[:n_good], b[n_good:][defect], far,
        margin=rule.margin, confidence=rule.confidence, n_boot=rule.bootstrap,
    )  # fmt: skip
    return Comparison(
        data_version=str(challenger.tags.get("data_version")),
        n_good=n_good,
        n_defect=int(defect.sum()),
        false_alarm_rate=far,
        challenger=_figures(int(challenger.version), a[:n_good], a[n_good:], labels, far),
        champion=_figures(int(champ.version), b[:n_good], b[n_good:], labels, far),
        difference=verdict.difference,
        low=verdict.lower,
        high=verdict.upper,
        margin=verdict.margin,
        confidence=verdict.confidence,
    )
