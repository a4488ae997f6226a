"""The serving image has no pipeline extras: `genesig serve` builds the whole command line, so building it must not
import them (a module-level import of the gate's statistics once killed the serving image at start-up)."""

from __future__ import annotations

import subprocess
import sys

# What only the `train` and `aws` extras install; the serving image has none of them.
EXTRAS_ONLY = ("scipy", "threadpoolctl", "pandas", "torch", "sklearn", "matplotlib", "boto3", "sagemaker")


def test_building_the_command_line_imports_no_extra() -> None:
    code = (
        "import sys, genesig.cli as cli; cli.build_parser(); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({EXTRAS_ONLY!r})))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert shown.stdout.strip() == "[]", shown.stdout
