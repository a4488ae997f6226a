"""numpy evaluation of signature models equals torch's evaluation of the same weights."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import torch

from genesig.artifact import SignatureModel
from genesig.artifact.manifest import Architecture, TargetKind
from genesig.artifact.synthetic import synthetic_manifest, synthetic_tensors
from genesig.errors import BadRequest

GENES = [f"G{i}" for i in range(7)]


def torch_reference(model: SignatureModel, tensors: dict[str, np.ndarray], raw: np.ndarray) -> np.ndarray:
    m = model.manifest
    x = torch.tensor(raw, dtype=torch.float64)
    if m.preprocessing.log1p:
        x = torch.log1p(x)
    x = (x - torch.tensor(m.preprocessing.center, dtype=torch.float64)) / torch.tensor(
        m.preprocessing.scale, dtype=torch.float64
    )
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in tensors.items()}
    if m.model.kind == "linear":
        eta = torch.nn.functional.linear(x, t["linear.weight"], t["linear.bias"])
    else:
        h = torch.nn.functional.linear(x, t["hidden.weight"], t["hidden.bias"])
        h = torch.relu(h) if m.model.activation == "relu" else torch.tanh(h)
        eta = torch.nn.functional.linear(h, t["output.weight"], t["output.bias"])
    eta = eta.squeeze(1)
    return (torch.sigmoid(eta) if m.target == "binary" else eta).numpy()


@pytest.mark.parametrize("target", ["binary", "time_to_event"])
@pytest.mark.parametrize(("hidden", "activation"), [(0, None), (16, "tanh"), (8, "relu")])
def test_prediction_matches_torch(target: TargetKind, hidden: int, activation: str | None) -> None:
    manifest = synthetic_manifest("sig", GENES, target=target, hidden_units=hidden, seed=4)
    if hidden:
        manifest = msgspec.structs.replace(
            manifest,
            model=Architecture(kind="mlp", hidden_units=hidden, activation=activation),  # type: ignore[arg-type]
        )
    tensors = synthetic_tensors(manifest, seed=4)
    model = SignatureModel(manifest, tensors)
    raw = np.random.default_rng(0).gamma(0.8, 5.0, size=(50, len(GENES)))
    raw[::7, 2] = 0.0
    np.testing.assert_allclose(model.predict(raw).values, torch_reference(model, tensors, raw), rtol=1e-12, atol=1e-12)


def test_risk_groups_split_at_the_cutpoints() -> None:
    manifest = synthetic_manifest("sig", GENES, target="time_to_event")
    model = SignatureModel(manifest, synthetic_tensors(manifest))
    raw = np.random.default_rng(1).gamma(1.0, 4.0, size=(200, len(GENES)))
    predictions = model.predict(raw)
    expected = np.where(predictions.values >= 0.0, "high", "low")
    assert predictions.groups == expected.tolist()
    assert {"low", "high"} == set(predictions.groups)


def test_probabilities_stay_in_range_for_extreme_inputs() -> None:
    manifest = synthetic_manifest("sig", GENES)
    model = SignatureModel(manifest, synthetic_tensors(manifest))
    values = model.predict(np.array([[1e300] * len(GENES), [0.0] * len(GENES)])).values
    assert np.all((values >= 0) & (values <= 1)) and np.all(np.isfinite(values))


def test_negative_expression_is_refused_naming_row_and_gene() -> None:
    manifest = synthetic_manifest("sig", GENES)
    model = SignatureModel(manifest, synthetic_tensors(manifest))
    raw = np.ones((3, len(GENES)))
    raw[2, 4] = -1.0
    with pytest.raises(BadRequest, match="row 2, gene G4: expression values must be >= 0") as info:
        model.predict(raw)
    assert info.value.detail == {"row": 2, "gene": "G4"}
