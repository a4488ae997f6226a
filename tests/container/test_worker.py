"""A pool worker's side: what opening a signature really costs, against the cost admission charges for it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genesig.artifact import extract_artifact, load_model_dir
from genesig.artifact.package import MAP_MIN_BYTES, opened_memory, weights_mappable, write_artifact
from genesig.artifact.synthetic import synthetic_manifest, write_synthetic_artifact

MEASURE = """
import gc, json, sys
from pathlib import Path
import psutil
from genesig.artifact import load_model_dir
from genesig.artifact.package import opened_memory, weights_mappable
from genesig.container import codec

dirs = [Path(p) for p in json.loads(sys.argv[1])]
first = load_model_dir(dirs[0])  # imports and first-use costs, not counted
gc.collect()
before = psutil.Process().memory_full_info().uss
models = []
for folder in dirs:
    model = load_model_dir(folder, map_weights=weights_mappable(folder))
    body = json.dumps({"inputs": [[1.0] * len(model.manifest.genes)]}).encode()
    model.predict(codec.decode_request(body, codec.JSON, model.manifest.genes, ("id",), 10).matrix)
    models.append(model)
gc.collect()
used = (psutil.Process().memory_full_info().uss - before) / len(dirs)
print(json.dumps({"measured": used, "charged": opened_memory(first.manifest, mapped=weights_mappable(dirs[0]))[0]}))
"""


@pytest.mark.parametrize(("genes", "count"), [(20, 300), (200, 300), (2000, 40)])
def test_what_a_worker_pays_to_open_a_signature_is_what_admission_charges(
    tmp_path: Path, genes: int, count: int
) -> None:
    names = [f"GENE{i:05d}" for i in range(genes)]
    dirs = [
        str(extract_artifact(write_synthetic_artifact(tmp_path / "a", f"s{i}", names, seed=i), tmp_path / f"m{i}"))
        for i in range(count)
    ]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(dirs)], capture_output=True, text=True, check=True
    ).stdout
    figures = json.loads(out)
    # Never less than it really takes (admission's promise), and not wastefully more.
    assert figures["measured"] <= figures["charged"] <= 2 * figures["measured"] + 8192, figures


def test_large_float64_weights_are_shared_and_charged_once(tmp_path: Path) -> None:
    genes = [f"GENE{i:05d}" for i in range(3000)]
    manifest = synthetic_manifest("wide", genes, hidden_units=8)
    rng = np.random.default_rng(0)
    tensors = {
        "hidden.weight": rng.normal(size=(8, 3000)),
        "hidden.bias": rng.normal(size=8),
        "output.weight": rng.normal(size=(1, 8)),
        "output.bias": rng.normal(size=1),
    }
    folder = extract_artifact(write_artifact(manifest, tensors, tmp_path / "a"), tmp_path / "m")
    assert weights_mappable(folder) and (folder / "weights.safetensors").stat().st_size >= MAP_MIN_BYTES
    mapped = load_model_dir(folder, map_weights=True)
    weight = mapped._tensors["hidden.weight"]
    assert not weight.flags.owndata and not weight.flags.writeable, "a view of the file's pages"
    read = load_model_dir(folder)
    assert (mapped.predict([[1.0] * 3000]).values == read.predict([[1.0] * 3000]).values).all()
    private, shared = opened_memory(mapped.manifest, mapped=True)
    size = (folder / "weights.safetensors").stat().st_size
    # Mapping moves the weights from each worker's private memory to pages every worker shares.
    assert shared == size and private == opened_memory(mapped.manifest, mapped=False)[0] - 2 * size
    # float32 weights cannot be mapped (the workers compute in float64): charged privately, twice the file.
    small = write_synthetic_artifact(tmp_path / "b", "narrow", genes, hidden_units=8)
    narrow = extract_artifact(small, tmp_path / "n")
    assert not weights_mappable(narrow)
    private32, shared32 = opened_memory(load_model_dir(narrow).manifest, mapped=False)
    assert shared32 == 0 and private32 >= 2 * (narrow / "weights.safetensors").stat().st_size
