"""The gate's self-contained permutation test, the competitive test beside it, Benjamini-Hochberg q and the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genesig.pipeline.cohort import read_cohort
from genesig.pipeline.results import Outcome, SignatureResult
from genesig.pipeline.run import RunOptions, run_local
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.significance import (
    SHAPE_FLOOR,
    PermutationNull,
    PooledTail,
    RandomSignatureNull,
    SizeNull,
    SizeSmoothedNull,
    StratifiedNull,
    competitive_applicable,
    competitive_p_values,
    decide,
    empirical_p,
    null_size,
    permutation_rows,
    permutations_per_signature,
)
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

from .conftest import noise_and_planted


def test_empirical_p_counts_ties_against_the_signature_and_is_never_zero() -> None:
    null = np.array([0.5, 0.6, 0.7, 0.8])
    assert empirical_p(0.9, null) == pytest.approx(1 / 5)
    assert empirical_p(0.7, null) == pytest.approx(3 / 5)
    assert empirical_p(0.1, null) == pytest.approx(1.0)


def test_the_competitive_p_is_the_share_of_random_sets_and_beyond_them_the_tail_the_sizes_share() -> None:
    rng = np.random.default_rng(0)
    nulls = {k: SizeNull(rng.normal(0.5, 0.05, 50), rng.normal(0.5, 0.05, 50), 0.2) for k in range(3, 13)}
    tail = StratifiedNull(nulls)
    pool = np.concatenate([np.r_[n.holding, n.rest] for n in nulls.values()])
    # Within the random sets: about their share.
    assert tail.p_value(0.52, 5) == pytest.approx(empirical_p(0.52, pool), rel=0.15)
    # Beyond every random set: far below 1 / (N + 1), so a correction over thousands can keep it.
    assert tail.p_value(0.8, 5) < 1e-4 < 1 / (len(pool) + 1)
    # Too few random sets to fit a tail to (one size, 15 per stratum): no lower than each stratum's 1 / (N + 1).
    few = StratifiedNull({5: SizeNull(rng.normal(0.5, 0.05, 15), rng.normal(0.5, 0.05, 15), 0.2)})
    assert few.p_value(0.8, 5) == pytest.approx(1 / 16)
    # A metric that could not be computed is never significant.
    assert tail.p_value(float("nan"), 5) == 1.0


def test_the_competitive_null_follows_a_metric_that_rises_and_narrows_with_size() -> None:
    """On real cohorts the random sets' metric rises and narrows with size (gse1992: 0.53 +- 0.06 at 3 genes,
    0.67 +- 0.03 at 155). Drawn at 20 sets per size and smoothed over the sizes, noise at the smallest and at the
    largest size still gets p <= 0.05 and 0.01 near the nominal rate; a kernel's weighted mean and spread (no slope)
    would put the largest size's null far too low (~8 times the rate at 0.05)."""

    def draw(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
        return 0.5 + 0.03 * np.log2(k) + (0.07 - 0.008 * np.log2(k)) * rng.standard_normal(n)

    rng = np.random.default_rng(3)
    sizes = sorted({null_size(k) for k in range(3, 160)})
    tail = StratifiedNull({k: SizeNull(np.empty(0), draw(rng, k, 20), 0.0) for k in sizes})
    for k in (sizes[0], sizes[-1]):
        fresh = draw(rng, k, 4_000)
        p = np.array([tail.p_value(float(v), k) for v in fresh])
        for alpha in (0.05, 0.01):
            assert 0.5 * alpha <= np.mean(p <= alpha) <= 2 * alpha, (k, alpha, np.mean(p <= alpha))


def test_a_heavy_tailed_null_gives_calibrated_p_values_where_a_normal_tail_would_not() -> None:
    """Random sets that happen to hold a prognostic gene, or a penalty chosen by chance, give the null a right tail
    heavier than a normal's. p from the generalised Pareto tail the sizes share stays near its nominal rate far
    beyond one size's random sets; a normal fitted to each size passes noise tens of times too often."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:  # a heavy-tailed (Student t, 4 degrees of freedom) null around chance
        return 0.5 + 0.04 * rng.standard_t(4, n)

    nulls = {k: draw(100) for k in range(2, 32)}
    tail = SizeSmoothedNull((k, float(v)) for k, values in nulls.items() for v in values)
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


def result(
    name: str, *, passed: bool, p: float | None, value: float = 0.7, versus: float | None = None
) -> SignatureResult:
    verdict = f"cross-validated mean auc {value:.3f} {'>=' if passed else '<'} threshold 0.600"
    return SignatureResult(
        signature=name, artifact_name=name, genes=["A", "B", "C"], missing_genes=[], metric="auc",
        outcome=Outcome.PASSED if passed else Outcome.BELOW_THRESHOLD,
        cv_mean=value, cv_pooled=value, threshold_passed=passed, threshold_reason=verdict, p_value=p,
        competitive="tested" if versus is not None else "", competitive_p=versus, null_size=3, random_sets=40,
        coverage=1.0,
    )  # fmt: skip


def apply(rows: list[SignatureResult], gate: GateSettings) -> None:
    """The verdicts in place (the tests read the rows they made)."""
    for i, verdict in enumerate(decide(rows, gate)):
        assert verdict is not None
        rows[i].__dict__.update(rows[i].decided(verdict).__dict__)


def test_the_gate_needs_the_threshold_and_the_fdr_and_names_every_part_that_failed() -> None:
    rows = [
        result("strong", passed=True, p=0.001),
        result("lucky", passed=True, p=0.5),
        result("weak_but_rare", passed=False, p=0.001, value=0.55),
        result("neither", passed=False, p=0.9, value=0.5),
    ]
    apply(rows, GateSettings(fdr=0.1))
    by = {r.signature: r for r in rows}
    strong = by["strong"].reason
    assert by["strong"].passed and "q 0.002 <= FDR 0.1" in strong and "coverage 100%" in strong
    assert "with the outcome permuted" in strong and by["strong"].outcome == "passed"
    # Benjamini-Hochberg: p x m / rank, monotone from the top (0.001 x 4 / 2).
    assert by["strong"].q_value == pytest.approx(0.002) and by["lucky"].q_value == pytest.approx(2 / 3)
    assert not by["lucky"].passed and by["lucky"].reason.startswith("q 0.667 > FDR 0.1")
    assert by["lucky"].outcome == "not significant"
    assert not by["weak_but_rare"].passed and "< threshold" in by["weak_but_rare"].reason
    assert "FDR" not in by["weak_but_rare"].reason and by["weak_but_rare"].outcome == "below threshold"
    both = by["neither"].reason
    assert "< threshold" in both and "> FDR" in both and by["neither"].outcome == "below threshold"
    # The self-contained test off (--permutations 0: no p): the threshold alone decides.
    alone = [result("x", passed=True, p=None)]
    apply(alone, GateSettings(permutations=0))
    assert alone[0].passed and "FDR" not in alone[0].reason


def test_the_competitive_test_is_reported_beside_the_verdict_unless_it_is_asked_to_gate() -> None:
    rows = [result("special", passed=True, p=0.001, versus=0.001), result("common", passed=True, p=0.002, versus=0.6)]
    apply(rows, GateSettings())
    assert all(r.passed for r in rows), "reported, not gated: a signature that is no better than random sets passes"
    assert rows[1].competitive_q == pytest.approx(0.6) and "random" not in rows[1].reason
    gated = [result("special", passed=True, p=0.001, versus=0.001), result("common", passed=True, p=0.002, versus=0.6)]
    apply(gated, GateSettings(competitive="gate"))
    assert gated[0].passed and "against random 3-gene sets q 0.002 <= FDR 0.1" in gated[0].reason
    assert not gated[1].passed and gated[1].outcome == "not above random"
    assert gated[1].reason.startswith("against random 3-gene sets q 0.6 > FDR 0.1 (p 0.6, 40 random sets in the run)")
    # Where random sets of its size would be the signature itself, the test does not apply and does not hold it back.
    whole = result("ALL", passed=True, p=0.001)
    whole.competitive = "not applicable"
    apply([whole], GateSettings(competitive="gate"))
    assert whole.passed and "not applicable" in whole.reason and whole.competitive_p is None


def test_the_competitive_test_applies_only_where_random_sets_are_other_gene_sets() -> None:
    assert competitive_applicable(10, 400) and competitive_applicable(200, 400)
    assert not competitive_applicable(201, 400) and not competitive_applicable(21, 21), "ALL of the seed cohort"
    assert not competitive_applicable(74, 76), "a published signature's probes as the whole cohort"
    rows = [result("small", passed=True, p=0.01), result("all", passed=True, p=0.01)]
    rows[1].genes = [f"G{j}" for j in range(21)]
    rng = np.random.default_rng(0)
    statuses = competitive_p_values(rows, {3: SizeNull(rng.normal(0.5, 0.05, 50), rng.normal(0.5, 0.05, 50), 0.1)}, 21)
    assert statuses[0][0] == "tested" and statuses[0][1] is not None
    assert statuses[1] == ("not applicable", None), "never p = 1 as if it had been tested"


def test_each_signature_gets_its_share_of_the_runs_permutations() -> None:
    assert permutations_per_signature(7, 200) == 29, "the seed's 7 built-ins: 203 in all"
    assert permutations_per_signature(6036, 200) == 1, "at least one each"
    assert permutations_per_signature(1, 200) == 200, "one signature alone: all of them"
    assert permutations_per_signature(5, 0) == 0 and permutations_per_signature(0, 200) == 0
    rows = permutation_rows(50, 30, seed=3, key="metagene_19")
    assert rows.shape == (30, 50) and all(sorted(r) == list(range(50)) for r in rows), "permutations of the patients"
    assert np.array_equal(rows, permutation_rows(50, 30, seed=3, key="metagene_19")), "seeded: the same every run"
    assert np.array_equal(permutation_rows(50, 10, seed=3, key="metagene_19"), rows[:10]), "a prefix, whatever count"
    assert not np.array_equal(rows, permutation_rows(50, 30, seed=3, key="metagene_10")), "each signature its own"


def test_a_permutation_is_cross_validated_exactly_as_the_run_cross_validates_permuted_data() -> None:
    """The self-contained null is the metric with the outcome permuted and everything else as the real run does it:
    the permuted rows ride in the signature's own batch, on its folds, with the fold-fitted preprocessing and the
    nested penalty; each gives what the run's own cross-validation gives on the permuted data."""
    from genesig.pipeline.validation import cross_validate_design, cross_validate_designs

    rng = np.random.default_rng(2)
    raw = rng.gamma(1.0, 5.0, size=(70, 4))
    event = rng.random(70) < 0.4
    time = rng.exponential(5.0, 70)
    config = TrainSettings(cv_repeats=2)
    orders = permutation_rows(70, 3, seed=0, key="s")
    for target, t in (("binary", None), ("time_to_event", time)):
        batch = cross_validate_designs(np.stack([raw] + [raw[o] for o in orders]), event, t, target, config, 0)
        assert batch[0] == cross_validate_design(raw, event, t, target, config, 0), "the signature itself: unchanged"
        for order, permuted in zip(orders, batch[1:], strict=True):
            alone = cross_validate_design(raw[order], event, t, target, config, 0)
            assert permuted == alone, "the same folds, preprocessing, penalties and metric as a run of its own"
            assert permuted.penalties == alone.penalties and len(set(permuted.penalties)) >= 1


def skewed_draws(rng: np.random.Generator, sizes: list[int], per_size: int) -> list[tuple[int, float]]:
    """A null like a binary outcome's: location drifting with log size, right-skewed (a shifted gamma, skew ~0.6)."""
    out = []
    for k in sizes:
        shape = 10.0
        values = 0.48 + 0.004 * np.log(k) + 0.05 * (rng.gamma(shape, 1.0, per_size) - shape) / np.sqrt(shape)
        out += [(k, float(v)) for v in values]
    return out


def test_the_permutation_null_is_located_and_scaled_by_size_and_learns_its_shape() -> None:
    rng = np.random.default_rng(0)
    sizes = [3, 5, 10, 20, 50, 100, 200]
    null = PermutationNull(skewed_draws(rng, sizes, 300))
    for k in sizes:
        mean, spread = null.moments(k)
        assert mean == pytest.approx(0.48 + 0.004 * np.log(k), abs=0.004) and spread == pytest.approx(0.05, rel=0.1)
    # 14,000 fresh null signatures of every size: the share with p <= 0.05, 0.01 and 0.001 inside the binomial 95%
    # interval of the nominal rate (the calibration the benchmarks measure), where a normal tail at the skewed right
    # tail passes noise too often.
    from scipy.stats import binom, norm

    fresh = skewed_draws(rng, sizes, 2_000)
    p = np.array([null.p_value(v, k) for k, v in fresh])
    normal = np.array([norm.sf((v - null.moments(k)[0]) / null.moments(k)[1]) for k, v in fresh])
    for alpha in (0.05, 0.01, 0.001):
        low, high = binom.interval(0.95, len(p), alpha)
        assert low <= np.sum(p <= alpha) <= high, (alpha, np.sum(p <= alpha), (low, high))
    assert np.sum(normal <= 0.001) > binom.interval(0.95, len(p), 0.001)[1], "a normal tail passes skewed noise"
    assert null.p_value(0.9, 20) < 1e-5, "far beyond every draw: the fitted tail, below 1 / (N + 1)"
    assert null.tail.pareto is not None and null.tail.pareto[1] >= SHAPE_FLOOR - 1e-9
    assert null.p_value(float("nan"), 20) == 1.0 and PermutationNull([]).p_value(0.9, 3) == 1.0


def test_the_self_contained_tail_is_no_lighter_than_its_floor_and_close_to_the_truth_far_out() -> None:
    """Far beyond the pool (z = 4.5, a p of ~1e-5 to 1e-4, where Benjamini-Hochberg over 1,000 signatures decides) the
    fitted tail's p is within a few times the truth for a light-tailed (normal) and a skewed (gamma, skewness 0.7)
    null."""
    from scipy.stats import gamma, norm

    rng = np.random.default_rng(4)
    for dist in (norm(), gamma(8)):
        mean, spread = dist.mean(), dist.std()
        ratios, shapes = [], []
        for _ in range(40):
            pool = (dist.rvs(1_000, random_state=rng) - mean) / spread
            tail = PooledTail(pool, shape_floor=SHAPE_FLOOR)
            assert tail.pareto is not None
            shapes.append(tail.pareto[1])
            ratios.append(tail.sf(4.5) / dist.sf(mean + 4.5 * spread))
        assert min(shapes) >= SHAPE_FLOOR - 1e-9
        # Shape 0 (exponential): a median ~30x on the normal; a free fit: a tenth of the gamma's pools under 0.05x.
        assert 0.5 < float(np.median(ratios)) < 5, (dist.dist.name, np.median(ratios))
        assert float(np.percentile(ratios, 10)) > 0.1, (dist.dist.name, np.percentile(ratios, 10))


def test_a_tail_that_cannot_be_fitted_falls_back_to_an_exponential_not_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a tail every p of the run would stop at 1 / (N + 1): a failed fit gives the exponential tail (shape 0,
    scale the mean excess) instead."""
    from genesig.pipeline import significance

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no convergence")

    monkeypatch.setattr(significance.genpareto, "fit", fail)
    pool = np.random.default_rng(5).normal(size=1_000)
    tail = PooledTail(pool, shape_floor=SHAPE_FLOOR)
    assert tail.pareto is not None
    threshold, shape, scale = tail.pareto
    top = np.sort(pool)[::-1][: tail.exceedances]
    assert shape == 0.0 and scale == pytest.approx(float(np.mean(top - threshold)))
    assert tail.sf(6.0) < 1 / (len(pool) + 1)


def test_with_one_signature_the_null_is_its_own_permutation_test() -> None:
    """One signature alone: the p of its own permutations (empirical where enough of them reach it)."""
    rng = np.random.default_rng(1)
    values = rng.normal(0.49, 0.05, 200)
    null = PermutationNull([(7, float(v)) for v in values])
    for observed in (0.45, 0.5, 0.55):  # at least 10 of its permutations reach it: their share
        assert null.p_value(observed, 7) == pytest.approx(empirical_p(observed, values), rel=0.02, abs=1e-3)
    # Fewer reach it: the tail fitted to its largest permutations, near their share.
    assert 0.5 < null.p_value(0.58, 7) / empirical_p(0.58, values) < 2
    assert "200 permutations of 1 signature (7-7 genes)" in null.describe(1)


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
            gate=GateSettings(random_sets=120, threshold=0.5),
            signatures_file=write_sets(tmp_path, signatures),
        )
    )
    by = {r.signature: r for r in summary.results}
    planted = by["planted_a"]
    assert planted.passed and planted.q_value is not None and planted.q_value <= 0.1
    # Against random sets: beyond every one, below each stratum's own 1 / (20 + 1), from the pool of the run's sizes.
    assert planted.competitive == "tested" and planted.competitive_p is not None and planted.competitive_p < 1 / 21
    for name in ("noise_0", "noise_1"):
        assert by[name].p_value is not None and by[name].q_value is not None and by[name].competitive_q is not None
        assert not by[name].passed or by[name].q_value <= 0.1
    import json

    folder = tmp_path / "w" / "signatures" / "planted_a" / "evaluation"
    evaluation = json.loads((folder / "evaluation.json").read_text())
    significance = evaluation["significance"]
    assert significance["self_contained"]["q_value"] == planted.q_value and significance["coverage"] == 1.0
    assert "permuted" in significance["self_contained"]["null"] and significance["competitive"]["status"] == "tested"
    assert significance["verdict"] == {"passed": True, "outcome": "passed", "reason": planted.reason}
    assert evaluation["gate"]["final"] and evaluation["gate"]["outcome"] == "passed"


def same_null(a: SizeNull, b: SizeNull) -> bool:
    return a.weight == b.weight and np.array_equal(a.holding, b.holding) and np.array_equal(a.rest, b.rest)


def write_sets(tmp_path: Path, signatures: list) -> Path:  # type: ignore[type-arg]
    import json

    path = tmp_path / "sets.json"
    path.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    return path


def test_a_random_set_null_too_small_to_fit_its_tail_is_logged_with_how_low_p_can_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="genesig.pipeline.significance")
    rows = [result(name, passed=True, p=None) for name in ("a", "b")]
    rng = np.random.default_rng(0)
    small = {3: SizeNull(rng.normal(0.5, 0.05, 5), rng.normal(0.5, 0.05, 5), 0.25)}
    assert [p for _, p in competitive_p_values(rows, small, 400)] == [pytest.approx(1 / 6)] * 2, "each stratum's own"
    assert "the random-set null has 5 sets in a stratum" in caplog.text and "much below 0.17" in caplog.text
    caplog.clear()
    fitted = {k: SizeNull(rng.normal(0.5, 0.05, 100), rng.normal(0.5, 0.05, 100), 0.1) for k in (3, 4)}
    competitive_p_values(rows, fitted, 400)
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


def test_the_gate_benchmark_reports_three_gates_and_the_noise_p_values_calibration(tmp_path: Path) -> None:
    args = ["--seeds", "1", "--noise", "12", "--random-sets", "20", "--cv-repeats", "1", "--processes", "1",
            "--permutations", "40"]  # fmt: skip
    stdout, report = run_bench("significance.py", args, tmp_path / "significance.json")
    [seed] = report["runs"]
    for gate in ("default", "threshold_only", "competitive_gate"):
        assert set(seed[gate]) == {"planted_passed", "noise_passed", "associated_passed", "fdp"}
        assert 0 <= seed[gate]["fdp"] <= 1 and seed[gate]["associated_passed"] == 0, "no noise set holds a planted gene"
    assert seed[gate]["planted_passed"] <= seed["default"]["planted_passed"], "gating on more can only pass fewer"
    assert seed["permutations_per_signature"] == 3 and seed["noise_p_count"] == 12
    calibration = report["summary"]["calibration"]
    assert calibration["p_values"] == 12 and {"0.05", "0.01", "0.001"} <= set(calibration)
    low, high = calibration["0.05"]["nominal_interval"]
    assert 0 <= low <= 0.05 <= high <= 1
    assert "| default: threshold + self-contained |" in stdout and "| threshold only |" in stdout


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
    real = significance.cross_validate_designs
    calls = iter(range(100))

    def diverging(raw: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        # The batch of 20 fails, then each set is tried alone: the third of them diverges.
        if len(raw) > 1 or next(calls) == 2:
            raise DataError("training diverged (non-finite weights); try a larger --l2")
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(significance, "cross_validate_designs", diverging)
    null = RandomSignatureNull(read_cohort(data), TrainSettings(cv_repeats=1, l2=0.1), None, 20, tmp_path / "null")
    values = null.distribution(3)
    assert values.replicates == 19 and np.isfinite(np.concatenate([values.holding, values.rest])).all()


def test_the_gate_benchmarks_noise_sets_hold_planted_genes_only_when_asked() -> None:
    bench = bench_module("significance")

    from genesig.pipeline.signatures import GeneSignature

    def holding(signatures: list[GeneSignature]) -> int:
        return sum(any(g.startswith("planted_") for g in s.genes) for s in signatures[2:])

    assert holding(bench.signature_set(300, 0)) == 0
    assert holding(bench.signature_set(300, 0, noise_holds_planted=True)) > 10, "a few percent of sets of 3-100 genes"


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

    def metric(cohort: Any, train: Any, target: Any, gene_sets: list[list[str]]) -> list[float]:
        jitter = [(sum(int(g[1:]) ** 2 for g in genes) % 97) / 970 for genes in gene_sets]  # deterministic, < 0.1
        return [(0.9 if "G0" in genes else 0.45) + j for genes, j in zip(gene_sets, jitter, strict=True)]

    monkeypatch.setattr(significance, "random_sets_cv", metric)
    sizes = {10: null.distribution(10), 11: null.distribution(11)}
    tail = StratifiedNull(sizes)
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


def test_a_size_whose_random_sets_all_failed_is_not_reported_as_tested() -> None:
    """Every random set of a size failed to fit (e.g. ``--l2 0`` with more genes than a fold's patients): the
    competitive test of that size is not tested, never p = 1, and its null band is empty instead of an error."""
    rows = [result("a", passed=True, p=None)]
    failed = {3: SizeNull(np.empty(0), np.empty(0), 0.25)}
    assert competitive_p_values(rows, failed, 400) == [("", None)]
    assert np.isnan(failed[3].percentiles([5, 50, 95])).all()


def test_random_sets_are_spread_over_the_sizes_evenly_with_a_floor_per_size() -> None:
    from genesig.pipeline.settings import sets_per_size

    assert sets_per_size(1, 200) == 200 and sets_per_size(2, 200) == 100
    assert sets_per_size(3, 200) == 68, "even: half in each stratum, so each stratum holds at least 100"
    assert sets_per_size(33, 200) == 20, "at least 20 at each size"
    assert sets_per_size(0, 200) == 0 and sets_per_size(5, 0) == 0


def test_no_random_sets_are_drawn_when_no_signature_was_evaluated(tmp_path: Path) -> None:
    """Every signature failed (e.g. log-scale values read as raw): nothing to compare, so the cohort's columns are not
    read one by one (22 s on a 15,528-gene cohort, with a misleading "not expression" line)."""
    from genesig.pipeline.significance import draw_competitive

    failed = [result("a", passed=False, p=None)]
    failed[0].outcome = Outcome.ERROR
    cohort: Any = None  # any use of the cohort would fail
    assert draw_competitive(cohort, TrainSettings(), None, failed, [3], 200, tmp_path) == ({}, 0)
    assert not (tmp_path / "null").exists()
