"""The random-signature null, empirical p, Benjamini-Hochberg q and the run's gate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genesig.pipeline.cohort import read_cohort
from genesig.pipeline.run import RunOptions, SignatureResult, run_local
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.significance import (
    NullTail,
    RandomSignatureNull,
    SizeNull,
    StratifiedTail,
    assign_p_values,
    bh_qvalues,
    empirical_p,
    gate_run,
    null_size,
)
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

from .conftest import noise_and_planted


def test_bh_qvalues_match_the_step_up_procedure() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    # Sorted: 0.005, 0.01, 0.03, 0.04, 0.2 -> p*m/rank: 0.025, 0.025, 0.05, 0.05, 0.2 (already monotone).
    np.testing.assert_allclose(bh_qvalues(p), [0.025, 0.05, 0.05, 0.025, 0.2])
    # Monotone from the top: a larger p never gets a smaller q.
    q = bh_qvalues([0.04, 0.041, 0.9, 0.0])
    assert list(np.argsort(q, kind="stable")) == [3, 0, 1, 2] and q.max() <= 1
    assert bh_qvalues([]).size == 0


def test_empirical_p_counts_ties_against_the_signature_and_is_never_zero() -> None:
    null = np.array([0.5, 0.6, 0.7, 0.8])
    assert empirical_p(0.9, null) == pytest.approx(1 / 5)
    assert empirical_p(0.7, null) == pytest.approx(3 / 5)
    assert empirical_p(0.1, null) == pytest.approx(1.0)


def test_beyond_the_random_sets_p_comes_from_the_tail_the_sizes_share() -> None:
    rng = np.random.default_rng(0)
    nulls = {k: rng.normal(0.5, 0.05, size=100) for k in range(3, 13)}
    tail = NullTail(nulls)
    null = nulls[5]
    # Within the null: the empirical p, exactly.
    assert tail.p_value(0.52, 5) == empirical_p(0.52, null) > 0.2
    # Beyond every random set: far below 1 / (R + 1), so a correction over thousands can keep it.
    assert tail.p_value(0.8, 5) < 1e-4 < 1 / 101 == empirical_p(0.8, null)
    assert tail.p_value(0.58, 5) <= empirical_p(0.58, null)
    # A size too small to standardise keeps its empirical p.
    assert NullTail({**nulls, 40: np.array([0.5, 0.5])}).p_value(0.9, 40) == pytest.approx(1 / 3)
    # Too few random sets to fit a tail to (one size, 60 sets): no lower than the pool's own 1 / (N + 1).
    assert NullTail({5: null[:60]}).p_value(0.8, 5) == pytest.approx(1 / 61)
    # A metric that could not be computed is never significant.
    assert tail.p_value(float("nan"), 5) == 1.0


def test_a_heavy_tailed_null_gives_calibrated_p_values_where_a_normal_tail_would_not() -> None:
    """Random sets that happen to hold a prognostic gene, or a penalty chosen by chance, give the null a right tail
    heavier than a normal's. p from the generalised Pareto tail the sizes share stays near its nominal rate far
    beyond one size's R random sets; a normal fitted to each size passes noise tens of times too often."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:  # a heavy-tailed (Student t, 4 degrees of freedom) null around chance
        return 0.5 + 0.04 * rng.standard_t(4, n)

    nulls = {k: draw(100) for k in range(2, 32)}
    tail = NullTail(nulls)
    fresh = draw(200_000)  # random signatures the null never saw, all of them noise
    candidates = fresh[fresh > 0.6]  # the rest have p far above the levels checked
    for alpha in (1e-3, 1e-4):
        rate = np.mean([np.mean([tail.p_value(v, k) <= alpha for v in candidates]) for k in range(2, 32, 3)])
        rate *= len(candidates) / len(fresh)
        normal = np.mean(
            [np.mean(norm.sf((fresh - np.mean(nulls[k])) / np.std(nulls[k], ddof=1)) <= alpha) for k in nulls]
        )
        assert rate <= 3 * alpha, ("the shared tail", alpha, rate)
        assert normal >= 5 * alpha, ("a normal tail would have passed noise", alpha, normal)


def test_sizes_are_exact_when_small_and_binned_geometrically_when_large() -> None:
    assert [null_size(k) for k in range(1, 11)] == list(range(1, 11))
    sizes = [null_size(k) for k in range(11, 2001)]
    assert sizes == sorted(sizes), "monotone"
    assert all(abs(null_size(k) - k) / k <= 0.11 for k in range(11, 2001)), "within ~10% of the signature's size"
    assert len(set(sizes)) < 35, "few bins: the null is shared"


