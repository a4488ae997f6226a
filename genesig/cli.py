"""The ``genesig`` command line: parse, dispatch, map errors to exit codes. Logic lives in the modules it calls."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from genesig.errors import GenesigError
from genesig.logs import configure_logging

logger = logging.getLogger("genesig")


def _cmd_serve(args: argparse.Namespace) -> int:
    from genesig.container.server import serve
    from genesig.container.settings import read_settings

    settings = read_settings(port=args.port, state_dir=args.state_dir, host=args.host)
    configure_logging(settings.log_level)
    return serve(settings)


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from genesig.selfcheck import selfcheck

    checks = selfcheck(args.url)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesig", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MME model server (the image's entry point)")
    serve.add_argument("--port", type=int, help="public port (default: SAGEMAKER_BIND_TO_PORT or 8080)")
    serve.add_argument("--host", help="bind address (default 0.0.0.0)")
    serve.add_argument("--state-dir", help="folder for config, logs and sockets (default /tmp/genesig-serve)")
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("selfcheck", help="check a model server end to end (starts one unless --url is given)")
    check.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    check.set_defaults(func=_cmd_selfcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper())
    try:
        return int(args.func(args))
    except GenesigError as exc:
        logger.error("%s", exc.message)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
