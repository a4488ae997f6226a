"""The signature-set run's gate: each signature computes its share of the permutations, each competitive size is
drawn by one instance, and RegisterSignatures decides over all of them as run-local does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genesig.errors import GenesigError
from genesig.pipeline.results import ROW_COLUMNS, Outcome, RunReport, SignatureResult, judge
from genesig.pipeline.settings import CohortSettings, GateSettings
from genesig.pipeline.signature_set import NULLS, OUTCOMES, PLAN_FILE, SKIPPED_FILE, collect, prepare_set, read_shards
from genesig.pipeline.signatures import GeneSignature
from genesig.pipeline.significance import null_size
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort


def test_each_competitive_size_is_drawn_by_one_instance_and_every_signature_gets_its_permutations(
    tmp_path: Path,
) -> None:
    """PrepareSignatureSet deals the sizes the competitive test needs across the shards, each size once, and tells
    every instance how many permutations each signature computes (the run's at least 200, one each at least)."""
    sizes = [2, 3, 3, 5, 8, 12, 12, 20, 33, 40]
    sets = [GeneSignature(f"s{i}_{k}", tuple(f"G{i}_{j}" for j in range(k))) for i, k in enumerate(sizes)]
    data = write_synthetic_cohort(tmp_path / "c.csv", sets, SyntheticSpec(seed=0, background_genes=60))
    gmt = tmp_path / "sets.json"
    gmt.write_text(json.dumps({s.name: list(s.genes) for s in sets}))
    prepare_set(data, gmt, tmp_path / "set", shards=3, settings=CohortSettings(), gate=GateSettings(permutations=25))
    dealt = []
    for shard in sorted((tmp_path / "set" / "shards").glob("shard-*.json")):
        folder = tmp_path / shard.stem
        folder.mkdir()
        (folder / shard.name).write_bytes(shard.read_bytes())
        mine = read_shards(folder, [g for s in sets for g in s.genes], 2)
        assert mine.permutations == 3, "25 over 10 signatures: 3 each"
        dealt.append(mine.competitive_sizes)
    assert all(dealt), "every instance draws a share"
    flat = [k for share in dealt for k in share]
    assert sorted(flat) == sorted({null_size(k) for k in sizes}), "each size once, none missing"
    off = tmp_path / "off"
    prepare_set(data, gmt, off, shards=3, settings=CohortSettings(), gate=GateSettings(competitive="off"))
    docs = [json.loads(p.read_text()) for p in (off / "shards").glob("shard-*.json")]
    assert all(d["competitive_sizes"] == [] for d in docs), "the competitive test off: no random sets to draw"


def done(name: str, genes: int, value: float, permuted: list[float]) -> SignatureResult:
    return SignatureResult(
        signature=name, artifact_name=name, genes=[f"G{j}" for j in range(genes)], missing_genes=[],
        outcome=Outcome.PASSED,
        metric="auc", cv_mean=value, cv_pooled=value, threshold_passed=True,
        threshold_reason=f"cross-validated mean auc {value:.3f} >= threshold 0.600", permuted=permuted,
    )  # fmt: skip


def a_run(tmp_path: Path, outcomes: list[list[SignatureResult]], nulls: dict[str, Any] | None) -> tuple[Path, Path]:
    """A RegisterSignatures input: each instance's outcomes and, maybe, one instance's competitive nulls."""
    results, set_dir = tmp_path / "results", tmp_path / "set"
    (results / OUTCOMES).mkdir(parents=True)
    set_dir.mkdir()
    (set_dir / SKIPPED_FILE).write_text("[]")
    count = sum(len(o) for o in outcomes)
    (set_dir / PLAN_FILE).write_text(json.dumps({"signatures": count, "genes": 400}))
    for i, instance in enumerate(outcomes):
        (results / OUTCOMES / f"algo-{i + 1}.json").write_text(json.dumps([r.to_json() for r in instance]))
    if nulls is not None:
        (results / NULLS).mkdir()
        (results / NULLS / "algo-1.json").write_text(json.dumps(nulls))
    return results, set_dir


NOISE = [0.47 + 0.001 * (i % 61) for i in range(60)]


def test_register_signatures_pools_every_instances_permutations_as_run_local_does(tmp_path: Path) -> None:
    """The same signatures split over two instances or held by one: the same p and q (the pool is the run's)."""
    rows = [done(f"s{i}", 3 + i, 0.5 + 0.03 * i, NOISE[i::6]) for i in range(6)]
    gate = GateSettings(competitive="off")
    split, _ = collect(*a_run(tmp_path / "split", [rows[:2], rows[2:]], None), gate)
    one, nulls = collect(*a_run(tmp_path / "one", [rows], None), gate)
    assert [(r.p_value, r.q_value, r.outcome) for r in split] == [(r.p_value, r.q_value, r.outcome) for r in one]
    assert all(r.permutations == 60 for r in one) and "60 permutations of 6 signatures" in nulls.self_contained
    best = max(one, key=lambda r: r.cv_pooled or 0)
    # Beyond every draw, and too few draws (60) to fit a tail to: the pool's own 1 / (N + 1).
    assert best.outcome == "passed" and best.p_value == pytest.approx(1 / 61)
    off, _ = collect(*a_run(tmp_path / "off", [rows], None), GateSettings(permutations=0, competitive="off"))
    assert all(r.outcome == "passed" and r.p_value is None for r in off), "the test off: the threshold decides"


def test_register_signatures_refuses_a_run_whose_competitive_nulls_did_not_arrive(tmp_path: Path) -> None:
    rows = [done("s", 3, 0.7, NOISE)]
    with pytest.raises(GenesigError, match="no random-set null for signatures of 3 genes"):
        collect(*a_run(tmp_path / "a", [rows], None), GateSettings())
    values = [0.5 + 0.01 * (i % 21 - 10) for i in range(50)]
    sized = {"genes": 400, "sizes": {"3": {"weight": 0.1, "holding": values, "rest": values}}}
    [row], nulls = collect(*a_run(tmp_path / "b", [rows], sized), GateSettings())
    assert row.competitive == "tested" and row.competitive_p is not None and row.random_sets == 100
    assert "random gene sets" in nulls.competitive and "400 genes" in nulls.competitive


def test_register_signatures_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    """A nulls file from an earlier image (sizes at the top level) or cut short, an outcome from an earlier image:
    one line naming it."""
    rows = [done("s", 3, 0.7, NOISE)]
    for name, doc in (("old", {"3": {"weight": 0.1, "holding": [0.5], "rest": [0.5]}}), ("cut", {"genes": 400})):
        with pytest.raises(GenesigError, match=r"nulls/algo-1.json: .*rerun the pipeline with this image"):
            collect(*a_run(tmp_path / name, [rows], doc), GateSettings())
    results, set_dir = a_run(tmp_path / "torn", [rows], None)
    (results / NULLS).mkdir()
    (results / NULLS / "algo-1.json").write_text('{"3": {"weight"')
    with pytest.raises(GenesigError, match="nulls/algo-1.json"):
        collect(results, set_dir, GateSettings())
    results, set_dir = a_run(tmp_path / "outcome", [rows], None)
    doc = json.loads((results / OUTCOMES / "algo-1.json").read_text())
    doc[0]["null_replicates"] = 100  # a field of an earlier image
    (results / OUTCOMES / "algo-1.json").write_text(json.dumps(doc))
    with pytest.raises(GenesigError, match="not an outcome this version reads.*rerun the pipeline with this image"):
        collect(results, set_dir, GateSettings(competitive="off"))


def test_the_verdict_is_returned_and_the_set_runs_report_has_run_locals_columns(tmp_path: Path) -> None:
    """``judge`` returns the decided results and leaves the ones given as they were; RegisterSignatures' report is
    written by run-local's writer: the same document, the same columns."""
    rows = [done(f"s{i}", 3 + i, 0.5 + 0.03 * i, NOISE[i::6]) for i in range(6)]
    before = [r.to_json() for r in rows]
    decided, nulls = judge(rows, GateSettings(competitive="off"))
    assert [r.to_json() for r in rows] == before, "the results given are not changed"
    assert all(r.p_value is not None for r in decided) and all(r.p_value is None for r in rows)
    set_run = ("fdr", "permutations", "competitive", "random_sets")  # what RegisterSignatures is given
    doc = RunReport(GateSettings(), decided, nulls, context={"approval_status": "Approved"}, gate_fields=set_run).write(
        tmp_path, "report"
    )
    assert set(set_run) <= doc["run"].keys() and "threshold" not in doc["run"], "no setting the run was not given"
    header = (tmp_path / "report.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == ROW_COLUMNS == tuple(doc["signatures"][0])
    assert doc["run"]["approval_status"] == "Approved" and sum(doc["run"]["counts"].values()) == 6