def result(name: str, *, passed: bool, p: float | None, value: float = 0.7) -> SignatureResult:
    verdict = f"cross-validated mean auc {value:.3f} {'>=' if passed else '<'} threshold 0.600"
    return SignatureResult(
        signature=name, name=name, genes=["A", "B", "C"], missing_genes=[], status="done", metric="auc",
        cv_mean=value, cv_pooled=value, threshold_passed=passed, threshold_reason=verdict, p_value=p, null_size=3,
        null_replicates=40,
        coverage=1.0,
    )  # fmt: skip


def test_the_gate_needs_the_threshold_and_the_fdr_and_names_every_part_that_failed() -> None:
    rows = [
        result("strong", passed=True, p=0.001),
        result("lucky", passed=True, p=0.5),
        result("weak_but_rare", passed=False, p=0.001, value=0.55),
        result("neither", passed=False, p=0.9, value=0.5),
    ]
    gate_run(rows, GateSettings(fdr=0.1))
    by = {r.signature: r for r in rows}
    strong = by["strong"].reason
    assert by["strong"].passed and "q 0.002 <= FDR 0.1" in strong and "coverage 100%" in strong
    assert "against 40 random 3-gene sets" in strong, "the null's own size, whatever the settings say"
    assert not by["lucky"].passed and by["lucky"].reason.startswith("q 0.667 > FDR 0.1")
    assert not by["weak_but_rare"].passed and "< threshold" in by["weak_but_rare"].reason
    assert "FDR" not in by["weak_but_rare"].reason, "only the parts that failed"
    both = by["neither"].reason
    assert "< threshold" in both and "> FDR" in both
    # Without a null (null_replicates 0) the threshold alone decides.
    alone = [result("x", passed=True, p=None)]
    gate_run(alone, GateSettings(null_replicates=0))
    assert alone[0].passed and "FDR" not in alone[0].reason


def test_a_signature_with_a_planted_effect_beats_the_random_null_and_noise_does_not(tmp_path: Path) -> None:
    everything = noise_and_planted(n_noise=20)  # 87 genes for random sets to be drawn from
    signatures = everything[:4]
    spec = SyntheticSpec(n_patients=200, seed=4, planted={"planted_a": 2.0}, dropout=0.0)
    data = write_synthetic_cohort(tmp_path / "c.csv", everything, spec)
    cohort = read_cohort(data)
    null = RandomSignatureNull(cohort, TrainSettings(cv_repeats=1), None, 40, tmp_path / "null")
    values = null.distribution(3)
    assert (len(values.holding), len(values.rest)) == (20, 20), "half of R in each stratum"
    assert 0.35 < float(values.percentiles([50])[0]) < 0.65, "random sets hover around chance"
    again = RandomSignatureNull(cohort, TrainSettings(cv_repeats=1), None, 40, tmp_path / "null").distribution(3)
    assert same_null(again, values)  # cached on disk, and seeded
    assert len(list((tmp_path / "null").glob("null-*-k3-r40.json"))) == 1
    in_parallel = RandomSignatureNull(cohort, TrainSettings(cv_repeats=1), None, 40, tmp_path / "null-2")
    in_parallel.draw([3, 5], jobs=2)
    assert same_null(in_parallel.distribution(3), values)  # the same draws, whatever the processes

    summary = run_local(
        RunOptions(
            data=data,
            workdir=tmp_path / "w",
            train=TrainSettings(cv_repeats=1),
            gate=GateSettings(null_replicates=40, threshold=0.5),
            signatures_file=write_sets(tmp_path, signatures),
        )
    )
    by = {r.signature: r for r in summary.results}
    assert by["planted_a"].passed and by["planted_a"].q_value is not None and by["planted_a"].q_value <= 0.1
    # Beyond every random set: below each stratum's own 1 / (20 + 1) at its size, from the pool of the run's sizes.
    assert by["planted_a"].p_value < 1 / 21
    for name in ("noise_0", "noise_1"):
        assert by[name].p_value is not None and by[name].q_value is not None
        assert not by[name].passed or by[name].q_value <= 0.1
    evaluation = (tmp_path / "w" / "signatures" / "planted_a" / "evaluation" / "evaluation.json").read_text()
    assert '"q_value"' in evaluation and '"coverage": 1.0' in evaluation


def same_null(a: SizeNull, b: SizeNull) -> bool:
    return a.weight == b.weight and np.array_equal(a.holding, b.holding) and np.array_equal(a.rest, b.rest)


