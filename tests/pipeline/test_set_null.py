"""The signature-set run's null: each size drawn by one instance, every p computed by RegisterSignatures over all
of them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from genesig.errors import GenesigError
from genesig.pipeline.run import SignatureResult
from genesig.pipeline.settings import CohortSettings, GateSettings
from genesig.pipeline.signature_set import NULLS, OUTCOMES, PLAN_FILE, SKIPPED_FILE, collect, prepare_set, read_shards
from genesig.pipeline.signatures import GeneSignature
from genesig.pipeline.significance import null_size
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort


def test_each_null_size_is_drawn_by_exactly_one_instance(tmp_path: Path) -> None:
    """PrepareSignatureSet deals the sizes the run's null needs across the shards, each size once."""
    sizes = [2, 3, 3, 5, 8, 12, 12, 20, 33, 40]
    sets = [GeneSignature(f"s{i}_{k}", tuple(f"G{i}_{j}" for j in range(k))) for i, k in enumerate(sizes)]
    data = write_synthetic_cohort(tmp_path / "c.csv", sets, SyntheticSpec(seed=0, background_genes=10))
    gmt = tmp_path / "sets.json"
    gmt.write_text(json.dumps({s.name: list(s.genes) for s in sets}))
    prepare_set(data, gmt, tmp_path / "set", shards=3, settings=CohortSettings())
    dealt = []
    for shard in sorted((tmp_path / "set" / "shards").glob("shard-*.json")):
        folder = tmp_path / shard.stem
        folder.mkdir()
        (folder / shard.name).write_bytes(shard.read_bytes())
        _, mine = read_shards(folder, [g for s in sets for g in s.genes], 2)
        dealt.append(mine)
    assert all(dealt), "every instance draws a share"
    flat = [k for share in dealt for k in share]
    assert sorted(flat) == sorted({null_size(k) for k in sizes}), "each size once, none missing"


def a_run(tmp_path: Path, nulls: dict[str, Any] | None) -> tuple[Path, Path]:
    """A RegisterSignatures input: one instance's outcome (a 3-gene signature evaluated) and, maybe, its nulls."""
    results, set_dir = tmp_path / "results", tmp_path / "set"
    (results / OUTCOMES).mkdir(parents=True)
    set_dir.mkdir()
    (set_dir / SKIPPED_FILE).write_text("[]")
    (set_dir / PLAN_FILE).write_text(json.dumps({"signatures": 1}))
    done = SignatureResult(
        signature="s", name="s", genes=["A", "B", "C"], missing_genes=[], status="done", metric="auc",
        cv_mean=0.7, cv_pooled=0.7, threshold_passed=True, threshold_reason="cross-validated mean auc 0.700 >= 0.6",
    )  # fmt: skip
    (results / OUTCOMES / "algo-1.json").write_text(json.dumps([asdict(done)]))
    if nulls is not None:
        (results / NULLS).mkdir()
        (results / NULLS / "algo-1.json").write_text(json.dumps(nulls))
    return results, set_dir


def test_register_signatures_refuses_a_run_whose_nulls_did_not_arrive(tmp_path: Path) -> None:
    results, set_dir = a_run(tmp_path, None)
    with pytest.raises(GenesigError, match="no null for signatures of 3 genes"):
        collect(results, set_dir, GateSettings(null_replicates=100))
    [row] = collect(results, set_dir, GateSettings(null_replicates=0))  # the null off: the threshold decides
    assert row.outcome == "passed" and row.p_value is None


def test_register_signatures_computes_p_from_the_sizes_of_the_signatures_evaluated(tmp_path: Path) -> None:
    """A size dealt for a signature that then failed is not part of the tail (as in run-local)."""
    values = [0.5 + 0.01 * (i % 21 - 10) for i in range(50)]
    null = {"weight": 0.1, "holding": values, "rest": values}
    results, set_dir = a_run(tmp_path, {"3": null, "40": {"weight": 0.5, "holding": [0.9] * 50, "rest": [0.1] * 50}})
    [row] = collect(results, set_dir, GateSettings(null_replicates=100))
    alone = collect(*a_run(tmp_path / "alone", {"3": null}), GateSettings(null_replicates=100))[0]
    assert row.p_value == alone.p_value and row.p_value is not None
    assert row.null_replicates == 100


def test_register_signatures_names_a_nulls_file_it_cannot_read(tmp_path: Path) -> None:
    """A nulls file from an image before the strata (a list per size) or cut short: one line naming it."""
    for name, doc in (("old", {"3": [0.5] * 100}), ("cut", {"3": {"weight": 0.1, "holding": [0.5]}})):
        results, set_dir = a_run(tmp_path / name, doc)
        with pytest.raises(GenesigError, match=r"nulls/algo-1.json: .*rerun the pipeline with this image"):
            collect(results, set_dir, GateSettings(null_replicates=100))
    results, set_dir = a_run(tmp_path / "torn", None)
    (results / NULLS).mkdir()
    (results / NULLS / "algo-1.json").write_text('{"3": {"weight"')
    with pytest.raises(GenesigError, match="nulls/algo-1.json"):
        collect(results, set_dir, GateSettings(null_replicates=100))
