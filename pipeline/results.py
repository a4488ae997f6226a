"""What a run knows of each signature: its evaluation, the gate's verdict with both tests' p and q, its registration;
and the run's summary files (``summary.json``, ``summary.csv``)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genesig.pipeline.settings import GateSettings
from genesig.pipeline.signatures import MatchedSignature
from genesig.pipeline.significance import (
    EXACT_UP_TO,
    SIZE_RATIO,
    PermutationNull,
    SizeNull,
    Verdict,
    competitive_p_values,
    decide,
    null_size,
)


@dataclass
class SignatureResult:
    signature: str
    name: str
    genes: list[str]
    missing_genes: list[str]
    status: str
    reason: str = ""
    metric: str = ""
    n_train: int = 0
    n_test: int = 0
    cv_mean: float | None = None
    cv_interval: list[float] | None = None
    # The pooled out-of-fold metric: what both tests compare.
    cv_pooled: float | None = None
    test_value: float | None = None
    passed: bool = False
    # The gate in parts: the metric against the threshold (decided when evaluated), then the run's false-discovery
    # control of the self-contained test (and of the competitive one when it is gated on; see significance.py).
    threshold_passed: bool = False
    threshold_reason: str = ""
    coverage: float | None = None
    l2: float | None = None
    # This signature's permuted pooled out-of-fold metrics: its share of the run's self-contained null.
    permuted: list[float] = field(default_factory=list)
    # The self-contained test (the gate): p with the outcome permuted, q over the run, the run's permutations.
    p_value: float | None = None
    q_value: float | None = None
    permutations: int | None = None
    # The competitive test ("tested", "not applicable", or "" when off): p and q against random gene sets of the size.
    competitive: str = ""
    competitive_p: float | None = None
    competitive_q: float | None = None
    null_size: int | None = None
    random_sets: int | None = None
    # The gate's outcome in the report's words (see ``outcome``).
    verdict: str = ""
    version: int | None = None
    approval_status: str | None = None
    deployed: str | None = None
    report: str | None = None
    # The provisional artifact (version 1) this run trained; the registry renumbers what it registers.
    artifact: str | None = None
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """What became of it, in the words of the report: passed, below threshold, not significant (it cleared the
        threshold but not the run's false-discovery control), not above random (the competitive test, when gated
        on), skipped or error."""
        if self.status == "done":
            if self.verdict:
                return self.verdict
            if self.passed:
                return "passed"
            return "not significant" if self.threshold_passed else "below threshold"
        return "skipped" if self.status == "skipped" else "error"

    @classmethod
    def of(cls, matched: MatchedSignature, status: str, reason: str = "") -> SignatureResult:
        return cls(
            signature=matched.signature.name,
            name=matched.artifact_name,
            genes=matched.present,
            missing_genes=matched.missing,
            status=status,
            reason=reason,
            coverage=round(matched.coverage, 4),
        )

    def apply(self, verdict: Verdict) -> None:
        """The run's verdict on this signature."""
        self.passed, self.verdict, self.reason = verdict.passed, verdict.outcome, verdict.reason
        self.q_value, self.competitive_q = verdict.q_value, verdict.competitive_q


@dataclass(frozen=True)
class RunNulls:
    """How a run's two tests were made, in words (the report, the summary and the registered packages say it), and
    the self-contained null itself (the run plot draws it)."""

    self_contained: str
    competitive: str
    permutations: PermutationNull | None = None


