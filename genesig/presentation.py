"""Terminal output of the command line (tables, progress); the logic it shows lives elsewhere."""

from __future__ import annotations

import shutil
from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from genesig.pipeline.registry import ModelPackage
    from genesig.pipeline.run import RunSummary, SignatureResult

# rich assumes 80 columns when not writing to a terminal; the run table needs more.
console = Console(width=shutil.get_terminal_size((150, 24)).columns)
# Below this many signatures a progress bar is noise.
PROGRESS_FROM = 8
# Rows shown in a table before the rest is summarised (the full list is in the command's output file).
MAX_ROWS = 40
STATUS_COLOURS = {
    "Succeeded": "green",
    "BelowThreshold": "yellow",
    "Failed": "red",
    "NotStarted": "red",
    "Stopped": "red",
}


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
    # The heading on its own line: a table title wraps to the (narrow) table's width.
    console.print(f"{doc.get('model')} v{doc.get('version')}: {output}", markup=False, highlight=False)
    table = Table()
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


class ExecutionsView:
    """A live table of pipeline executions: counts by status, then the executions not yet succeeded first."""

    def __init__(self, title: str, live: bool = True) -> None:
        self.title = title
        self.live = live and console.is_terminal
        self._live: Live | None = None
        self._last: list[Any] = []

    def __enter__(self) -> ExecutionsView:
        if self.live:
            self._live = Live(console=console, refresh_per_second=2)
            self._live.start()
        return self

    def update(self, states: list[Any]) -> None:
        self._last = list(states)
        if self._live is not None:
            self._live.update(self._table(states))

    def __exit__(self, *_exc: object) -> None:
        if self._live is not None:
            self._live.stop()
        else:
            console.print(self._table(self._last))

    def _table(self, states: list[Any]) -> Table:
        counts = Counter(s.status for s in states)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        table = Table(title=f"{self.title}: {summary or 'none'}", title_justify="left")
        for column in ("signature", "status", "failed step", "reason", "execution"):
            table.add_column(column, overflow="fold", max_width=60 if column == "reason" else None)
        order = {"Failed": 0, "NotStarted": 1, "Stopped": 2, "Executing": 3, "Pending": 4, "BelowThreshold": 5}
        for state in sorted(states, key=lambda s: order.get(s.status, 6))[:MAX_ROWS]:
            colour = STATUS_COLOURS.get(state.status, "")
            table.add_row(
                shorten(state.signature),
                f"[{colour}]{state.status}[/]" if colour else state.status,
                state.failed_step or "",
                state.reason or "",
                (state.arn or "").rsplit("/", 1)[-1],
            )
        if len(states) > MAX_ROWS:
            table.caption = f"{len(states) - MAX_ROWS} more not shown"
        return table


def render_deployments(deployments: list[Any]) -> None:
    counts = Counter(d.action for d in deployments)
    table = Table(
        title="sync: " + (", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "no Approved packages"),
        title_justify="left",
    )
    for column in ("model package group", "version", "result", "object / reason"):
        table.add_column(column, overflow="fold")
    for d in sorted(deployments, key=lambda d: (d.action != "failed", d.group))[:MAX_ROWS]:
        colour = {"failed": "red", "deployed": "green"}.get(d.action, "")
        table.add_row(
            d.group, str(d.version or "-"), f"[{colour}]{d.action}[/]" if colour else d.action, d.reason or d.key
        )
    console.print(table)


def render_aws_packages(packages: list[dict[str, Any]]) -> None:
    table = Table(title="SageMaker model packages", title_justify="left")
    for column in ("group", "version", "status", "created"):
        table.add_column(column)
    for p in packages:
        table.add_row(
            p["ModelPackageGroupName"],
            str(p.get("ModelPackageVersion")),
            p["ModelApprovalStatus"],
            str(p.get("CreationTime", "")),
        )
    console.print(table)


def shorten(name: str, width: int = 60) -> str:
    """Long names (GO terms) cut with an ellipsis, so the other columns keep their width."""
    return name if len(name) <= width else name[: width - 1] + "…"


def render_plan(estimate: dict[str, Any]) -> None:
    table = Table(
        title=f"{estimate['signatures']} signatures: the SageMaker work, before you pay", title_justify="left"
    )
    for column in ("design", "SageMaker jobs", "instances", "instance-minutes", "wall time", "cost (USD)"):
        table.add_column(column, justify="left" if column == "design" else "right")
    for key in ("signature_set", "per_signature"):
        e = estimate[key]
        label = f"{e['design']} ({estimate['shards']} shards)" if key == "signature_set" else e["design"]
        table.add_row(
            label,
            f"{e['jobs']:,}",
            f"{e['instances']:,}",
            f"{e['instance_minutes']:,.0f}",
            _duration(e["wall_minutes"]),
            f"{e['cost_usd']:,.2f}",
        )
    console.print(table)
    a = estimate["assumptions"]
    console.print(
        f"Assumed: {a['processing_startup_minutes']} min to start a processing job, {a['training_startup_minutes']} "
        f"min a training job; {a['seconds_per_signature']} s to train one signature; {a['pass_rate']:.0%} pass; "
        f"${a['price_per_instance_hour']}/instance-hour; {a['max_parallel']} executions at once "
        "(each is an option of `genesig pipeline plan`).",
        highlight=False,
    )


def _duration(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def render_approvals(decisions: list[Any], dry_run: bool) -> None:
    counts = Counter(d.action for d in decisions)
    table = Table(
        title=("would approve: " if dry_run else "approval: ")
        + (", ".join(f"{n} {a}" for a, n in counts.items()) or "nothing selected"),
        title_justify="left",
    )
    for column in ("signature", "group", "version", "result"):
        table.add_column(column, overflow="fold")
    for d in sorted(decisions, key=lambda d: (d.action != "failed", d.signature))[:MAX_ROWS]:
        table.add_row(
            shorten(d.signature), d.group, str(d.version or "-"), d.action + (f": {d.reason}" if d.reason else "")
        )
    console.print(table)


def render_execution(record: Any) -> None:
    table = Table(title=f"{record.pipeline}: {record.status} in {record.seconds:.0f} s", title_justify="left")
    for column in ("step", "status", "seconds", "job", "reason"):
        table.add_column(column, overflow="fold")
    for step in record.steps:
        table.add_row(step.name, step.status, f"{step.seconds:.1f}", step.job, step.failure_reason or step.outcome)
    console.print(table)
    console.print(
        f"SageMaker jobs created: {record.jobs_created['processing']} processing, {record.jobs_created['training']} "
        f"training; {record.instances} instances in all",
        highlight=False,
    )
