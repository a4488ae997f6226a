"""The images' entry points: ``genesig serve`` (the serving image, as SageMaker starts it) and ``genesig train``
(the training image, as a SageMaker training job runs it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genesig.logs import configure_logging

logger = logging.getLogger("genesig")


def _cmd_serve(args: argparse.Namespace) -> int:
    from genesig.container.server import serve
    from genesig.container.settings import read_settings

    settings = read_settings(port=args.port, state_dir=args.state_dir, host=args.host)
    configure_logging(settings.log_level)
    return serve(settings)


def _cmd_train(args: argparse.Namespace) -> int:
    from genesig.pipeline.sagemaker.training import TrainingPaths, main

    return main(TrainingPaths(args.root))


def add_image_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The images' entry points, into ``sub``."""
    serve = sub.add_parser("serve", help="run the MME model server (the image's entry point)")
    serve.add_argument("--port", type=int, help="public port (default: SAGEMAKER_BIND_TO_PORT or 8080)")
    serve.add_argument("--host", help="bind address (default 0.0.0.0)")
    serve.add_argument("--state-dir", help="folder for config, logs and sockets (default /tmp/genesig-serve)")
    serve.set_defaults(func=_cmd_serve)

    train = sub.add_parser("train", help="SageMaker training-job entry (the image runs `train`): /opt/ml in, out")
    train.add_argument("--root", type=Path, default=Path("/opt/ml"), help=argparse.SUPPRESS)
    train.set_defaults(func=_cmd_train)