def conclude(
    results: list[SignatureResult],
    gate: GateSettings,
    competitive_nulls: dict[int, SizeNull] | None = None,
    genes: int = 0,
) -> RunNulls:
    """The run's verdict on every evaluated signature, the same for run-local and the signature-set run: each one's
    self-contained p against every permutation the run drew (``SignatureResult.permuted``, pooled), its competitive
    p against the random-set nulls of the sizes (``competitive_nulls``, drawn from the cohort's ``genes``), then
    :func:`~genesig.pipeline.significance.decide` over the whole run."""
    done = [r for r in results if r.status == "done" and r.cv_pooled is not None]
    null: PermutationNull | None = None
    contained = "off: the threshold alone decides (--permutations 0)"
    if gate.permutations:
        null = PermutationNull((len(r.genes), v) for r in done for v in r.permuted)
        contained = null.describe(len(done))
        for r in done:
            r.p_value = null.p_value(r.cv_pooled or 0.0, len(r.genes))
            r.permutations = null.draws
    competitive = "off (--competitive off)"
    if gate.competitive != "off" and competitive_nulls is not None:
        drawn = sum(n.replicates for n in competitive_nulls.values())
        for r, (status, p) in zip(results, competitive_p_values(results, competitive_nulls, genes), strict=True):
            r.competitive, r.competitive_p = status, p
            if status == "tested":
                r.null_size = null_size(len(r.genes))
                r.random_sets = drawn
        per_size = max((n.replicates for n in competitive_nulls.values()), default=0)
        competitive = (
            f"{drawn} random gene sets at {len(competitive_nulls)} sizes ({per_size} at "
            f"each; above {EXACT_UP_TO} genes in bins of x{SIZE_RATIO}), drawn from the cohort's {genes} genes with "
            "the real outcome, the null's location and scale smoothed over nearby sizes; not applicable where the "
            "signature holds more than half of those genes"
        )
    for r, verdict in zip(results, decide(results, gate), strict=True):
        if verdict is not None:
            r.apply(verdict)
    return RunNulls(contained, competitive, null)


class Recorded(Protocol):
    """What a signature's ``significance`` block is made of (run-local's results, the set run's report rows)."""

    metric: str
    cv_pooled: float | None
    p_value: float | None
    q_value: float | None
    permutations: int | None
    competitive: str
    competitive_p: float | None
    competitive_q: float | None
    null_size: int | None
    random_sets: int | None
    coverage: float | None
    reason: str

    @property
    def outcome(self) -> str: ...


def significance_record(result: Recorded, *, self_contained: str, competitive: str) -> dict[str, Any]:
    """The ``significance`` block an evaluation and a registered package carry once the run has decided: both tests,
    each with the null it used (``self_contained``, ``competitive``: how the run describes them), and the verdict."""
    return {
        "statistic": f"pooled out-of-fold {result.metric}",
        "observed": result.cv_pooled,
        "self_contained": {
            "p_value": result.p_value,
            "q_value": result.q_value,
            "permutations": result.permutations,
            "null": self_contained,
        },
        "competitive": {
            "status": result.competitive or "off",
            "p_value": result.competitive_p,
            "q_value": result.competitive_q,
            "null_size": result.null_size,
            "random_sets": result.random_sets,
            "null": competitive,
        },
        "coverage": result.coverage,
        "verdict": {"passed": result.outcome == "passed", "outcome": result.outcome, "reason": result.reason},
    }


@dataclass
class RunSummary:
    data: str
    workdir: str
    threshold: float
    gate_on: str
    fdr: float
    permutations: int
    competitive: str
    random_sets: int
    results: list[SignatureResult]
    # How the run's nulls were made, in words (what the report and the registered packages say).
    self_contained_null: str = ""
    competitive_null: str = ""

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for row, result in zip(doc["results"], self.results, strict=True):
            row["outcome"] = result.outcome
            del row["permuted"]  # the run's null, not a result to read
        return doc

    def write(self, folder: Path) -> None:
        """``summary.json`` (everything) and ``summary.csv`` (the full table, a row per signature) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        with open(folder / "summary.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(SUMMARY_COLUMNS)
            for r in self.results:
                low, high = r.cv_interval or (None, None)
                writer.writerow(
                    [
                        r.signature,
                        r.name,
                        r.outcome,
                        r.reason,
                        len(r.genes),
                        len(r.missing_genes),
                        r.coverage,
                        r.metric,
                        r.n_train,
                        r.n_test,
                        r.cv_mean,
                        low,
                        high,
                        r.cv_pooled,
                        r.test_value,
                        r.l2,
                        r.p_value,
                        r.q_value,
                        r.competitive or "off",
                        r.competitive_p,
                        r.competitive_q,
                        r.version,
                        r.approval_status,
                        r.deployed,
                        r.report,
                    ]  # fmt: skip
                )


SUMMARY_COLUMNS = (
    "signature",
    "artifact_name",
    "outcome",
    "reason",
    "genes_in_data",
    "genes_missing",
    "coverage",
    "metric",
    "n_train",
    "n_test",
    "cv_mean",
    "cv_lower",
    "cv_upper",
    "cv_pooled",
    "test",
    "l2",
    "p_value",
    "q_value",
    "competitive",
    "competitive_p",
    "competitive_q",
    "version",
    "approval_status",
    "deployed_as",
    "report",
)
