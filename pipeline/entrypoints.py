"""``genesig step <name>``: each pipeline step alone, with explicit input and output folders.

These entries only parse arguments and call the step functions; SageMaker jobs (and anyone
scripting the pipeline by hand) run exactly the code that ``genesig run-local`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from genesig.errors import DataError

logger = logging.getLogger(__name__)
GATE_FAILED_EXIT = 3


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and cross-validation options shared by `run-local` and `step train`."""
    parser.add_argument("--model", choices=["linear", "mlp"], default="linear")
    parser.add_argument("--hidden-units", type=int, default=16, help="mlp hidden layer size (8-32 is sensible)")
    parser.add_argument("--l2", type=float, default=0.1, help="ridge penalty on the weights (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--cv-repeats", type=int, default=5)


def train_config(args: argparse.Namespace) -> Any:
    from genesig.pipeline.model import TrainConfig

    return TrainConfig(model=args.model, hidden_units=args.hidden_units, l2=args.l2, seed=args.seed)


def _model_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.tar.gz"))
        if len(found) != 1:
            raise DataError(f"{path} holds {len(found)} model artifacts; pass the .tar.gz file")
        return found[0]
    return path


def _preprocess(args: argparse.Namespace) -> int:
    from genesig.pipeline.cohort import CohortColumns, read_cohort
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.signatures import match, select
    from genesig.pipeline.steps import preprocess, save_prepared

    cohort = read_cohort(
        args.data, CohortColumns(args.id_column, args.event_column, args.time_column), min_events=args.min_events
    )
    chosen = select(load_signatures(args.signatures), args.signature)
    if len(chosen) != 1:
        raise DataError(f"the preprocess step takes one signature; {args.signature!r} selects {len(chosen)}")
    matched = match(chosen[0], cohort.candidate_genes(), args.min_genes)
    prepared = preprocess(cohort, matched, target=args.target, test_fraction=args.test_fraction, seed=args.seed)
    save_prepared(prepared, args.out)
    logger.info(
        "prepared %s: %d genes, %d train / %d test patients in %s",
        prepared.name,
        len(prepared.genes),
        len(prepared.train.ids),
        len(prepared.test.ids),
        args.out,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from genesig.pipeline.registry import LocalRegistry
    from genesig.pipeline.steps import cross_validate, load_prepared, train_model

    prepared = load_prepared(args.prepared)
    version = args.version or (LocalRegistry(args.registry).next_version(prepared.name) if args.registry else 1)
    config = train_config(args)
    cv = cross_validate(prepared, config, folds=args.cv_folds, repeats=args.cv_repeats)
    artifact = train_model(prepared, config, version, args.out, cv=cv)
    logger.info("wrote %s (cross-validated %s %.3f)", artifact, cv.metric, cv.mean)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from genesig.pipeline.steps import evaluate, load_prepared

    evaluation = evaluate(load_prepared(args.prepared), _model_file(args.model), args.out)
    logger.info(
        "%s: held-out %s %.3f, report %s",
        evaluation["name"],
        evaluation["metric"],
        evaluation["test"]["value"],
        args.out / evaluation["report"],
    )
    return 0


def _gate(args: argparse.Namespace) -> int:
    from genesig.pipeline.steps import gate

    evaluation = json.loads(args.evaluation.read_text())
    verdict = gate(evaluation, threshold=args.threshold, on=args.on)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gate.json").write_text(json.dumps(asdict(verdict), indent=2) + "\n")
    logger.log(
        logging.INFO if verdict.passed else logging.WARNING,
        "gate %s: %s",
        "passed" if verdict.passed else "failed",
        verdict.reason,
    )
    return 0 if verdict.passed else GATE_FAILED_EXIT


def _register(args: argparse.Namespace) -> int:
    from genesig.artifact import read_artifact
    from genesig.pipeline.registry import LocalRegistry

    artifact = _model_file(args.model)
    evaluation = json.loads(args.evaluation.read_text())
    group = args.group or read_artifact(artifact).manifest.name
    package = LocalRegistry(args.registry).create_model_package(
        group,
        artifact,
        metrics={k: evaluation[k] for k in ("metric", "cross_validation", "test", "risk_groups")},
        approval_status="Approved" if args.approve else "PendingManualApproval",
    )
    logger.info("registered %s version %d (%s)", group, package.version, package.approval_status)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from genesig.pipeline.deploy import deploy_package
    from genesig.pipeline.registry import LocalRegistry

    registry = LocalRegistry(args.registry)
    package = (
        registry.describe_model_package(args.group, args.version)
        if args.version
        else registry.latest_approved(args.group)
    )
    if package is None:
        raise DataError(f"group {args.group} has no Approved package")
    deployment = deploy_package(package, args.prefix)
    logger.info("%s (%s)", deployment.name, deployment.action)
    return 0


def _deploy_sagemaker(args: argparse.Namespace) -> int:
    from genesig.pipeline import aws

    deployment = aws.deploy_model_package(
        aws.client("sagemaker"), aws.client("s3"), args.model_package_arn, args.prefix
    )
    logger.info("%s: %s %s", args.model_package_arn, deployment.action, deployment.key)
    return 0


def add_step_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    step = sub.add_parser("step", help="run one pipeline step with explicit folders")
    steps = step.add_subparsers(dest="step", required=True, metavar="STEP")

    p = steps.add_parser("preprocess", help="select genes, split, fit preprocessing on train")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--signatures", type=Path)
    p.add_argument("--signature", required=True)
    p.add_argument("--id-column", default="Case_ID")
    p.add_argument("--event-column", default="SurvivalStatus")
    p.add_argument("--time-column")
    p.add_argument("--target", choices=["binary", "time_to_event"])
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-genes", type=int, default=2)
    p.add_argument("--min-events", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_preprocess)

    t = steps.add_parser("train", help="cross-validate on train, fit, write the artifact")
    t.add_argument("--prepared", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--version", type=int, help="artifact version (default: the registry's next, else 1)")
    t.add_argument("--registry", type=Path, help="local registry folder, to take its next version")
    add_model_arguments(t)
    t.set_defaults(func=_train)

    e = steps.add_parser("evaluate", help="held-out metric, risk groups, evaluation.json, report.png")
    e.add_argument("--prepared", type=Path, required=True)
    e.add_argument("--model", type=Path, required=True, help="the artifact, or the folder holding it")
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(func=_evaluate)

    g = steps.add_parser("gate", help=f"check the metric; exit {GATE_FAILED_EXIT} when the model fails")
    g.add_argument("--evaluation", type=Path, required=True)
    g.add_argument("--threshold", type=float, default=0.6)
    g.add_argument("--on", choices=["cv_mean", "cv_lower", "test"], default="cv_mean")
    g.add_argument("--out", type=Path, help="folder for gate.json")
    g.set_defaults(func=_gate)

    r = steps.add_parser("register", help="add the artifact to a local registry")
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("--evaluation", type=Path, required=True)
    r.add_argument("--registry", type=Path, required=True)
    r.add_argument("--group", help="package group (default: the artifact's name)")
    r.add_argument("--approve", action="store_true")
    r.set_defaults(func=_register)

    d = steps.add_parser("deploy", help="copy an Approved package into an MME prefix folder")
    d.add_argument("--registry", type=Path, required=True)
    d.add_argument("--group", required=True)
    d.add_argument("--version", type=int, help="default: the latest Approved")
    d.add_argument("--prefix", type=Path, required=True)
    d.set_defaults(func=_deploy)

    ds = steps.add_parser("deploy-sagemaker", help="copy an Approved SageMaker model package into the MME S3 prefix")
    ds.add_argument("--model-package-arn", required=True)
    ds.add_argument("--prefix", required=True, help="s3://bucket/prefix/ of the multi-model endpoint")
    ds.set_defaults(func=_deploy_sagemaker)
