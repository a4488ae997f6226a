"""The commands that run on this machine: the demo, run-local, the local registry and sync, the local multi-model
endpoint, a synthetic cohort, the model server's self-check."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genesig.cli.aws import add_aws_arguments
from genesig.cli.options import add_arguments, from_arguments
from genesig.errors import GenesigError
from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings

if TYPE_CHECKING:
    from genesig.pipeline.registry import Registry

logger = logging.getLogger("genesig")


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from genesig.selfcheck import selfcheck

    if args.models_dir and not args.url:
        raise GenesigError("--models-dir goes with --url: the folder mounted into the server you check")
    checks = selfcheck(args.url, args.models_dir, args.container_models_dir)
    for check in checks:
        level = logging.INFO if check.passed else logging.ERROR
        logger.log(
            level,
            "%s  %s%s",
            "PASS" if check.passed else "FAIL",
            check.name,
            "" if check.passed else f": {check.detail}",
        )
    failed = sum(not c.passed for c in checks)
    logger.info("self-check: %d passed, %d failed", len(checks) - failed, failed)
    return 1 if failed else 0


def _run_options(args: argparse.Namespace) -> Any:
    from genesig.pipeline.run import RunOptions

    return RunOptions(
        data=args.data,
        workdir=args.workdir,
        signatures_file=args.signatures,
        signatures=tuple(args.signature) if args.signature else None,
        cohort=from_arguments(args, CohortSettings),
        train=from_arguments(args, TrainSettings),
        gate=from_arguments(args, GateSettings),
        approve=args.approve,
        jobs=args.jobs,
    )


def _cmd_run_local(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import run_local
    from genesig.presentation import RunProgress, render_summary

    options = _run_options(args)
    with RunProgress(enabled=not args.quiet) as progress:
        summary = run_local(options, on_result=progress.advance, on_start=progress.start)
    render_summary(summary, quiet=args.quiet)
    # A gate miss is a result (exit 0), as in the SageMaker pipelines; a run that evaluated nothing (every signature
    # skipped or failed) did not do its job (exit 1).
    return 0 if any(r.evaluated for r in summary.results) else 1


def open_registry(args: argparse.Namespace) -> Registry:
    """The registry a command works on, chosen here only: SageMaker's with ``--aws`` (or ``sync --prefix s3://``),
    else the local one in ``--workdir``."""
    if getattr(args, "aws", False) or getattr(args, "prefix", None):
        from genesig.cli.aws import sagemaker_registry

        return sagemaker_registry(args)
    from genesig.pipeline.registry import LocalRegistry

    return LocalRegistry(args.workdir / "registry")


def _cmd_sync(args: argparse.Namespace) -> int:
    from genesig.presentation import render_deployments

    prefix = args.prefix or str(args.workdir / "mme-prefix")
    deployments = open_registry(args).sync(prefix)
    render_deployments(deployments)
    return 1 if any(d.action == "failed" for d in deployments) else 0


def _cmd_registry(args: argparse.Namespace) -> int:
    if getattr(args, "from_report", None) and not args.aws:
        raise GenesigError("--from-report approves in the SageMaker Model Registry: add --aws")
    if args.registry_command == "approve" and not getattr(args, "from_report", None) and args.version is None:
        raise GenesigError("registry approve takes GROUP VERSION, or --from-report REPORT --where RULE with --aws")
    if args.registry_command in ("approve", "reject") and not getattr(args, "from_report", None):
        registry = open_registry(args)
        status = "Rejected" if args.registry_command == "reject" else "Approved"
        package = registry.approve(args.group, args.version, status, args.reason)
        logger.info("%s v%d is now %s", package.group, package.version, package.approval_status)
        return 0
    if args.aws:
        from genesig.cli.aws import registry_aws

        return registry_aws(args)
    from genesig.pipeline.registry import LocalRegistry
    from genesig.presentation import render_packages

    local = LocalRegistry(args.workdir / "registry")
    if args.registry_command == "list":
        groups = [args.group] if args.group else local.groups()
        render_packages([p for g in groups for p in local.list_model_packages(g)])
    else:
        render_packages([local.describe_model_package(args.group, args.version)], detailed=True)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    planted: dict[str, float] = {}
    for item in args.plant:
        name, _, beta = item.rpartition("=")
        try:
            planted[name] = float(beta)
        except ValueError:
            raise GenesigError(f"--plant takes NAME=EFFECT (a number), got {item!r}") from None
    spec = SyntheticSpec(
        n_patients=args.patients,
        seed=args.seed,
        planted=planted,
        with_time=args.with_time,
        event_rate=args.event_rate,
        background_genes=args.background_genes,
    )
    path = write_synthetic_cohort(args.out, load_signatures(args.signatures), spec)
    logger.info("wrote %s (%d patients)", path, args.patients)
    return 0


def _refuse_a_taken_port(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise GenesigError(
                f"--port {port} on {host} is not available ({exc.strerror.lower() if exc.strerror else exc}): stop "
                "what uses it, or pick another --port"
            ) from None


def _cmd_local_endpoint(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import tempfile

    from aiohttp import web

    from genesig.container_server import CONTAINER_MODELS_DIR, ContainerServer
    from genesig.local_endpoint import LocalEndpoint, ModelSource
    from genesig.server_process import ServerProcess

    server: ServerProcess | ContainerServer | None = None
    url = args.model_server_url
    source = ModelSource(args.prefix)  # a bad prefix is refused before anything starts
    _refuse_a_taken_port(args.host, args.port)  # and so is a port already in use
    made: list[Path] = []  # temporary folders this command created, removed when it stops
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="genesig-model-cache-"))
    if args.cache_dir is None:
        made.append(cache)
    url_root = args.model_url_root
    if args.image and url:
        raise GenesigError("give --image or --model-server-url, not both")
    if args.image:
        server = ContainerServer(args.image, cache, memory_mb=args.memory_mb).start()
        url, url_root = server.url, CONTAINER_MODELS_DIR
        logger.info("started %s at %s; the model cache %s is its %s", args.image, url, cache, url_root)
    elif not url:
        state = Path(tempfile.mkdtemp(prefix="genesig-local-endpoint-"))
        made.append(state)
        server = ServerProcess(state / "model-server").start()
        url = server.url
        logger.info("started a model server at %s (logs: %s)", url, server.log_path)
    endpoint = LocalEndpoint(source, url, cache, args.cache_max_mb * 1024 * 1024, url_root)

    async def run() -> None:
        runner = web.AppRunner(endpoint.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host=args.host, port=args.port).start()
        logger.info(
            "local MME endpoint on http://%s:%d/endpoints/local/invocations (prefix %s)",
            args.host,
            args.port,
            args.prefix,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    import uvloop

    try:
        # uvloop: measured A/B against asyncio's loop (wrk, 4 interleaved rounds): ~10% lower p50 at one connection,
        # within noise at eight. The hop itself (aiohttp server + client) costs ~1.5 ms per invocation.
        uvloop.run(run())
    finally:
        if server is not None:
            server.stop()
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from genesig.demo import run_demo
    from genesig.presentation import render_demo, render_summary

    result = run_demo(
        args.workdir,
        args.data,
        patients=args.patients,
        seed=args.seed,
        keep_running=args.keep_running,
        on_summary=render_summary,
        on_result=lambda result: render_demo(result, str(args.workdir)),  # before --keep-running waits
        image=args.image,
    )
    return 0 if result.predictions else 1


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--data", type=Path, required=True, help="cohort CSV/TSV/Parquet: id, genes, event [, time]")
    parser.add_argument("--signatures", type=Path, help="gene sets (.gmt or .json); default: the built-in metagenes")
    parser.add_argument(
        "--signature",
        action="append",
        metavar="NAME",
        help="run only this signature (repeatable); default: every signature in the set",
    )
    parser.add_argument("--workdir", type=Path, default=Path("genesig-work"), help="outputs (default ./genesig-work)")
    add_arguments(parser, CohortSettings)
    add_arguments(parser, TrainSettings)
    add_arguments(parser, GateSettings)
    parser.add_argument("--approve", action="store_true", help="register passing models as Approved (and deploy)")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or table: one line of counts (the table is in summary.csv)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="signatures trained at once, one process each (default 1; 0: one per CPU)"
    )


def add_local_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that run on this machine, into ``sub``."""
    check = sub.add_parser("selfcheck", help="check a model server end to end (starts one unless --url is given)")
    check.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    check.add_argument(
        "--models-dir",
        type=Path,
        help="the host folder mounted into the server's container (docker run -v DIR:/opt/ml/models:ro)",
    )
    check.add_argument(
        "--container-models-dir",
        default="/opt/ml/models",
        help="where the container sees --models-dir (default /opt/ml/models, as SageMaker mounts it)",
    )
    check.set_defaults(func=_cmd_selfcheck)

    run = sub.add_parser("run-local", help="preprocess, train, evaluate, gate, register and deploy on this machine")
    _add_run_arguments(run)
    run.set_defaults(func=_cmd_run_local)

    sync_cmd = sub.add_parser("sync", help="deploy the latest Approved package of every signature (idempotent)")
    sync_cmd.add_argument("--workdir", type=Path, default=Path("genesig-work"), help="local registry and prefix")
    sync_cmd.add_argument("--prefix", help="s3://bucket/prefix/: sync the SageMaker Model Registry there instead")
    sync_cmd.add_argument("--jobs", type=int, default=8, help="with --prefix: signatures copied at once (default 8)")
    add_aws_arguments(sync_cmd)
    sync_cmd.set_defaults(func=_cmd_sync)

    _add_registry_parser(sub)

    synth = sub.add_parser("synth", help="write a seeded synthetic cohort with planted effects")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--patients", type=int, default=200)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--plant",
        action="append",
        default=[],
        metavar="NAME=EFFECT",
        help="signature with a true effect (log-odds or log-hazard per SD), repeatable",
    )
    synth.add_argument("--with-time", action="store_true", help="add censored survival times")
    synth.add_argument("--event-rate", type=float, default=0.35)
    synth.add_argument(
        "--background-genes",
        type=int,
        default=500,
        help="genes outside every signature, as a real cohort has (the competitive test's random gene sets are drawn "
        "from all genes)",
    )
    synth.add_argument("--signatures", type=Path, help="gene sets whose genes the cohort has (default: metagenes)")
    synth.set_defaults(func=_cmd_synth)

    demo = sub.add_parser("demo", help="the whole flow on this machine: data, pipeline, server, endpoint, predictions")
    demo.add_argument("--data", type=Path, help="a cohort file (default: a generated synthetic cohort)")
    demo.add_argument("--workdir", type=Path, default=Path("genesig-demo"))
    demo.add_argument("--patients", type=int, default=200, help="size of the generated cohort")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--keep-running", action="store_true", help="leave the endpoint up until Ctrl-C")
    demo.add_argument("--image", help="serve with this serving image under Docker (see ./build_and_push.sh)")
    demo.set_defaults(func=_cmd_demo)

    local = sub.add_parser("local-endpoint", help="a local multi-model endpoint that routes like SageMaker's")
    local.add_argument("--prefix", required=True, help="the model prefix: a folder or s3://bucket/prefix/")
    local.add_argument("--port", type=int, default=8081)
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument("--model-server-url", help="a running `genesig serve`; default: start one")
    local.add_argument("--cache-dir", type=Path, help="where artifacts are extracted (default: a temporary folder)")
    local.add_argument("--cache-max-mb", type=int, default=2048, help="disk limit of extracted artifacts")
    local.add_argument(
        "--image",
        help="run this serving image with Docker as the model server (the cache mounted at /opt/ml/models)",
    )
    local.add_argument("--memory-mb", type=int, help="with --image: the container's memory limit (docker --memory)")
    local.add_argument(
        "--model-url-root", help="where --model-server-url sees --cache-dir (e.g. /opt/ml/models in a container)"
    )
    local.set_defaults(func=_cmd_local_endpoint)


