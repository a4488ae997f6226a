"""The one result model of every run (run-local, the signature-set run, the one-signature steps): what a run knows of
each signature (its evaluation, the gate's verdict with both tests' p and q, its registration); the run's verdict
(:func:`judge`); and the one writer of a run's report (run-local's ``summary.json``/``summary.csv``, the set run's
``report.json``/``report.csv``: the same document, the same columns, the same words)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import msgspec

from genesig.errors import GenesigError
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.settings import GateSettings
from genesig.pipeline.signatures import MatchedSignature
from genesig.pipeline.significance import (
    EXACT_UP_TO,
    SIZE_RATIO,
    Outcome,
    PermutationNull,
    SizeNull,
    Verdict,
    competitive_p_values,
    decide,
    null_size,
)

__all__ = ["Outcome", "RunNulls", "RunReport", "SignatureResult", "judge", "significance_record"]


@dataclass
class SignatureResult:
    """One signature in one run, from its match against the cohort to its registration."""

    signature: str
    artifact_name: str
    genes: list[str]
    missing_genes: list[str]
    # Until the run decides, an evaluated signature's outcome is the threshold's (passed or below threshold).
    outcome: Outcome
    reason: str = ""
    coverage: float | None = None
    # The evaluation.
    metric: str = ""
    n_train: int = 0
    n_test: int = 0
    cv_mean: float | None = None
    cv_lower: float | None = None
    cv_upper: float | None = None
    # The pooled out-of-fold metric: what both tests compare.
    cv_pooled: float | None = None
    test: float | None = None
    l2: float | None = None
    # The gate's first part, decided when the signature is evaluated: the metric against the threshold.
    threshold_passed: bool = False
    threshold_reason: str = ""
    # This signature's permuted pooled out-of-fold metrics: its share of the run's self-contained null.
    permuted: list[float] = field(default_factory=list)
    # The self-contained test (the gate): p with the outcome permuted, q over the run, the run's permutations.
    p_value: float | None = None
    q_value: float | None = None
    permutations: int | None = None
    # The competitive test ("tested", "not applicable", "off", or "" when not evaluated or no random set of the size
    # was fitted): p and q against the run's random gene sets of the size.
    competitive: str = ""
    competitive_p: float | None = None
    competitive_q: float | None = None
    null_size: int | None = None
    random_sets: int | None = None
    # The registration: the model package group, its version, approval, whether this run registered it
    # ("registered", or "unchanged" when the same model was already there), and the file it was deployed as.
    group: str = ""
    version: int | None = None
    approval_status: str = ""
    package_arn: str = ""
    registered: str = ""
    deployed: str = ""
    # Where its report (report.png) and its provisional artifact (version 1; the registry renumbers) are.
    report: str = ""
    artifact: str = ""
    seconds: float = 0.0

    @property
    def evaluated(self) -> bool:
        """Cross-validated and evaluated against the threshold (not skipped, not in error): what the run's tests
        compare."""
        return self.outcome not in (Outcome.SKIPPED, Outcome.ERROR)

    @property
    def passed(self) -> bool:
        return self.outcome == Outcome.PASSED

    @classmethod
    def of(cls, matched: MatchedSignature, outcome: Outcome, reason: str = "") -> SignatureResult:
        return cls(
            signature=matched.signature.name,
            artifact_name=matched.artifact_name,
            genes=matched.present,
            missing_genes=matched.missing,
            outcome=outcome,
            reason=reason,
            coverage=round(matched.coverage, 4),
        )

    def failed(self, reason: str) -> SignatureResult:
        """This result as an error (its evaluation or registration failed), with the reason."""
        return replace(self, outcome=Outcome.ERROR, reason=reason)

    def decided(self, verdict: Verdict) -> SignatureResult:
        """This result with the run's verdict."""
        return replace(
            self, outcome=verdict.outcome, reason=verdict.reason, q_value=verdict.q_value,
            competitive_q=verdict.competitive_q,
        )  # fmt: skip

    def row(self) -> dict[str, Any]:
        """The report's row: every column of ``summary.csv``/``report.csv`` and of the JSON reports' rows."""
        return {
            "signature": self.signature,
            "artifact_name": self.artifact_name,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "genes": len(self.genes),
            "genes_missing": len(self.missing_genes),
            "missing_genes": " ".join(self.missing_genes),
            "coverage": self.coverage,
            "metric": self.metric,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "cv_mean": self.cv_mean,
            "cv_lower": self.cv_lower,
            "cv_upper": self.cv_upper,
            "cv_pooled": self.cv_pooled,
            "test": self.test,
            "l2": self.l2,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "permutations": self.permutations,
            "competitive": self.competitive,
            "competitive_p": self.competitive_p,
            "competitive_q": self.competitive_q,
            "null_size": self.null_size,
            "random_sets": self.random_sets,
            "group": self.group,
            "version": self.version,
            "approval_status": self.approval_status,
            "package_arn": self.package_arn,
            "registered": self.registered,
            "deployed": self.deployed,
            "report": self.report,
            "seconds": round(self.seconds, 2),
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, as a training instance hands it to RegisterSignatures (:meth:`from_json` reads it back)."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str) -> SignatureResult:
        known = {f.name for f in fields(cls)}
        if not isinstance(doc, dict) or doc.keys() - known or "outcome" not in doc:
            raise GenesigError(
                f"{where}: not an outcome this version reads; the training instance wrote it with another image: "
                "rerun the pipeline with this image"
            )
        try:
            return cls(**{**doc, "outcome": Outcome(doc["outcome"])})
        except (TypeError, ValueError) as exc:
            raise GenesigError(f"{where}: not an outcome this version reads ({exc}): rerun the pipeline") from None


ROW_COLUMNS = tuple(SignatureResult("", "", [], [], Outcome.SKIPPED).row())


@dataclass(frozen=True)
class RunNulls:
    """How a run's two tests were made, in words (the report, the summary and the registered packages say it), and
    the self-contained null itself (the run plot draws it)."""

    self_contained: str
    competitive: str
    permutations: PermutationNull | None = None


def judge(
    results: list[SignatureResult],
    gate: GateSettings,
    competitive_nulls: dict[int, SizeNull] | None = None,
    genes: int = 0,
) -> tuple[list[SignatureResult], RunNulls]:
    """The run's verdict on every evaluated signature, the same for run-local and the signature-set run: each one's
    self-contained p against every permutation the run drew (``SignatureResult.permuted``, pooled), its competitive
    p against the random-set nulls of the sizes (``competitive_nulls``, drawn from the cohort's ``genes``), then
    :func:`~genesig.pipeline.significance.decide` over the whole run. Returns the results with their verdicts (new
    objects: the ones given are left as they were) and how the nulls were made."""
    tested = [replace(r) for r in results]
    null: PermutationNull | None = None
    contained = "off: the threshold alone decides (--permutations 0)"
    if gate.permutations:
        pooled = [r.evaluated and r.cv_pooled is not None for r in results]
        null = PermutationNull(
            (len(r.genes), v) for r, ok in zip(results, pooled, strict=True) if ok for v in r.permuted
        )
        contained = null.describe(sum(pooled))
        for r, done in zip(tested, pooled, strict=True):
            if done:
                r.p_value, r.permutations = null.p_value(r.cv_pooled or 0.0, len(r.genes)), null.draws
    competitive = "off (--competitive off)"
    if gate.competitive == "off" or competitive_nulls is None:
        for r in tested:
            r.competitive = "off" if r.evaluated else ""
    else:
        drawn = sum(n.replicates for n in competitive_nulls.values())
        for r, (status, p) in zip(tested, competitive_p_values(tested, competitive_nulls, genes), strict=True):
            r.competitive, r.competitive_p = status, p
            if status == "tested":
                r.null_size, r.random_sets = null_size(len(r.genes)), drawn
        per_size = max((n.replicates for n in competitive_nulls.values()), default=0)
        competitive = (
            f"{drawn} random gene sets at {len(competitive_nulls)} sizes ({per_size} at "
            f"each; above {EXACT_UP_TO} genes in bins of x{SIZE_RATIO}), drawn from the cohort's {genes} genes with "
            "the real outcome, the null's location and scale smoothed over nearby sizes; not applicable where the "
            "signature holds more than half of those genes"
        )
    decided = [r if v is None else r.decided(v) for r, v in zip(tested, decide(tested, gate), strict=True)]
    return decided, RunNulls(contained, competitive, null)


def significance_record(result: SignatureResult, nulls: RunNulls) -> dict[str, Any]:
    """The ``significance`` block an evaluation and a registered package carry once the run has decided: both tests,
    each with the null it used (how the run describes them), and the verdict."""
    return {
        "statistic": f"pooled out-of-fold {result.metric}",
        "observed": result.cv_pooled,
        "self_contained": {
            "p_value": result.p_value,
            "q_value": result.q_value,
            "permutations": result.permutations,
            "null": nulls.self_contained,
        },
        "competitive": {
            "status": result.competitive or "off",
            "p_value": result.competitive_p,
            "q_value": result.competitive_q,
            "null_size": result.null_size,
            "random_sets": result.random_sets,
            "null": nulls.competitive,
        },
        "coverage": result.coverage,
        "verdict": {"passed": result.passed, "outcome": str(result.outcome), "reason": result.reason},
    }


def final_evaluation(evaluation: Evaluation, result: SignatureResult, nulls: RunNulls) -> Evaluation:
    """A signature's evaluation with the run's verdict (what is registered with its model: at evaluation only the
    threshold's was known)."""
    gate = msgspec.structs.replace(
        evaluation.decided, passed=result.passed, outcome=str(result.outcome), reason=result.reason, final=True
    )
    return msgspec.structs.replace(evaluation, gate=gate, significance=significance_record(result, nulls))


@dataclass
class RunReport:
    """A run's report: the gate it ran with, where it read and wrote (``context``: run-local's data and work folder,
    the set run's approval status), how its nulls were made and every signature's result."""

    gate: GateSettings
    results: list[SignatureResult]
    nulls: RunNulls
    context: dict[str, str] = field(default_factory=dict)
    # The gate's settings this run was given (all of them, unless named: the set run's RegisterSignatures is given
    # only the run-wide ones; the threshold was applied by the training instances).
    gate_fields: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(str(r.outcome) for r in self.results)
        return {str(o): counted[str(o)] for o in Outcome if counted[str(o)]}

    def _gate_given(self) -> dict[str, Any]:
        settings = msgspec.structs.asdict(self.gate)
        return {k: settings[k] for k in self.gate_fields} if self.gate_fields else settings

    def to_json(self) -> dict[str, Any]:
        run = {
            **self.context,
            **self._gate_given(),
            "self_contained_null": self.nulls.self_contained,
            "competitive_null": self.nulls.competitive,
            "counts": self.counts,
            "registered": sum(r.registered == "registered" for r in self.results),
        }
        return {"run": run, "signatures": [r.row() for r in self.results]}

    def write(self, folder: Path, stem: str) -> dict[str, Any]:
        """``<stem>.json`` (the run and every row) and ``<stem>.csv`` (the rows) in ``folder``: run-local writes
        ``summary``, the set run ``report``."""
        folder.mkdir(parents=True, exist_ok=True)
        doc = self.to_json()
        (folder / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
        with open(folder / f"{stem}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROW_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(doc["signatures"])
        return doc
