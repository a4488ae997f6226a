"""``genesig pipeline|endpoint|predict`` and ``genesig sync --prefix s3://``: parse, call, report.

AWS endpoints come from ``--sagemaker-endpoint-url`` / ``--s3-endpoint-url`` or boto3's own
``AWS_ENDPOINT_URL_<SERVICE>`` variables, so the same commands run against emulators.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _clients(args: argparse.Namespace, *services: str) -> list[Any]:
    from genesig.pipeline.aws import client

    urls = {
        "sagemaker": args.sagemaker_endpoint_url,
        "s3": args.s3_endpoint_url,
        "sagemaker-runtime": args.runtime_endpoint_url,
    }
    return [client(s, region=args.region, endpoint_url=urls.get(s)) for s in services]


def _config(args: argparse.Namespace) -> Any:
    from genesig.pipeline.sagemaker_pipeline import PipelineConfig

    return PipelineConfig(
        role_arn=args.role,
        bucket=args.bucket,
        region=args.region or "us-east-1",
        training_image_uri=args.training_image_uri,
        serving_image_uri=args.serving_image_uri,
        name=args.pipeline_name,
    )


def _definition(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker_pipeline import definition_json

    text = json.dumps(json.loads(definition_json(_config(args))), indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(text)
    return 0


def _upsert(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker_ops import upsert_pipeline

    sm, s3 = _clients(args, "sagemaker", "s3")
    arn = upsert_pipeline(sm, s3, _config(args), load_signatures(args.signatures))
    logger.info("pipeline %s", arn)
    return 0


def _parameters(items: list[str]) -> dict[str, str]:
    from genesig.errors import DataError

    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--param takes NAME=VALUE, got {item!r}")
        values[key] = value
    return values


def _start(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker_ops import start_execution

    [sm] = _clients(args, "sagemaker")
    logger.info("started %s", start_execution(sm, args.pipeline_name, args.signature, _parameters(args.param)))
    return 0


def _start_all(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker_ops import ExecutionResult, start_all
    from genesig.presentation import console

    [sm] = _clients(args, "sagemaker")
    names = [s.name for s in load_signatures(args.signatures)]

    def show(results: list[ExecutionResult]) -> None:
        finished = sum(r.status in ("Succeeded", "Failed", "Stopped") for r in results)
        console.print(f"{finished}/{len(names)} finished, {len(results) - finished} running", highlight=False)

    results = start_all(
        sm,
        args.pipeline_name,
        names,
        max_parallel=args.max_parallel,
        parameters=_parameters(args.param),
        poll_s=args.poll_seconds,
        on_update=show,
    )
    for result in results:
        logger.info("%s: %s", result.signature, result.status)
    return 0 if all(r.status == "Succeeded" for r in results) else 1


def _status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from genesig.pipeline.sagemaker_ops import execution_status
    from genesig.presentation import console

    [sm] = _clients(args, "sagemaker")
    table = Table(title=f"executions of {args.pipeline_name}", title_justify="left")
    for column in ("signature", "status", "started", "execution"):
        table.add_column(column, overflow="fold")
    for row in execution_status(sm, args.pipeline_name, args.limit):
        table.add_row(row["signature"], row["status"], row["started"], row["arn"].rsplit("/", 1)[-1])
    console.print(table)
    return 0


def sync_s3(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker_ops import sync_prefix

    sm, s3 = _clients(args, "sagemaker", "s3")
    for deployment in sync_prefix(sm, s3, args.prefix):
        logger.info("%s: %s", deployment.key or deployment.package_arn, deployment.action)
    return 0


def registry_aws(args: argparse.Namespace) -> int:
    from rich.table import Table

    from genesig.pipeline.aws import group_name
    from genesig.pipeline.sagemaker_ops import list_packages, package_arn, set_approval
    from genesig.presentation import console

    [sm] = _clients(args, "sagemaker")
    group = args.group if not args.group or args.group.startswith("genesig-") else group_name(args.group)
    if args.registry_command == "list":
        table = Table(title="SageMaker model packages", title_justify="left")
        for column in ("group", "version", "status", "created"):
            table.add_column(column)
        for p in list_packages(sm, group):
            table.add_row(
                p["ModelPackageGroupName"],
                str(p.get("ModelPackageVersion")),
                p["ModelApprovalStatus"],
                str(p.get("CreationTime", "")),
            )
        console.print(table)
    elif args.registry_command == "describe":
        described = sm.describe_model_package(ModelPackageName=package_arn(sm, group, args.version))
        console.print_json(data=described, default=str)
    else:
        status = "Rejected" if args.registry_command == "reject" else "Approved"
        described = set_approval(sm, group, args.version, status, args.reason)
        logger.info("%s v%d is now %s", group, args.version, described["ModelApprovalStatus"])
    return 0


def _endpoint(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker_ops import delete_endpoint, deploy_endpoint

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


def _predict(args: argparse.Namespace) -> int:
    from genesig.errors import DataError
    from genesig.pipeline.sagemaker_ops import predict, resolve_target_model

    if not args.input.is_file():
        raise DataError(f"input file {args.input} does not exist")
    if bool(args.signature) == bool(args.target_model):
        raise DataError("give either --signature (with an optional --version) or --target-model")
    sm, runtime = _clients(args, "sagemaker", "sagemaker-runtime")
    target = args.target_model or resolve_target_model(sm, args.signature, args.version)
    accept = "text/csv" if args.out and args.out.suffix == ".csv" else "application/json"
    body = predict(runtime, args.endpoint, target, args.input.read_bytes(), "text/csv", accept)
    if args.out:
        args.out.write_bytes(body)
        logger.info("%s: wrote %s", target, args.out)
    else:
        from genesig.presentation import render_predictions

        render_predictions(json.loads(body))
    return 0


def add_aws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS CLI's configuration)")
    parser.add_argument("--sagemaker-endpoint-url", help="e.g. an emulator; default AWS_ENDPOINT_URL_SAGEMAKER")
    parser.add_argument("--s3-endpoint-url", help="default AWS_ENDPOINT_URL_S3")
    parser.add_argument(
        "--runtime-endpoint-url",
        "--url",
        dest="runtime_endpoint_url",
        help="SageMaker Runtime, or a `genesig local-endpoint` (default AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME)",
    )


def add_aws_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pipeline = sub.add_parser("pipeline", help="the SageMaker Pipeline: definition, upsert, start, start-all, status")
    verbs = pipeline.add_subparsers(dest="pipeline_command", required=True)
    for verb, func, text in (
        ("definition", _definition, "print the definition JSON (no AWS call)"),
        ("upsert", _upsert, "create or update the pipeline"),
        ("start", _start, "start one execution for one signature"),
        ("start-all", _start_all, "one execution per signature, bounded concurrency"),
        ("status", _status, "recent executions"),
    ):
        cmd = verbs.add_parser(verb, help=text)
        cmd.add_argument("--pipeline-name", default="genesig-mme")
        add_aws_arguments(cmd)
        if verb in ("definition", "upsert"):
            cmd.add_argument(
                "--role", default="arn:aws:iam::123456789012:role/genesig-sagemaker", required=verb == "upsert"
            )
            cmd.add_argument("--bucket", default="genesig-artifacts")
            cmd.add_argument(
                "--training-image-uri",
                default="123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme-train:latest",
                help="the jobs' image (build_and_push.sh's IMAGE-train)",
            )
            cmd.add_argument(
                "--serving-image-uri",
                default="123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:latest",
                help="the image registered models are served with (build_and_push.sh's IMAGE)",
            )
        if verb == "definition":
            cmd.add_argument("--out", type=Path)
        if verb in ("upsert", "start-all"):
            cmd.add_argument("--signatures", type=Path, help="gene sets (.gmt/.json); default: built-in metagenes")
        if verb == "start":
            cmd.add_argument("--signature", required=True)
        if verb in ("start", "start-all"):
            cmd.add_argument(
                "--param",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a pipeline parameter, e.g. MetricThreshold=0.65 (repeatable)",
            )
        if verb == "start-all":
            cmd.add_argument("--max-parallel", type=int, default=4)
            cmd.add_argument("--poll-seconds", type=float, default=30.0)
        if verb == "status":
            cmd.add_argument("--limit", type=int, default=20)
        cmd.set_defaults(func=func)

    endpoint = sub.add_parser("endpoint", help="the multi-model endpoint: create, update, delete")
    endpoint_verbs = endpoint.add_subparsers(dest="endpoint_command", required=True)
    for verb in ("create", "update", "delete"):
        cmd = endpoint_verbs.add_parser(verb)
        cmd.add_argument("--name", required=True)
        add_aws_arguments(cmd)
        if verb != "delete":
            cmd.add_argument("--image-uri", required=True, help="the serving image (build_and_push.sh's IMAGE)")
            cmd.add_argument("--prefix", required=True, help="s3://bucket/prefix/ holding the model artifacts")
            cmd.add_argument("--role", required=True)
            cmd.add_argument("--instance-type", default="ml.m5.large")
            cmd.add_argument("--timeout", type=float, default=1800, help="seconds to wait for InService")
            cmd.add_argument("--poll-seconds", type=float, default=30.0)
        cmd.set_defaults(func=_endpoint)

    predict = sub.add_parser("predict", help="invoke the endpoint with TargetModel for one signature")
    predict.add_argument("--signature", help="resolved to its latest Approved artifact name")
    predict.add_argument("--version", type=int, help="an explicit model version instead of the latest Approved")
    predict.add_argument("--target-model", help="an explicit artifact name, e.g. metagene_19-v3.tar.gz")
    predict.add_argument("--input", type=Path, required=True, help="CSV with a header of gene names")
    predict.add_argument("--endpoint", required=True)
    predict.add_argument("--out", type=Path, help="write the answer (.csv or .json) instead of a table")
    add_aws_arguments(predict)
    predict.set_defaults(func=_predict)
