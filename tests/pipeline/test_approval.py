"""Approval rules over a run report: parsed, never evaluated as code; bad rules named."""

from __future__ import annotations

import pytest

from genesig.errors import DataError
from genesig.pipeline.approval import parse_rule


def test_a_rule_is_a_conjunction_of_comparisons() -> None:
    rule = parse_rule("cv_lower >= 0.6 and test>0.55 and genes_missing == 0")
    assert rule.admits({"cv_lower": 0.61, "test": 0.6, "genes_missing": 0})
    assert not rule.admits({"cv_lower": 0.59, "test": 0.6, "genes_missing": 0})
    assert not rule.admits({"cv_lower": 0.7, "test": None, "genes_missing": 0}), "a missing value never passes"


def test_a_rule_can_ask_for_the_competitive_test_the_report_carries_beside_the_verdict() -> None:
    rule = parse_rule("q_value <= 0.1 and competitive_q <= 0.1")
    assert rule.admits({"q_value": 0.01, "competitive_q": 0.05})
    assert not rule.admits({"q_value": 0.01, "competitive_q": None}), "not applicable or not tested: not selected"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auc > 0.5", "the report has no field 'auc'"),
        ("cv_lower >= high", "cannot read 'cv_lower >= high'"),
        ("__import__('os').system('x')", "cannot read"),
        ("", "--where is required"),
    ],
)
def test_bad_rules_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_rule(text)
