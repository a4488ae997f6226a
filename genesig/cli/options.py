"""The command line's options made from the typed settings (``genesig.pipeline.settings``): one ``--field-name``
per field with its type, range and default, and back to settings with a bad value named by its option."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from genesig.pipeline.settings import Settings, convert


def add_arguments(
    parser: argparse.ArgumentParser, settings_type: type[msgspec.Struct], *, only: tuple[str, ...] = ()
) -> None:
    """One ``--field-name`` option per field (or per field in ``only``), typed, with its default in the help."""
    schema = msgspec.json.schema(settings_type)
    properties = schema["$defs"][settings_type.__name__]["properties"]
    for field in msgspec.structs.fields(settings_type):
        if only and field.name not in only:
            continue
        spec = properties[field.name]
        options = [s for s in spec.get("anyOf", [spec]) if s.get("type") != "null"]
        kind = options[0]
        kwargs: dict[str, Any] = {"default": None, "dest": field.name}
        if "enum" in kind:
            kwargs["choices"] = kind["enum"]
        else:
            kwargs["type"] = {"integer": int, "number": float}.get(kind.get("type", "string"), str)
        default = "none" if field.default is None else field.default
        parser.add_argument(
            "--" + field.name.replace("_", "-"), help=f"{spec.get('description', '')} (default {default})", **kwargs
        )


def from_arguments(args: argparse.Namespace, settings_type: type[Settings]) -> Settings:
    """The settings given on the command line, the defaults for the rest; a bad value names its option."""
    given = {
        f.name: getattr(args, f.name)
        for f in msgspec.structs.fields(settings_type)
        if getattr(args, f.name, None) is not None
    }
    return convert(given, settings_type, label=lambda field: "--" + field.replace("_", "-"))
