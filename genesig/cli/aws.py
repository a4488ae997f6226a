"""``genesig pipeline|endpoint|predict``, ``genesig registry ... --aws`` and ``genesig sync --prefix s3://``: parse,
call, report. The work is done in ``sagemaker.executions``, ``sagemaker.registry`` and ``sagemaker.endpoint``.

AWS endpoints come from ``--sagemaker-endpoint-url`` / ``--s3-endpoint-url`` / ``--runtime-endpoint-url`` or
boto3's own ``AWS_ENDPOINT_URL_<SERVICE>`` variables, so the same commands run against emulators.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from genesig.errors import DataError

logger = logging.getLogger(__name__)

# For `pipeline definition` only, which reaches no AWS service: placeholders that are plainly placeholders.
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/genesig-sagemaker-PLACEHOLDER"
PLACEHOLDER_BUCKET = "genesig-placeholder-bucket"


def _clients(args: argparse.Namespace, *services: str) -> list[Any]:
    from genesig.pipeline.sagemaker.aws import client

    urls = {
        "sagemaker": args.sagemaker_endpoint_url,
        "s3": args.s3_endpoint_url,
        "sagemaker-runtime": args.runtime_endpoint_url,
    }
    return [client(s, region=args.region, endpoint_url=urls.get(s)) for s in services]


def _config(args: argparse.Namespace, *, offline: bool = False) -> Any:
    from genesig.pipeline.sagemaker.names import check_bucket, check_image_uri, check_role_arn
    from genesig.pipeline.sagemaker.pipeline import PipelineConfig

    missing = [flag for flag, value in (("--role", args.role), ("--bucket", args.bucket)) if not value]
    if missing and not offline:
        raise DataError(f"{' and '.join(missing)} required: the pipeline's execution role ARN and its S3 bucket")
    for flag, value, check in (
        ("--role", args.role, check_role_arn),
        ("--bucket", args.bucket, check_bucket),
        ("--training-image-uri", args.training_image_uri, check_image_uri),
        ("--serving-image-uri", args.serving_image_uri, check_image_uri),
    ):
        if value:
            check(flag, value)
    region = args.region or _default_region() or "us-east-1"
    return PipelineConfig(
        role_arn=args.role or PLACEHOLDER_ROLE,
        bucket=args.bucket or PLACEHOLDER_BUCKET,
        region=region,
        training_image_uri=args.training_image_uri or "ACCOUNT.dkr.ecr.REGION.amazonaws.com/genesig-mme-train:TAG",
        serving_image_uri=args.serving_image_uri or "ACCOUNT.dkr.ecr.REGION.amazonaws.com/genesig-mme:TAG",
        name=args.pipeline_name,
    )


def _default_region() -> str | None:
    try:
        import boto3
    except ImportError:
        return None
    return boto3.Session().region_name


def _definition(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.pipeline import definition_json, set_definition_json

    build = set_definition_json if args.design == "set" else definition_json
    text = json.dumps(json.loads(build(_config(args, offline=True))), indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(text)
    return 0


def _upsert(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker.executions import upsert_pipeline

    config = _config(args)
    for flag, value in (
        ("--training-image-uri", args.training_image_uri),
        ("--serving-image-uri", args.serving_image_uri),
    ):
        if not value:
            raise DataError(f"{flag} is required: the image URIs build_and_push.sh printed")
    sm, s3 = _clients(args, "sagemaker", "s3")
    arn = upsert_pipeline(sm, s3, config, load_signatures(args.signatures))
    logger.info("pipeline %s (cohort: one CSV/TSV/Parquet file under %s)", arn, config.data_uri)
    return 0


def _parameters(items: list[str], *, set_run: bool = False) -> dict[str, str]:
    from genesig.pipeline.sagemaker.pipeline import PARAMETER_NAMES, SET_PARAMETER_NAMES

    known = SET_PARAMETER_NAMES if set_run else PARAMETER_NAMES
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--param takes NAME=VALUE, got {item!r}")
        if key not in known:
            raise DataError(f"--param {key}: the pipeline has no such parameter; it has {', '.join(known)}")
        values[key] = value
    return values


def _start(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.executions import start_execution

    [sm] = _clients(args, "sagemaker")
    arn = start_execution(sm, args.pipeline_name, args.signature, _parameters(args.param))
    logger.info("started; follow it with `genesig pipeline status --pipeline-name %s`", args.pipeline_name)
    sys.stdout.write(arn + "\n")  # for scripts: ARN=$(genesig pipeline start ...)
    return 0


def _start_all(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker.executions import start_all
    from genesig.presentation import ExecutionsView

    sm, s3 = _clients(args, "sagemaker", "s3")
    names = [s.name for s in load_signatures(args.signatures)]
    with ExecutionsView(f"executions of {args.pipeline_name}") as view:
        states = start_all(
            sm,
            args.pipeline_name,
            names,
            max_parallel=args.max_parallel,
            parameters=_parameters(args.param),
            poll_s=args.poll_seconds,
            timeout_s=args.timeout,
            on_update=view.update,
            s3=s3,
        )
    return _report_executions(states)


def _start_set(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.executions import start_set

    [sm] = _clients(args, "sagemaker")
    parameters = {"ShardCount": str(args.shards), **_parameters(args.param, set_run=True)}
    arn = start_set(sm, f"{args.pipeline_name}-set", parameters)
    logger.info("started; follow it with `genesig pipeline status --pipeline-name %s-set`", args.pipeline_name)
    sys.stdout.write(arn + "\n")  # for scripts: ARN=$(genesig pipeline start-set ...)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker.plan import Assumptions, plan
    from genesig.presentation import render_plan

    assumptions = Assumptions(
        processing_startup_minutes=args.processing_startup_minutes,
        training_startup_minutes=args.training_startup_minutes,
        seconds_per_signature=args.seconds_per_signature,
        pass_rate=args.pass_rate,
        price_per_instance_hour=args.price_per_hour,
        max_parallel=args.max_parallel,
        permutations=args.permutations,
        seconds_per_permutation=args.seconds_per_permutation,
        random_sets=args.random_sets if args.competitive != "off" else 0,
    )
    from genesig.pipeline.significance import null_size

    signatures = load_signatures(args.signatures)
    # Sizes as the sets list them: genes missing from the data only make a signature smaller.
    sizes = len({null_size(len(s.genes)) for s in signatures}) if args.competitive != "off" else 0
    estimate = plan(len(signatures), args.shards, assumptions, competitive_sizes=sizes)
    if args.json:
        sys.stdout.write(json.dumps(estimate, indent=2) + "\n")
    else:
        render_plan(estimate)
    return 0


def _run_here(args: argparse.Namespace) -> int:
    from genesig.container_server import check_engine
    from genesig.pipeline.sagemaker.executions import start_execution, start_set
    from genesig.pipeline.sagemaker.run_here import DockerRunner, LocalPipelineRunner, ProcessRunner
    from genesig.presentation import render_execution

    sm, s3 = _clients(args, "sagemaker", "s3")
    if args.docker:
        check_engine()
    arn = args.execution_arn
    if arn is None:
        if args.signature:
            arn = start_execution(sm, args.pipeline_name, args.signature, _parameters(args.param))
        else:
            parameters = {"ShardCount": str(args.shards), **_parameters(args.param, set_run=True)}
            arn = start_set(sm, f"{args.pipeline_name}-set", parameters)
    runner = LocalPipelineRunner(
        sm,
        s3,
        DockerRunner() if args.docker else ProcessRunner(),
        args.workdir,
        on_step=lambda step: logger.info("%s: %s %s", step.name, step.status, step.failure_reason),
    )
    record = runner.run(arn)
    render_execution(record)
    return 0 if record.status == "Succeeded" else 1


def _report_executions(states: list[Any]) -> int:
    running = [s for s in states if not s.finished]
    bad = [s for s in states if s.status in ("Failed", "Stopped", "NotStarted")]
    if running:
        logger.warning(
            "%d executions are still running (listed above); follow them with `genesig pipeline status`", len(running)
        )
    return 1 if running or bad else 0


def _status(args: argparse.Namespace) -> int:
    import time

    from genesig.pipeline.sagemaker.executions import execution_status
    from genesig.presentation import ExecutionsView

    sm, s3 = _clients(args, "sagemaker", "s3")
    # The first read happens before the view opens: an AWS error is then one line, not an empty table and a line.
    states = execution_status(sm, args.pipeline_name, args.limit, s3=s3)
    with ExecutionsView(f"executions of {args.pipeline_name}", live=args.watch) as view:
        view.update(states)
        while args.watch and not all(s.finished for s in states):
            time.sleep(args.poll_seconds)
            states = execution_status(sm, args.pipeline_name, args.limit, s3=s3)
            view.update(states)
    return 0


def sagemaker_registry(args: argparse.Namespace) -> Any:
    """The SageMaker Model Registry, with the command's endpoints and ``--jobs`` (what sync copies at once)."""
    from genesig.pipeline.sagemaker.registry import SYNC_WORKERS, SageMakerRegistry

    sm, s3 = _clients(args, "sagemaker", "s3")
    return SageMakerRegistry(sm, s3, jobs=getattr(args, "jobs", SYNC_WORKERS))