def write_sets(tmp_path: Path, signatures: list) -> Path:  # type: ignore[type-arg]
    import json

    path = tmp_path / "sets.json"
    path.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    return path


def test_a_null_too_small_to_fit_its_tail_is_a_warning_that_says_how_low_p_can_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [result(name, passed=True, p=None) for name in ("a", "b")]
    rng = np.random.default_rng(0)
    assign_p_values(rows, {3: SizeNull(rng.normal(0.5, 0.05, 5), rng.normal(0.5, 0.05, 5), 0.25)})
    assert [r.p_value for r in rows] == [pytest.approx(1 / 6)] * 2, "no lower than each stratum's 1 / (N + 1)"
    assert "the null has 5 random sets in a stratum" in caplog.text and "much below 0.17" in caplog.text
    caplog.clear()
    assign_p_values(rows, {k: SizeNull(rng.normal(0.5, 0.05, 100), rng.normal(0.5, 0.05, 100), 0.1) for k in (3, 4)})
    assert "too few" not in caplog.text, "a fitted tail: no warning"


def run_bench(script: str, args: list[str], out: Path) -> tuple[str, dict[str, Any]]:
    """Run ``bench/<script>`` on a small case: its standard output and the report it wrote."""
    import json
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / script
    run = subprocess.run(
        [sys.executable, str(bench), *args, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, json.loads(out.read_text())


def bench_module(name: str) -> Any:
    """``bench/<name>.py``, imported as the benchmark runs it (its own folder first on the path)."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_the_gate_benchmark_reports_both_gates_on_planted_cohorts(tmp_path: Path) -> None:
    args = ["--seeds", "1", "--noise", "12", "--replicates", "10", "--cv-repeats", "1", "--processes", "1"]
    stdout, report = run_bench("significance.py", args, tmp_path / "significance.json")
    [seed] = report["runs"]
    for gate in ("null_and_fdr", "threshold_only"):
        assert set(seed[gate]) == {"planted_passed", "noise_passed", "noise_passed_holding_a_planted_gene", "fdp"}
        assert 0 <= seed[gate]["fdp"] <= 1 and seed[gate]["noise_passed_holding_a_planted_gene"] == 0, "none hold one"
    assert "| null + FDR (new) |" in stdout and "| threshold only (before) |" in stdout
    contamination = seed["null_contamination"]
    assert 0 <= contamination["holding_a_planted_gene"] <= contamination["random_sets"] > 0
    assert 0 <= contamination["planted_among_top_genes"] <= contamination["top_genes"] >= 1
    assert contamination["top_stratum_sets"] == 5 * seed["null_sizes"], "half of each size's 10 random sets"


def test_random_signatures_are_drawn_only_from_expression_columns(tmp_path: Path) -> None:
    import pandas as pd

    signatures = noise_and_planted(n_noise=5)
    data = write_synthetic_cohort(tmp_path / "c.csv", signatures, SyntheticSpec(n_patients=80, seed=2))
    frame = pd.read_csv(data)
    frame["Histology"] = ["adeno" if i % 2 else "squamous" for i in range(len(frame))]  # a clinical column
    frame.to_csv(data, index=False)
    null = RandomSignatureNull(read_cohort(data), TrainSettings(cv_repeats=1), None, 15, tmp_path / "null")
    assert "Histology" not in null.genes and len(null.genes) == 27
    assert null.distribution(5).replicates == 15 and "Histology" not in null.top_genes


def test_the_null_cache_is_keyed_by_how_values_are_read_and_the_penalty_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genesig.pipeline import significance
    from genesig.pipeline.cohort import CohortColumns

    data = write_synthetic_cohort(tmp_path / "c.csv", noise_and_planted(n_noise=4), SyntheticSpec(seed=1))
    raw = RandomSignatureNull(read_cohort(data), TrainSettings(), None, 5, tmp_path)._cache_key()
    logged = RandomSignatureNull(read_cohort(data, CohortColumns(values="log")), TrainSettings(), None, 5, tmp_path)
    assert logged._cache_key() != raw
    monkeypatch.setattr(significance, "L2_GRID", (1.0, 10.0))
    assert RandomSignatureNull(read_cohort(data), TrainSettings(), None, 5, tmp_path)._cache_key() != raw


def test_a_random_set_that_cannot_be_fitted_is_left_out_of_the_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genesig.errors import DataError
    from genesig.pipeline import significance

    data = write_synthetic_cohort(tmp_path / "c.csv", noise_and_planted(n_noise=4), SyntheticSpec(seed=1))
    real = significance.cross_validate
    calls = iter(range(100))

    def diverging_once(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 2:
            raise DataError("training diverged (non-finite weights); try a larger --l2")
        return real(*args, **kwargs)

    monkeypatch.setattr(significance, "cross_validate", diverging_once)
    null = RandomSignatureNull(read_cohort(data), TrainSettings(cv_repeats=1, l2=0.1), None, 6, tmp_path / "null")
    values = null.distribution(3)
    assert values.replicates == 5 and np.isfinite(np.concatenate([values.holding, values.rest])).all()


def test_the_gate_benchmarks_noise_sets_hold_planted_genes_only_when_asked() -> None:
    bench = bench_module("significance")

    from genesig.pipeline.signatures import GeneSignature

    def holding(signatures: list[GeneSignature]) -> int:
        return sum(any(g.startswith("planted_") for g in s.genes) for s in signatures[2:])

    assert holding(bench.signature_set(300, 0)) == 0
    assert holding(bench.signature_set(300, 0, noise_holds_planted=True)) > 10, "a few percent of sets of 3-100 genes"


def test_the_power_ceiling_benchmark_bounds_each_planted_signatures_true_p(tmp_path: Path) -> None:
    from scipy.stats import hypergeom

    args = ["--seeds", "1", "--noise", "12", "--hold-draws", "12", "--clean-draws", "12", "--processes", "1"]
    _, report = run_bench("significance_bound.py", args, tmp_path / "bound.json")
    [seed] = report["runs"]
    assert seed["p_hold"] == pytest.approx(float(hypergeom.sf(0, seed["genes"], 20, 10))), "P(a 10-gene set holds one)"
    assert seed["bh_line"] == pytest.approx(0.1 * 2 / 14)
    assert set(seed["planted"]) == {"planted_strong", "planted_moderate"}
    for planted in seed["planted"].values():
        assert 0 <= planted["p_lower_bound_95"] <= planted["p_true"] <= 1
        assert planted["passable"] == (planted["p_true"] <= seed["bh_line"])
        assert not (planted["passable"] and planted["surely_not_passable"])
        reached, drawn = map(int, planted["reach_of_holding"].split("/"))
        assert drawn == 12 and planted["p_true"] >= seed["p_hold"] * reached / drawn
    both = seed["planted"].values()
    assert report["summary"]["power_ceiling"] == sum(p["passable"] for p in both) / 2
    assert report["summary"]["power_ceiling_upper"] == sum(not p["surely_not_passable"] for p in both) / 2


def test_the_power_ceilings_conditioned_draws_hold_a_planted_gene_or_none() -> None:
    bound = bench_module("significance_bound")
    genes = [f"N{j}" for j in range(200)] + ["planted_strong_G0", "planted_strong_G1"]
    planted = {"planted_strong_G0", "planted_strong_G1"}
    rng = np.random.default_rng(0)
    holding = bound.draw_sets(genes, planted, True, 30, rng)
    clean = bound.draw_sets(genes, planted, False, 30, rng)
    assert all(len(s) == 10 and planted & set(s) for s in holding)
    assert all(len(s) == len(set(s)) == 10 and not planted & set(s) for s in clean)


def test_each_genes_discrimination_alone_is_the_metric_computed_on_it() -> None:
    from genesig.pipeline.metrics import discrimination, discrimination_by_column

    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(60, 7)), 1)  # rounded: ties, counted 1/2 as in the metric
    values[:, 6] = 1.0  # a constant gene: no information
    event = rng.random(60) < 0.4
    time = np.round(rng.exponential(10, 60), 0)  # tied times: not comparable pairs
    for t in (None, time):
        alone = discrimination_by_column(event=event, time=t, values=values)
        expected = [discrimination(event=event, time=t, risk_score=values[:, j]) for j in range(7)]
        np.testing.assert_allclose(alone, expected)
        assert alone[6] == pytest.approx(0.5)


def test_the_null_draws_half_its_random_sets_among_those_holding_a_top_gene_with_their_exact_share(
    tmp_path: Path,
) -> None:
    from scipy.stats import hypergeom

    everything = noise_and_planted(n_noise=20)
    spec = SyntheticSpec(n_patients=200, seed=4, planted={"planted_a": 2.0}, dropout=0.0)
    cohort = read_cohort(write_synthetic_cohort(tmp_path / "c.csv", everything, spec))
    null = RandomSignatureNull(cohort, TrainSettings(cv_repeats=1), None, 41, tmp_path / "null")
    genes = len(null.genes)
    [top] = null.top_genes  # 1% of 87 genes, at least one
    # The best gene alone (the training patients, either direction): one of the planted signature's.
    assert top in next(s for s in everything if s.name == "planted_a").genes
    for size in (3, 10):
        holding, rest = null.random_sets(size)
        assert (len(holding), len(rest)) == (20, 21), "R // 2 holding one, the rest holding none"
        assert all(top in s and len(s) == len(set(s)) == size for s in holding)
        assert all(top not in s and len(s) == len(set(s)) == size for s in rest)
        assert null.weight(size) == pytest.approx(float(hypergeom.sf(0, genes, 1, size))) == pytest.approx(size / genes)
    assert null.random_sets(10) == null.random_sets(10), "the same sets on every call"
    # A size no set can be drawn at without a top gene: every random set holds one.
    null.top_genes = null.genes[:80]
    holding, rest = null.random_sets(10)
    assert null.weight(10) == 1.0 and (len(holding), len(rest)) == (41, 0)


def test_the_stratified_p_is_the_share_of_all_random_sets_that_reach_the_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sets holding gene G0 score 0.9, the others around 0.5: a signature at 0.85 is reached by exactly the share of
    sets holding G0, 10% of 10-gene sets from 100 genes. Uniform draws at R = 100 hold G0 ~10 times, give p between
    ~0.05 and ~0.15 and nothing beyond; the strata give the share itself."""
    import pandas as pd

    from genesig.pipeline import significance

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.exponential(5.0, size=(120, 100)), columns=[f"G{j}" for j in range(100)])
    frame.insert(0, "Case_ID", [f"P{i}" for i in range(120)])
    frame["SurvivalStatus"] = np.arange(120) % 3 == 0
    frame.astype({"SurvivalStatus": int}).to_csv(tmp_path / "c.csv", index=False)
    null = RandomSignatureNull(read_cohort(tmp_path / "c.csv"), TrainSettings(cv_repeats=1), None, 100, tmp_path / "n")
    assert len(null.genes) == 100
    null.top_genes = ["G0"]

    def metric(cohort: Any, train: Any, target: Any, genes: list[str]) -> float:
        jitter = (sum(int(g[1:]) ** 2 for g in genes) % 97) / 970  # deterministic, below 0.1
        return 0.9 + jitter if "G0" in genes else 0.45 + jitter

    monkeypatch.setattr(significance, "random_set_cv", metric)
    sizes = {10: null.distribution(10), 11: null.distribution(11)}
    tail = StratifiedTail(sizes)
    assert tail.p_value(0.85, 10) == pytest.approx(0.1, rel=0.02)
    assert tail.p_value(0.85, 11) == pytest.approx(0.11, rel=0.02)
    assert tail.p_value(0.2, 10) == pytest.approx(1.0)
    assert tail.p_value(2.0, 10) < 0.1 / 50, "beyond every random set: each stratum's tail"
    # Percentiles weigh each stratum by its share: 90% of all sets hold no G0, so the median is theirs.
    assert 0.45 <= sizes[10].percentiles([50])[0] < 0.55 and sizes[10].percentiles([99])[0] >= 0.9
    # Through JSON (the set run's nulls travel between instances) nothing changes.
    import json

    back = SizeNull.from_json(json.loads(json.dumps(sizes[10].to_json())))
    assert same_null(back, sizes[10])


def test_the_calibration_report_compares_the_gates_p_with_the_true_p_of_the_same_cohorts() -> None:
    calibration = bench_module("calibration")

    def planted(p: float, lower: float | None = None) -> dict[str, float]:
        return {"p": p} if lower is None else {"p_true": p, "p_lower_bound_95": lower}

    gate = {
        "parameters": {"patients": "200", "gene_noise": "1.2"},
        "runs": [{"seed": 0, "planted": {"a": planted(1e-5), "b": planted(4e-3)}}],
    }
    bound = {
        "parameters": {"patients": "200", "gene_noise": "1.2", "background_genes": "0"},
        "runs": [{"seed": 0, "planted": {"a": planted(1e-3, 5e-4), "b": planted(2e-3, 1e-3)}}],
    }
    result = calibration.compare(gate, bound)
    assert [r["ratio"] for r in result["rows"]] == [pytest.approx(0.01), pytest.approx(2.0)]
    assert result["below_the_lower_bound"] == 1, "a's 1e-5 is below its true p's lower bound: too small for sure"
    assert result["median_ratio"] == pytest.approx(10 ** ((-2 + math.log10(2)) / 2))
    with pytest.raises(SystemExit, match="--gene-noise: the gate report has 0.6, the bound report 1.2"):
        calibration.compare({**gate, "parameters": {}}, bound)