def _add_registry_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``registry``: list, describe, approve, reject (local, or SageMaker's with --aws)."""
    registry = sub.add_parser(
        "registry", help="the model registry (local, or SageMaker's with --aws): list, describe, approve, reject"
    )
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    listing = registry_sub.add_parser("list", help="every package of every group (or of --group)")
    listing.add_argument("--group", help="one signature's package group")
    helps = {
        "describe": "one package: its metrics, status history and artifact",
        "approve": "approve a version (then `genesig sync` deploys it), or by rule from a set run's report",
        "reject": "reject a version (never deployed)",
    }
    for verb, text in helps.items():
        cmd = registry_sub.add_parser(verb, help=text)
        cmd.add_argument("group", nargs="?" if verb == "approve" else None, help="a signature, or its package group")
        cmd.add_argument("version", type=int, nargs="?" if verb == "approve" else None)
        if verb != "describe":
            cmd.add_argument("--reason", default="", help="recorded in the package's status history")
        if verb == "approve":
            cmd.add_argument(
                "--from-report",
                metavar="REPORT",
                help="with --aws: a signature-set run's report.json (a file or s3:// URI); approves the registered "
                "signatures that --where selects",
            )
            cmd.add_argument("--where", help='the rule, e.g. "cv_lower >= 0.6 and test >= 0.6" (fields of the report)')
            cmd.add_argument("--dry-run", action="store_true", help="with --from-report: list what would be approved")
    for cmd in (listing, *(registry_sub.choices[v] for v in ("describe", "approve", "reject"))):
        cmd.add_argument("--workdir", type=Path, default=Path("genesig-work"))
        cmd.add_argument("--aws", action="store_true", help="the SageMaker Model Registry instead of the local one")
        add_aws_arguments(cmd)
    registry.set_defaults(func=_cmd_registry)
