"""The stock approach, for comparison only: a model backend that imports torch and runs the model in torch.

This is what the AWS sample and sagemaker-pytorch-inference do per loaded model.
It reads our artifact format so both handlers serve the same models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from genesig.artifact import read_manifest

_state: dict[str, Any] = {}


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    if data is None:
        model_dir = Path(context.system_properties["model_dir"])
        manifest = read_manifest(model_dir)
        tensors = safetensors.torch.load_file(str(model_dir / "weights.safetensors"))
        linear = torch.nn.Linear(len(manifest.genes), 1)
        linear.load_state_dict({"weight": tensors["linear.weight"], "bias": tensors["linear.bias"]})
        _state.update(
            model=linear.eval(),
            center=torch.tensor(manifest.preprocessing.center),
            scale=torch.tensor(manifest.preprocessing.scale),
        )
        return None
    rows = json.loads(data[0]["body"])["inputs"]
    with torch.no_grad():
        x = (torch.log1p(torch.tensor(rows, dtype=torch.float32)) - _state["center"]) / _state["scale"]
        probability = torch.sigmoid(_state["model"](x)).squeeze(1).tolist()
    return [json.dumps({"predictions": [{"probability": p} for p in probability]}).encode()]
