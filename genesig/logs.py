"""Logging set-up for the command-line entry points (library modules only call ``logging.getLogger``)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format=FORMAT, force=True)
    # aiohttp's access log duplicates MMS's own; keep warnings only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
