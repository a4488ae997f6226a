"""``genesig step <name>``: each pipeline step alone, with explicit input and output folders.

These entries only parse arguments and call the step functions; SageMaker jobs (and anyone
scripting the pipeline by hand) run exactly the code that ``genesig run-local`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from genesig.cli.options import add_arguments, from_arguments
from genesig.errors import DataError
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings

logger = logging.getLogger(__name__)
GATE_FAILED_EXIT = 3
# The gate options of one signature alone: the threshold, and its own permutation test (p at most the FDR; random
# gene sets need the whole cohort: run-local and the signature-set run compute them).
LONE_GATE = ("threshold", "gate_on", "fdr", "permutations")
# Re-gating an evaluation: its p was computed by the evaluate step.
REGATE = ("threshold", "gate_on", "fdr")
# What PrepareSignatureSet and RegisterSignatures need of the gate.
SET_GATE = ("permutations", "competitive", "random_sets")


def _model_file(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"--model {path}: no such file or folder (the train step's output, or its .tar.gz)")
    if path.is_dir():
        found = sorted(path.glob("*.tar.gz"))
        if len(found) != 1:
            raise DataError(f"{path} holds {len(found)} model artifacts; pass the .tar.gz file")
        return found[0]
    return path


def _preprocess(args: argparse.Namespace) -> int:
    from genesig.pipeline.cohort import columns_of, read_cohort
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.signatures import match, select
    from genesig.pipeline.steps import preprocess, save_prepared

    settings = from_arguments(args, CohortSettings)
    cohort = read_cohort(args.data, columns_of(settings), min_events=settings.min_events)
    [chosen] = select(load_signatures(args.signatures), [args.signature])
    matched = match(chosen, cohort.candidate_genes(), settings.min_genes, settings.min_coverage)
    prepared = preprocess(cohort, matched, target=settings.target, settings=from_arguments(args, TrainSettings))
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
    from genesig.pipeline.steps import PROVISIONAL_VERSION, cross_validate, load_prepared, train_model

    prepared = load_prepared(args.prepared)
    config = from_arguments(args, TrainSettings)
    cv = cross_validate(prepared, config)
    artifact = train_model(prepared, config, PROVISIONAL_VERSION, args.out, cv=cv)
    logger.info("wrote %s (cross-validated %s %.3f)", artifact, cv.metric, cv.mean)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from genesig.pipeline.steps import evaluate, load_prepared

    evaluation = evaluate(
        load_prepared(args.prepared), _model_file(args.model), args.out, from_arguments(args, GateSettings)
    )
    decided = evaluation.decided
    logger.info(
        "%s: held-out %s %.3f; gate %s: %s; report %s",
        evaluation.name,
        evaluation.metric,
        evaluation.test.value,
        decided.outcome or ("passed" if decided.passed else "not passed"),
        decided.reason,
        args.out / evaluation.report,
    )
    return 0


def _gate(args: argparse.Namespace) -> int:
    import msgspec

    from genesig.pipeline.steps import lone_verdict, write_gate

    evaluation = Evaluation.read(args.evaluation, "--evaluation ")
    threshold, decided = lone_verdict(evaluation, from_arguments(args, GateSettings))
    if args.out:
        write_gate(threshold, args.out, msgspec.structs.replace(evaluation, gate=decided))
    logger.log(logging.INFO if decided.passed else logging.WARNING, "gate %s: %s", decided.outcome, decided.reason)
    return 0 if decided.passed else GATE_FAILED_EXIT


def _register(args: argparse.Namespace) -> int:
    from genesig.pipeline.registry import LocalRegistry

    artifact = _model_file(args.model)
    evaluation = Evaluation.read(args.evaluation, "--evaluation ")
    approval = "Approved" if args.approve else "PendingManualApproval"
    package = LocalRegistry(args.registry).register(artifact, evaluation, approval_status=approval, group=args.group)
    if package.created:
        logger.info("registered %s version %d (%s)", package.group, package.version, package.approval_status)
    else:
        logger.info("%s is unchanged since version %d; not registered again", package.group, package.version)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from genesig.pipeline.registry import LocalRegistry

    registry = LocalRegistry(args.registry)
    if not args.registry.is_dir():
        raise DataError(registry.missing_message())
    package = (
        registry.describe_model_package(args.group, args.version).registration()
        if args.version
        else registry.latest_approved(args.group)
    )
    if package is None:
        how = (
            f"genesig registry approve {args.group} VERSION --workdir {args.registry.parent}"
            if args.registry.name == "registry"
            else "genesig step register ... --approve"
        )
        raise DataError(f"group {args.group} has no Approved package in {args.registry}: approve one first ({how})")
    deployment = registry.deploy(package, args.prefix)
    logger.info("%s (%s)", deployment.name, deployment.action)
    return 0


def _deploy_sagemaker(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker import aws
    from genesig.pipeline.sagemaker.registry import deploy_package

    deployment = deploy_package(aws.client("sagemaker"), aws.client("s3"), args.model_package_arn, args.prefix)
    logger.info(
        "%s: %s %s%s",
        args.model_package_arn,
        deployment.action,
        deployment.name,
        f" ({deployment.reason})" * bool(deployment.reason),
    )
    return 0


def _register_sagemaker(args: argparse.Namespace) -> int:
    """The pipeline's RegisterModel job: the trained model.tar.gz from S3, its evaluation, into the registry."""
    import tempfile

    from genesig.pipeline.sagemaker import aws
    from genesig.pipeline.sagemaker.registry import SageMakerRegistry

    evaluation = Evaluation.read(args.evaluation, "--evaluation ")
    s3 = aws.client("s3")
    registry = SageMakerRegistry(
        aws.client("sagemaker"), s3, package_prefix=args.package_prefix, serving_image=args.serving_image_uri
    )
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "model.tar.gz"
        artifact.write_bytes(aws.read_object(s3, args.model_uri))
        registration = registry.register(artifact, evaluation, approval_status=args.approval_status)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "registration.json").write_text(json.dumps(registration.to_json(), indent=2) + "\n")
    logger.info(
        "%s v%d %s (%s)",
        registration.group,
        registration.version,
        "registered" if registration.created else "unchanged, not registered again",
        registration.approval_status,
    )
    return 0


