"""Evaluations for tests that need one without training a model: every field the evaluate step writes, overridable."""

from __future__ import annotations

from typing import Any

import msgspec

from genesig.pipeline.evaluation import Evaluation


def an_evaluation(**fields: Any) -> Evaluation:
    """A time-to-event evaluation of a three-gene signature; ``fields`` replace parts of it (nested as JSON)."""
    doc: dict[str, Any] = {
        "signature": "HALLMARK_HYPOXIA",
        "name": "HALLMARK_HYPOXIA",
        "version": 1,
        "target": "time_to_event",
        "metric": "c_index",
        "genes": ["A", "B", "C"],
        "output": "risk_score",
        "event_column": "SurvivalStatus",
        "time_column": "Months",
        "cross_validation": {"mean": 0.71, "interval": [0.6, 0.8], "pooled": 0.7},
        "test": {"value": 0.68, "patients": 40, "events": 18},
        "train": {"value": 0.75},
        "model": {"l2": 1.0, "l2_chosen_by": "inner_cv", "coverage": 0.75},
        "risk_groups": {},
        "artifact": {"file": "HALLMARK_HYPOXIA-v1.tar.gz", "sha256": "0" * 64},
        "gate": {"passed": True, "reason": "cross-validated mean c_index 0.710 >= threshold 0.600", "final": True},
        **fields,
    }
    return msgspec.convert(doc, Evaluation)