def registry_aws(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.registry import describe, group_of, groups, package_arn, packages
    from genesig.presentation import console, render_aws_packages

    if getattr(args, "from_report", None):
        return _approve_from_report(args)
    [sm] = _clients(args, "sagemaker")
    group = group_of(args.group) if args.group else None
    if args.registry_command == "list":
        render_aws_packages([p for g in ([group] if group else groups(sm)) for p in packages(sm, g)])
    else:
        assert group is not None
        console.print_json(data=describe(sm, package_arn(sm, group, args.version)), default=str)
    return 0


def _approve_from_report(args: argparse.Namespace) -> int:
    from genesig.pipeline.approval import approve_by_rule, parse_rule, read_report
    from genesig.presentation import render_approvals

    if args.registry_command != "approve":
        raise DataError("--from-report goes with `registry approve`")
    rule = parse_rule(args.where)
    sm, s3 = _clients(args, "sagemaker", "s3")
    decisions = approve_by_rule(sm, read_report(args.from_report, s3), rule, reason=args.reason, dry_run=args.dry_run)
    render_approvals(decisions, dry_run=args.dry_run)
    return 1 if any(d.action == "failed" for d in decisions) else 0


def _endpoint(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.endpoint import delete_endpoint, deploy_endpoint
    from genesig.pipeline.sagemaker.names import check_image_uri, check_role_arn

    if args.endpoint_command != "delete":
        check_image_uri("--image-uri", args.image_uri)
        check_role_arn("--role", args.role)
    [sm] = _clients(args, "sagemaker")
    if args.endpoint_command == "delete":
        delete_endpoint(sm, args.name)
        logger.info("deleted endpoint %s", args.name)
        return 0
    status = deploy_endpoint(
        sm,
        args.name,
        image_uri=args.image_uri,
        prefix=args.prefix,
        role_arn=args.role,
        instance_type=args.instance_type,
        timeout_s=args.timeout,
        poll_s=args.poll_seconds,
    )
    logger.info("endpoint %s is %s", args.name, status)
    return 0


def is_local_endpoint(url: str | None) -> bool:
    """A `genesig local-endpoint` (or any SageMaker Runtime stand-in) on this machine: no AWS account is involved."""
    if not url:
        return False
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _local_target_model(workdir: Path, signature: str, version: int | None) -> str:
    """The TargetModel of a signature in the local registry (``run-local``'s): its latest Approved version's artifact
    name, or an explicit version's."""
    from genesig.errors import ModelNotFound
    from genesig.pipeline.registry import LocalRegistry
    from genesig.pipeline.sagemaker.names import artifact_name

    root = workdir / "registry"
    if not root.is_dir():
        raise DataError(f"no local registry in {workdir}: pass --workdir, the folder `genesig run-local` wrote")
    registry, group = LocalRegistry(root), artifact_name(signature)
    if version is not None:
        return registry.describe_model_package(group, version).artifact_name
    package = registry.latest_approved(group)
    if package is None:
        raise ModelNotFound(
            f"signature {signature!r} has no Approved version in {root}; approve one "
            f"(genesig registry approve {group} VERSION --workdir {workdir})"
        )
    return package.artifact_file


def _predict(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.endpoint import predict

    if not args.input.is_file():
        raise DataError(f"input file {args.input} does not exist")
    if bool(args.signature) == bool(args.target_model):
        raise DataError("give either --signature (with an optional --version) or --target-model")
    content_type = {".csv": "text/csv", ".json": "application/json"}.get(args.input.suffix.lower())
    if content_type is None:
        raise DataError(f"--input {args.input}: name a .csv (a header of gene names) or a .json file (see the README)")
    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        raise DataError(f"--out {args.out}: name a .csv or a .json file (the answer's format follows the suffix)")
    registry_url = args.sagemaker_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER")
    if is_local_endpoint(args.runtime_endpoint_url) and not registry_url:
        # A local endpoint needs no AWS region or credentials (boto3 signs anyway: harmless ones are supplied), and
        # signatures resolve in the local registry. With a SageMaker endpoint URL (an emulator, a VPC endpoint) they
        # resolve in that Model Registry instead.
        from genesig.local_endpoint import runtime_client

        runtime = runtime_client(args.runtime_endpoint_url)
        target = args.target_model or _local_target_model(args.workdir, args.signature, args.version)
    else:
        from genesig.pipeline.sagemaker.registry import resolve_target_model

        sm, runtime = _clients(args, "sagemaker", "sagemaker-runtime")
        target = args.target_model or resolve_target_model(sm, args.signature, args.version)
    accept = "text/csv" if args.out and args.out.suffix.lower() == ".csv" else "application/json"
    body = predict(runtime, args.endpoint, target, args.input.read_bytes(), content_type, accept)
    if args.out:
        args.out.write_bytes(body)
        logger.info("%s: wrote %s", target, args.out)
    else:
        from genesig.presentation import render_predictions

        render_predictions(json.loads(body))
    return 0


def add_aws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", default=None, help="AWS region (default: AWS_DEFAULT_REGION or the AWS CLI's)")
    parser.add_argument("--sagemaker-endpoint-url", help="e.g. an emulator; default AWS_ENDPOINT_URL_SAGEMAKER")
    parser.add_argument("--s3-endpoint-url", help="default AWS_ENDPOINT_URL_S3")
    parser.add_argument(
        "--runtime-endpoint-url",
        "--url",
        dest="runtime_endpoint_url",
        help="SageMaker Runtime, or a `genesig local-endpoint` (default AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME)",
    )


def add_aws_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The AWS commands, into ``sub``: ``pipeline`` (its verbs), ``endpoint`` and ``predict``."""
    _add_pipeline_parsers(sub)
    _add_endpoint_parser(sub)
    _add_predict_parser(sub)


def _add_pipeline_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pipeline = sub.add_parser("pipeline", help="the SageMaker Pipeline: definition, upsert, start, start-all, status")
    verbs = pipeline.add_subparsers(dest="pipeline_command", required=True)
    for verb, func, text in (
        ("definition", _definition, "print the definition JSON (no AWS call)"),
        ("upsert", _upsert, "create or update the pipeline"),
        ("start", _start, "start one execution for one signature"),
        ("start-all", _start_all, "one execution per signature, bounded concurrency, a live table"),
        ("start-set", _start_set, "one execution of the signature-set run over the whole set"),
        ("plan", _plan, "SageMaker jobs, time and cost of a signature set, before you pay (no AWS call)"),
        ("run-here", _run_here, "run an execution's jobs on this machine, as SageMaker would (emulators, rehearsal)"),
        ("status", _status, "recent executions: how each ended and why"),
    ):
        cmd = verbs.add_parser(verb, help=text)
        cmd.add_argument("--pipeline-name", default="genesig-mme", help="the pipeline's name (default genesig-mme)")
        add_aws_arguments(cmd)
        if verb in ("definition", "upsert"):
            cmd.add_argument("--role", help="ARN of the IAM role SageMaker runs the pipeline's jobs with")
            cmd.add_argument("--bucket", help="S3 bucket for the cohort, signature set, models and the MME prefix")
            cmd.add_argument("--training-image-uri", help="the jobs' image: build_and_push.sh's IMAGE-train URI")
            cmd.add_argument("--serving-image-uri", help="the endpoint's image: build_and_push.sh's IMAGE URI")
        if verb == "definition":
            cmd.add_argument("--out", type=Path, help="write the definition here instead of standard output")
            cmd.add_argument(
                "--design", choices=("signature", "set"), default="signature",
                help="signature: the one-signature pipeline (start, start-all); set: the signature-set run (start-set)",
            )  # fmt: skip
        if verb in ("upsert", "start-all"):
            cmd.add_argument("--signatures", type=Path, help="gene sets (.gmt/.json); default: built-in metagenes")
        if verb == "start":
            cmd.add_argument(
                "--signature",
                default="ALL",
                help="the signature (default ALL: the built-in signature of all 21 metagene genes)",
            )
        if verb in ("start-set", "plan", "run-here"):
            cmd.add_argument("--shards", type=int, default=4, help="training instances of the signature-set run (4)")
        if verb == "plan":
            _add_plan_arguments(cmd)
        if verb == "run-here":
            _add_run_here_arguments(cmd)
        if verb in ("start", "start-all", "start-set", "run-here"):
            cmd.add_argument(
                "--param",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a pipeline parameter, e.g. MetricThreshold=0.65 (repeatable)",
            )
        if verb == "start-all":
            cmd.add_argument("--max-parallel", type=int, default=4, help="executions running at once (default 4)")
            cmd.add_argument(
                "--timeout", type=float, help="stop waiting after this many seconds (running executions go on)"
            )
        if verb in ("start-all", "status"):
            cmd.add_argument("--poll-seconds", type=float, default=30.0, help="seconds between looks (default 30)")
        if verb == "status":
            cmd.add_argument("--limit", type=int, default=20, help="how many recent executions (default 20)")
            cmd.add_argument("--watch", action="store_true", help="keep the table up to date until all have finished")
        cmd.set_defaults(func=func)


def _add_plan_arguments(cmd: argparse.ArgumentParser) -> None:
    """``pipeline plan``'s assumptions, each with its default."""
    from genesig.pipeline.sagemaker.plan import Assumptions

    cmd.add_argument("--signatures", type=Path, help="gene sets (.gmt/.json); default: built-in metagenes")
    cmd.add_argument("--json", action="store_true", help="print the estimate as JSON, one object per design")
    a = Assumptions()
    cmd.add_argument("--processing-startup-minutes", type=float, default=a.processing_startup_minutes)
    cmd.add_argument("--training-startup-minutes", type=float, default=a.training_startup_minutes)
    cmd.add_argument("--seconds-per-signature", type=float, default=a.seconds_per_signature)
    cmd.add_argument("--pass-rate", type=float, default=a.pass_rate, help="share of signatures that pass")
    cmd.add_argument(
        "--permutations", type=int, default=a.permutations, help="the gate's outcome permutations (0: off)"
    )
    cmd.add_argument("--seconds-per-permutation", type=float, default=a.seconds_per_permutation)
    cmd.add_argument(
        "--competitive", choices=("report", "gate", "off"), default="report",
        help="the competitive test (random gene sets): report, gate or off",
    )  # fmt: skip
    cmd.add_argument(
        "--random-sets", type=int, default=a.random_sets, help="random sets in the run (at least 20 per size)"
    )
    cmd.add_argument(
        "--price-per-hour",
        type=float,
        default=a.price_per_instance_hour,
        help="USD per instance-hour (default: ml.m5.large on demand, us-east-1)",
    )
    cmd.add_argument(
        "--max-parallel",
        type=int,
        default=a.max_parallel,
        help="one execution per signature: executions at once",
    )


def _add_run_here_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--execution-arn", help="an execution already started (default: start one here)")
    cmd.add_argument("--signature", help="start the one-signature pipeline for this signature instead of a set run")
    cmd.add_argument(
        "--docker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run jobs in their image with Docker (default), or in this Python environment",
    )
    cmd.add_argument("--workdir", type=Path, default=Path("genesig-pipeline-runs"), help="jobs' /opt/ml folders")


def _add_endpoint_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    endpoint = sub.add_parser("endpoint", help="the multi-model endpoint: create, update, delete")
    endpoint_verbs = endpoint.add_subparsers(dest="endpoint_command", required=True)
    helps = {
        "create": "create the model, its endpoint config and the endpoint; wait until InService",
        "update": "point the endpoint at a new config (image, prefix, instance type); wait until InService",
        "delete": "delete the endpoint, its config and its model",
    }
    for verb, text in helps.items():
        cmd = endpoint_verbs.add_parser(verb, help=text)
        cmd.add_argument("--name", required=True, help="the endpoint's name")
        add_aws_arguments(cmd)
        if verb != "delete":
            cmd.add_argument("--image-uri", required=True, help="the serving image (build_and_push.sh's IMAGE URI)")
            cmd.add_argument("--prefix", required=True, help="s3://bucket/prefix/ holding the model artifacts")
            cmd.add_argument("--role", required=True, help="ARN of the IAM role the endpoint's model runs with")
            cmd.add_argument("--instance-type", default="ml.m5.large")
            cmd.add_argument("--timeout", type=float, default=1800, help="seconds to wait for InService")
            cmd.add_argument("--poll-seconds", type=float, default=30.0)
        cmd.set_defaults(func=_endpoint)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    predict = sub.add_parser("predict", help="invoke the endpoint with TargetModel for one signature")
    predict.add_argument("--signature", help="resolved to its latest Approved artifact name")
    predict.add_argument("--version", type=int, help="an explicit model version instead of the latest Approved")
    predict.add_argument("--target-model", help="an explicit artifact name, e.g. metagene_19-v3.tar.gz")
    predict.add_argument(
        "--input", type=Path, required=True, help="patients: .csv with a header of gene names, or .json (any format)"
    )
    predict.add_argument("--endpoint", required=True)
    predict.add_argument("--out", type=Path, help="write the answer (.csv or .json) instead of a table")
    predict.add_argument(
        "--workdir",
        type=Path,
        default=Path("genesig-work"),
        help="with a local endpoint: the local registry --signature resolves in (default ./genesig-work)",
    )
    add_aws_arguments(predict)
    predict.set_defaults(func=_predict)