def _prepare_set(args: argparse.Namespace) -> int:
    from genesig.pipeline.signature_set import prepare_set

    prepare_set(
        args.data, args.signatures, args.out, shards=args.shards, settings=from_arguments(args, CohortSettings),
        gate=from_arguments(args, GateSettings),
    )  # fmt: skip
    return 0


def _register_set(args: argparse.Namespace) -> int:
    """The signature-set run's RegisterSignatures job: the report, registrations and (when Approved) deployments."""
    from genesig.pipeline.results import RunReport
    from genesig.pipeline.sagemaker import aws
    from genesig.pipeline.signature_set import REPORT_STEM, collect, register_passing

    gate = from_arguments(args, GateSettings)
    results, nulls = collect(args.results, args.set, gate)
    results = register_passing(
        results,
        args.results,
        sm=aws.client("sagemaker"),
        s3=aws.client("s3"),
        package_prefix=args.package_prefix,
        serving_image=args.serving_image_uri,
        approval_status=args.approval_status,
        mme_prefix=args.mme_prefix,
        nulls=nulls,
    )
    report = RunReport(
        gate, results, nulls, context={"approval_status": args.approval_status}, gate_fields=("fdr", *SET_GATE)
    )
    report.write(args.out, REPORT_STEM)
    counts = report.counts
    held = sorted(((n, k) for k, n in counts.items() if k != "passed"), reverse=True)
    logger.info(
        "%d signatures: %s%s (each one's reason: the run report)",
        len(results),
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        f"; most held back: {held[0][0]} {held[0][1]}" if held else "",
    )
    return 0


