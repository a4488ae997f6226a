"""A signature model evaluated exactly with numpy: manifest preprocessing, then a linear model or small MLP.

Torch stays the training framework; serving needs no torch because these models are
a few affine maps, and a backend process that imports torch costs ~160 MB and ~2 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from genesig.artifact.manifest import Manifest, Preprocessing
from genesig.errors import ArtifactError, BadRequest


def expected_tensor_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes an artifact must carry, named like the torch ``state_dict`` they come from."""
    n = len(manifest.genes)
    if manifest.model.kind == "linear":
        return {"linear.weight": (1, n), "linear.bias": (1,)}
    h = manifest.model.hidden_units
    return {"hidden.weight": (h, n), "hidden.bias": (h,), "output.weight": (1, h), "output.bias": (1,)}


def check_tensors(manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refuse missing, extra, misshapen, non-float or non-finite tensors; return them as float64."""
    expected = expected_tensor_shapes(manifest)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(
            f"weights do not match a {manifest.model.kind} model: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.asarray(tensors[name])
        if array.dtype.kind != "f":
            raise ArtifactError(f"tensor {name!r} has dtype {array.dtype}; expected a float type")
        if array.shape != shape:
            raise ArtifactError(
                f"tensor {name!r} has shape {list(array.shape)} but the manifest's {len(manifest.genes)} genes"
                f" and architecture need {list(shape)}"
            )
        if not np.isfinite(array).all():
            raise ArtifactError(f"tensor {name!r} contains NaN or infinite values")
        # float64 weights stay as they are (a memory-mapped file's pages are shared, not copied).
        checked[name] = array.astype(np.float64, copy=False)
    return checked


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, whatever the magnitude of x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def apply_preprocessing(preprocessing: Preprocessing, genes: list[str], raw: np.ndarray) -> np.ndarray:
    """The manifest's preprocessing on raw expression values (rows x genes): log1p if set, then centre and scale.

    Training and serving both call this, so what the server computes is what training computed.
    """
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(genes):
        raise BadRequest(f"expected rows of {len(genes)} gene values, got an array of shape {list(x.shape)}")
    if preprocessing.log1p:
        if x.min(initial=0.0) < 0:
            row, col = (int(v) for v in np.argwhere(x < 0)[0])
            raise BadRequest(
                f"row {row}, gene {genes[col]}: expression values must be >= 0 (this model log-transforms raw values)",
                detail={"row": row, "gene": genes[col]},
            )
        x = np.log1p(x)
    center = np.asarray(preprocessing.center, dtype=np.float64)
    scale = np.asarray(preprocessing.scale, dtype=np.float64)
    return (x - center) / scale


@dataclass(frozen=True)
class Predictions:
    """One output per row (probability of the event, or a risk score where higher is worse) and its risk group."""

    values: np.ndarray
    groups: list[str]


class SignatureModel:
    """A verified manifest and its weights; ``predict`` takes raw expression values in manifest gene order."""

    def __init__(self, manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> None:
        self.manifest = manifest
        self._tensors = check_tensors(manifest, tensors)
        self._cutpoints = np.asarray(manifest.output.risk_groups.cutpoints, dtype=np.float64)
        self._labels = np.asarray(manifest.output.risk_groups.labels, dtype=object)

    @property
    def genes(self) -> list[str]:
        return self.manifest.genes

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Apply the manifest's preprocessing to raw expression values (rows x genes)."""
        return apply_preprocessing(self.manifest.preprocessing, self.genes, raw)

    def linear_predictor(self, raw: np.ndarray) -> np.ndarray:
        z = self.transform(raw)
        t = self._tensors
        if self.manifest.model.kind == "linear":
            return z @ t["linear.weight"][0] + t["linear.bias"][0]
        h = z @ t["hidden.weight"].T + t["hidden.bias"]
        h = np.maximum(h, 0.0) if self.manifest.model.activation == "relu" else np.tanh(h)
        return h @ t["output.weight"][0] + t["output.bias"][0]

    def predict(self, raw: np.ndarray) -> Predictions:
        eta = self.linear_predictor(raw)
        values = _sigmoid(eta) if self.manifest.target == "binary" else eta
        groups = self._labels[np.searchsorted(self._cutpoints, values, side="right")].tolist()
        return Predictions(values=values, groups=groups)
