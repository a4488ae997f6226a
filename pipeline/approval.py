"""Approval at scale: the signatures of a run report that a rule selects (``cv_lower >= 0.6 and test >= 0.6``),
approved in the SageMaker Model Registry with a reason; ``genesig sync`` then deploys them.

The rule is a conjunction of comparisons between a report field and a number, parsed here (never evaluated as
code); an unknown field or a malformed comparison is refused naming what is accepted.
"""

from __future__ import annotations

import json
import logging
import operator
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genesig.errors import DataError, GenesigError

logger = logging.getLogger(__name__)

# Report fields a rule may compare (numbers in report.json's rows).
RULE_FIELDS = (
    "cv_mean", "cv_lower", "cv_upper", "cv_pooled", "test", "genes", "genes_missing", "coverage", "p_value", "q_value",
    "competitive_p", "competitive_q",
)  # fmt: skip
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_COMPARISON = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$")
APPROVE_WORKERS = 8


@dataclass(frozen=True)
class Rule:
    text: str
    comparisons: tuple[tuple[str, str, float], ...]

    def admits(self, row: dict[str, Any]) -> bool:
        for field, op, number in self.comparisons:
            value = row.get(field)
            if value is None or not _OPERATORS[op](float(value), number):
                return False
        return True


def parse_rule(text: str | None) -> Rule:
    if not text or not text.strip():
        raise DataError('--where is required with --from-report, e.g. --where "cv_lower >= 0.6"')
    comparisons = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _COMPARISON.match(part)
        if not match:
            raise DataError(
                f"--where: cannot read {part.strip()!r}; write FIELD OP NUMBER joined by 'and', OP one of "
                f'{" ".join(_OPERATORS)}, e.g. "cv_lower >= 0.6 and test >= 0.6"'
            )
        field, op, number = match.groups()
        if field not in RULE_FIELDS:
            raise DataError(f"--where: the report has no field {field!r}; use {', '.join(RULE_FIELDS)}")
        comparisons.append((field, op, float(number)))
    return Rule(text.strip(), tuple(comparisons))


def read_report(location: str, s3: Any = None) -> dict[str, Any]:
    """A run report from a file or an ``s3://`` URI."""
    if location.startswith("s3://"):
        from genesig.pipeline.sagemaker.aws import read_object

        raw = read_object(s3, location)
    else:
        path = Path(location)
        if not path.is_file():
            raise DataError(f"report {location} does not exist")
        raw = path.read_bytes()
    try:
        report = json.loads(raw)
        rows = report["signatures"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{location} is not a genesig run report (report.json of a signature-set run)") from None
    if not isinstance(rows, list):
        raise DataError(f"{location} is not a genesig run report")
    return dict(report)


@dataclass(frozen=True)
class Decision:
    signature: str
    group: str
    version: int | None
    action: str  # approved, already approved, would approve, failed
    reason: str = ""


def approve_by_rule(
    sm: Any, report: dict[str, Any], rule: Rule, *, reason: str, dry_run: bool = False
) -> list[Decision]:
    """Approve every registered signature of the report that ``rule`` admits, ``APPROVE_WORKERS`` at a time; one
    signature's failure is reported for it and the others go on."""
    from genesig.pipeline.sagemaker.registry import describe, update_approval

    chosen = [r for r in report["signatures"] if r.get("package_arn") and rule.admits(r)]
    description = f"{reason + '; ' if reason else ''}rule: {rule.text}"

    def one(row: dict[str, Any]) -> Decision:
        if dry_run:
            return Decision(row["signature"], row["group"], row.get("version"), "would approve")
        try:
            package = describe(sm, row["package_arn"])
            if package.get("ModelApprovalStatus") == "Approved":
                return Decision(row["signature"], row["group"], row.get("version"), "already approved")
            update_approval(sm, package, "Approved", description)
            return Decision(row["signature"], row["group"], row.get("version"), "approved")
        except GenesigError as exc:
            return Decision(row["signature"], row["group"], row.get("version"), "failed", exc.message)

    with ThreadPoolExecutor(max_workers=APPROVE_WORKERS) as pool:
        decisions = list(pool.map(one, chosen))
    logger.info("rule %r selects %d of %d signatures", rule.text, len(chosen), len(report["signatures"]))
    return decisions