def add_step_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]

    step = sub.add_parser("step", help="run one pipeline step with explicit folders")
    steps = step.add_subparsers(dest="step", required=True, metavar="STEP")

    p = steps.add_parser("preprocess", help="select genes, split, fit preprocessing on train")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--signatures", type=Path)
    p.add_argument(
        "--signature", required=True, help="the signature's name (ALL: the built-in signature of all 21 metagene genes)"
    )
    add_arguments(p, CohortSettings)
    add_arguments(p, TrainSettings, only=("test_fraction", "seed"))
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_preprocess)

    t = steps.add_parser(
        "train", help="cross-validate on train, fit, write the artifact (version 1: registering gives it its version)"
    )
    t.add_argument("--prepared", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    add_arguments(t, TrainSettings)
    t.set_defaults(func=_train)

    e = steps.add_parser("evaluate", help="held-out metric, risk groups, evaluation.json, report.png")
    e.add_argument("--prepared", type=Path, required=True)
    e.add_argument("--model", type=Path, required=True, help="the artifact, or the folder holding it")
    e.add_argument("--out", type=Path, required=True)
    # One signature alone has no run to control the false discoveries of: its own permutation p decides with the
    # threshold.
    add_arguments(e, GateSettings, only=LONE_GATE)
    e.set_defaults(func=_evaluate)

    g = steps.add_parser(
        "gate", help=f"decide again from an evaluation (threshold, p); exit {GATE_FAILED_EXIT} when the model fails"
    )
    g.add_argument("--evaluation", type=Path, required=True)
    add_arguments(g, GateSettings, only=REGATE)
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

    rs = steps.add_parser("register-sagemaker", help="register a trained model in the SageMaker Model Registry")
    rs.add_argument("--model-uri", required=True, help="s3:// URI of the training job's model.tar.gz")
    rs.add_argument("--evaluation", type=Path, required=True, help="evaluation.json, or the folder holding it")
    rs.add_argument("--serving-image-uri", required=True, help="the image the package is served with")
    rs.add_argument("--approval-status", default="PendingManualApproval", help="PendingManualApproval or Approved")
    rs.add_argument("--package-prefix", required=True, help="s3:// prefix where registered artifacts are kept")
    rs.add_argument("--out", type=Path, required=True, help="folder for registration.json")
    rs.set_defaults(func=_register_sagemaker)

    ps = steps.add_parser("prepare-set", help="a signature set dealt into shards for the signature-set run")
    ps.add_argument("--data", type=Path, required=True, help="the cohort (or the folder holding it)")
    ps.add_argument("--signatures", type=Path, help="gene sets (.gmt/.json, or the folder holding one)")
    ps.add_argument("--shards", type=int, required=True, help="how many shards (the training job's instances)")
    add_arguments(ps, CohortSettings)
    add_arguments(ps, GateSettings, only=SET_GATE)
    ps.add_argument("--out", type=Path, required=True)
    ps.set_defaults(func=_prepare_set)

    gs = steps.add_parser("register-set", help="the signature-set run's report, registrations and deployments")
    gs.add_argument("--results", type=Path, required=True, help="the training instances' results")
    gs.add_argument("--set", type=Path, required=True, help="the prepare-set output (plan, skipped signatures)")
    gs.add_argument("--package-prefix", required=True, help="s3:// prefix where registered artifacts are kept")
    gs.add_argument("--serving-image-uri", required=True, help="the image the packages are served with")
    gs.add_argument("--approval-status", default="PendingManualApproval", help="PendingManualApproval or Approved")
    gs.add_argument("--mme-prefix", help="s3:// MME prefix: Approved registrations are deployed there")
    gs.add_argument("--out", type=Path, required=True, help="folder for report.json and report.csv")
    add_arguments(gs, GateSettings, only=("fdr", *SET_GATE))
    gs.set_defaults(func=_register_set)

    ds = steps.add_parser("deploy-sagemaker", help="copy an Approved SageMaker model package into the MME S3 prefix")
    ds.add_argument("--model-package-arn", required=True)
    ds.add_argument("--prefix", required=True, help="s3://bucket/prefix/ of the multi-model endpoint")
    ds.set_defaults(func=_deploy_sagemaker)
