"""The ``genesig`` command line, on top of everything else (nothing below imports it): this module assembles the
parser, groups ``--help`` and maps errors to exit codes; the commands live by where they run: ``local`` (this
machine), ``aws`` (SageMaker), ``steps`` (the pipelines' jobs), ``image`` (the images' entry points). Logic lives in
the modules they call; optional extras are imported when a command runs, and a missing one is named in one line."""

from __future__ import annotations

import argparse
import logging
import re
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from genesig.cli.aws import add_aws_parsers
from genesig.cli.image import add_image_parsers
from genesig.cli.local import add_local_parsers
from genesig.cli.steps import add_step_parsers
from genesig.errors import GenesigError
from genesig.logs import configure_logging

logger = logging.getLogger("genesig")


class OneLineParser(argparse.ArgumentParser):
    """argparse that answers bad arguments with one line naming the problem and where to look (argparse's own
    answer opens with the whole usage text, which buries the problem); subcommands inherit it."""

    # The innermost parser that started parsing: argparse reports unrecognized arguments from the top parser, yet
    # their help is the subcommand's.
    innermost: OneLineParser | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: `--work` must not quietly mean `--workdir` (nor change meaning when an option is added).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        OneLineParser.innermost = self
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        prog = self.prog
        if message.startswith("unrecognized arguments") and OneLineParser.innermost is not None:
            prog = OneLineParser.innermost.prog
        self.exit(2, f"{prog}: {message}; see `{prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="genesig",
        description="Train, gate, register and serve one cancer-survival model per gene signature, every signature "
        "behind one SageMaker multi-model endpoint. Start with `genesig demo`; `genesig COMMAND --help` for each "
        "command.",
    )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_local_parsers(sub)
    add_aws_parsers(sub)
    add_image_parsers(sub)
    add_step_parsers(sub)
    _group_commands(parser, sub)
    return parser


# `genesig --help` lists the commands by what they are for, each once.
COMMAND_GROUPS = {
    "getting started": ("demo", "synth"),
    "on this machine": ("run-local", "registry", "sync", "local-endpoint", "selfcheck"),
    "on AWS": ("pipeline", "endpoint", "predict"),
    "image and job entry points": ("serve", "train", "step"),
}


def _group_commands(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands under ``COMMAND_GROUPS``' headings in the epilog, instead of argparse's one flat list."""
    helps = {action.dest: action.help or "" for action in sub._choices_actions}
    grouped = [name for names in COMMAND_GROUPS.values() for name in names]
    if sorted(grouped) != sorted(helps):
        raise AssertionError(f"COMMAND_GROUPS must list every command once: {sorted(set(helps) ^ set(grouped))}")
    width = max(map(len, helps)) + 2
    lines = []
    for heading, names in COMMAND_GROUPS.items():
        lines.append(f"{heading}:")
        lines += [f"  {name.ljust(width)}{helps[name]}" for name in names]
    lines += [
        "",
        "exit codes: 0 done (a gate miss included), 1 failed, 2 usage or input error, 3 `step gate`: not passed,",
        "130 interrupted",
    ]
    parser.epilog = "\n".join(lines)
    parser.description = textwrap.fill(parser.description or "", 100)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub.help = "one of the commands below"
    sub._choices_actions.clear()  # listed by group in the epilog instead


# Which set-up provides a module a command imports late (scripts/bootstrap.sh's modes, pyproject's extras).
EXTRA_OF_MODULE = {
    "sagemaker": "pipeline",
    "boto3": "pipeline",
    "botocore": "pipeline",
    **dict.fromkeys(("torch", "pandas", "pyarrow", "sklearn", "scipy", "matplotlib", "rich", "threadpoolctl"), "train"),
    **dict.fromkeys(("mms", "sagemaker_inference", "aiohttp", "uvloop", "psutil"), "serve"),
}


def missing_extra_message(exc: ImportError) -> str:
    """One line for a command whose extra is not installed (or broken): which one, and how to install it."""
    named = exc.name or (re.findall(r"No module named '([^']+)'", str(exc)) or [""])[0]
    module = named.split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return f"{exc}: the installation is incomplete; run scripts/bootstrap.sh dev (or reinstall genesig-mme)"
    return (
        f"this command needs the `{extra}` set-up ({module} is not installed): run scripts/bootstrap.sh {extra}, "
        f"or pip install 'genesig-mme[{extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper())
    try:
        return int(args.func(args))
    except GenesigError as exc:
        logger.error("%s", exc.message)
        return 2
    except ImportError as exc:
        logger.error("%s", missing_extra_message(exc))
        return 2
    except KeyboardInterrupt:
        return 130
