"""Terminal output of the command line (tables, progress); the logic it shows lives elsewhere."""

from __future__ import annotations

import shutil
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from genesig.pipeline.registry import ModelPackage
    from genesig.pipeline.run import RunSummary, SignatureResult

# rich assumes 80 columns when not writing to a terminal; the run table needs more.
console = Console(width=shutil.get_terminal_size((150, 24)).columns)
# Below this many signatures a progress bar is noise.
PROGRESS_FROM = 8


class RunProgress:
    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        return self

    def start(self, total: int) -> None:
        if total >= PROGRESS_FROM:
            self._progress = Progress(
                TextColumn("signatures"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
            )
            self._progress.start()
            self._task = self._progress.add_task("run", total=total)

    def advance(self, _result: SignatureResult) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        if self._progress is not None:
            self._progress.stop()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_summary(summary: RunSummary) -> None:
    table = Table(title=f"genesig run-local: gate {summary.gate_on} >= {summary.threshold}", title_justify="left")
    for column in (
        "signature",
        "genes",
        "train/test",
        "metric",
        "CV mean [95% interval]",
        "test",
        "gate",
        "package",
        "deployed as",
    ):
        table.add_column(column, overflow="fold", no_wrap=column in ("signature", "deployed as"))
    notes = []
    for r in summary.results:
        genes = f"{len(r.genes)}" + (f" ({len(r.missing_genes)} missing)" if r.missing_genes else "")
        if r.status != "done":
            table.add_row(r.signature, genes, "-", "-", "-", "-", f"[yellow]{r.status}[/]", "-", "-")
            notes.append(f"{r.signature}: {r.reason}")
            continue
        interval = f"{_fmt(r.cv_mean)} [{_fmt(r.cv_interval[0])}, {_fmt(r.cv_interval[1])}]" if r.cv_interval else "-"
        verdict = "[green]passed[/]" if r.passed else "[red]failed[/]"
        package = f"v{r.version} {r.approval_status}" if r.version else "-"
        table.add_row(
            r.signature,
            genes,
            f"{r.n_train}/{r.n_test}",
            r.metric,
            interval,
            _fmt(r.test_value),
            verdict,
            package,
            r.deployed or "-",
        )
    console.print(table)
    for note in notes:
        console.print(f"  {note}", highlight=False)
    passed = sum(r.passed for r in summary.results)
    console.print(
        f"{passed} of {len(summary.results)} signatures passed the gate; reasons and reports in "
        f"{summary.workdir}/summary.json",
        highlight=False,
    )


def render_packages(packages: list[ModelPackage], detailed: bool = False) -> None:
    table = Table(title="model packages", title_justify="left")
    for column in ("group", "version", "status", "artifact", "created"):
        table.add_column(column)
    for p in packages:
        table.add_row(p.group, str(p.version), p.approval_status, p.artifact_name, p.created_at)
    console.print(table)
    if detailed:
        for p in packages:
            console.print_json(data={"metrics": p.metrics, "status_history": p.status_history, "sha256": p.sha256})


def render_predictions(doc: dict[str, Any]) -> None:
    output = doc.get("output", "probability")
    table = Table(title=f"{doc.get('model')} v{doc.get('version')}: {output}", title_justify="left")
    rows = doc.get("predictions", [])
    columns = (["id"] if rows and "id" in rows[0] else []) + [output, "risk_group"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)


def render_demo(result: Any, workdir: str) -> None:
    summary = result.summary
    table = Table(
        title="genesig demo: every deployed signature, invoked through the local MME endpoint", title_justify="left"
    )
    for column in ("signature", "gate", "CV metric", "deployed as (TargetModel)", "example predictions"):
        table.add_column(column, overflow="fold", no_wrap=column == "signature")
    for r in summary.results:
        predictions = result.predictions.get(r.deployed or "", [])
        examples = "; ".join(
            f"{p.get('id', '?')}: {p.get('probability', p.get('risk_score', 0.0)):.3f} {p['risk_group']}"
            for p in predictions
        )
        gate = "[green]passed[/]" if r.passed else "[red]failed[/]" if r.status == "done" else f"[yellow]{r.status}[/]"
        metric = f"{r.metric} {_fmt(r.cv_mean)}" if r.cv_mean is not None else "-"
        table.add_row(r.signature, gate, metric, r.deployed or "-", examples or "-")
    console.print(table)
    if result.bad_request:
        bad = result.bad_request
        console.print(
            f"A request to {bad['target']} without two of its genes got {bad['status']}: {bad['message']}",
            highlight=False,
        )
    metrics = result.endpoint_metrics
    console.print(
        f"Endpoint: {metrics.get('LoadedModelCount')} models loaded, {metrics.get('ModelCacheMiss')} cold "
        f"loads (median {metrics.get('ModelLoadingTimeMedianMs') or 0:.0f} ms), "
        f"{metrics.get('ModelCacheHit')} cache hits.",
        highlight=False,
    )
    console.print(
        f"Reports (ROC / Kaplan-Meier PNGs): {workdir}/signatures/<signature>/evaluation/report.png; "
        f"run summary: {workdir}/summary.json; deployed artifacts: {workdir}/mme-prefix/",
        highlight=False,
    )
