"""Terminal output of the command line (tables, progress); the logic it shows lives elsewhere."""

from __future__ import annotations

import shutil
from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from genesig.pipeline.registry import ModelPackage
    from genesig.pipeline.results import RunReport, SignatureResult
    from genesig.pipeline.settings import GateSettings

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
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        return self

    def start(self, total: int) -> None:
        if self.enabled and total >= PROGRESS_FROM:
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


OUTCOME_STYLES = {
    "passed": "green",
    "not significant": "yellow",
    "not above random": "yellow",
    "below threshold": "yellow",
    "skipped": "dim",
    "error": "red",
}
# The option that changes each outcome that holds a signature back.
REMEDIES = {
    "below threshold": "--threshold (or --gate-on)",
    "not significant": "--fdr, or more patients",
    "not above random": "--competitive report",
    "skipped": "--min-coverage / --min-genes, or the data's gene names",
    "error": "the reason given",
}
# Notes (why a signature was skipped or failed) printed before the rest are counted.
MAX_NOTES = 8
# Signatures shown, by metric, when a run is too large for its whole table.
TOP_ROWS = 15
# What the run table's columns other than the name take (no vertical rules): the name gets the rest of the line.
OTHER_COLUMNS_WIDTH = 124


def shorten(name: str, width: int = 60) -> str:
    """``name`` in at most ``width`` characters, cut in the middle: gene-set names differ at both ends (the words, and
    an identifier such as GO_0006103 at the end)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def _package(r: SignatureResult) -> str:
    if not r.version:
        return "-"
    state = "deployed" if r.deployed else (r.approval_status or "").replace("PendingManualApproval", "pending").lower()
    return f"v{r.version} {state}"


def _versus(r: SignatureResult) -> str:
    """The competitive test in a cell: its q (its p when it is not gated on is in summary.csv), n/a, or - when off."""
    if r.competitive == "not applicable":
        return "n/a"
    return _fmt(r.competitive_q)


def _run_table(rows: list[SignatureResult], title: str) -> Table:
    width = max(20, console.width - OTHER_COLUMNS_WIDTH)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = (
        "signature", "genes", "train/test", "metric", "CV mean [folds 2.5-97.5%]", "test", "q", "q vs random", "outcome"
    )  # fmt: skip
    for column in (*columns, "package"):
        table.add_column(escape(column), no_wrap=True)  # "[...]" is rich markup otherwise, and vanishes
    for r in rows:
        genes = f"{len(r.genes)}" + (f" (-{len(r.missing_genes)})" if r.missing_genes else "")
        outcome = f"[{OUTCOME_STYLES[r.outcome]}]{r.outcome}[/]"
        name = shorten(r.signature, width)
        if not r.evaluated:
            table.add_row(name, genes, "-", "-", "-", "-", "-", "-", outcome, "-")
            continue
        interval = f"{_fmt(r.cv_mean)} [{_fmt(r.cv_lower)}, {_fmt(r.cv_upper)}]" if r.cv_lower is not None else "-"
        table.add_row(
            name,
            genes,
            f"{r.n_train}/{r.n_test}",
            r.metric,
            interval,
            _fmt(r.test),
            _fmt(r.q_value),
            _versus(r),
            outcome,
            _package(r),
        )
    return table


def gate_text(gate: GateSettings) -> str:
    """The gate a run applies, in one line: every part that decides."""
    text = f"{gate.gate_on} >= {gate.threshold}"
    if not gate.permutations:
        return text + " alone (--permutations 0: no significance test)"
    text += f" and q <= {gate.fdr} (outcome permuted)"
    if gate.competitive == "gate":
        text += f" and q vs random gene sets <= {gate.fdr}"
    return text


def render_summary(summary: RunReport, *, quiet: bool = False) -> None:
    """The run's result on the terminal: the whole table for a small run; for a large one the counts by outcome and
    the top signatures by metric. The full table is always in the run's summary.csv. ``quiet``: the counts only."""
    results = summary.results
    counts = Counter(r.outcome for r in results)
    workdir = summary.context["workdir"]
    where = f"{workdir}/summary.csv"
    if not quiet:
        title = f"genesig run-local: gate {gate_text(summary.gate)}"
        if len(results) <= MAX_ROWS:
            shown = results
            console.print(_run_table(results, title))
        else:
            done = sorted((r for r in results if r.cv_mean is not None), key=lambda r: -(r.cv_mean or 0.0))
            shown = done[:TOP_ROWS]
            console.print(_run_table(shown, f"{title}: the top {TOP_ROWS} of {len(results)} by CV mean"))
        if not counts["passed"] and results:
            # Nothing passed: the reason of each signature in the table, with the option that changes it, so that no
            # file has to be opened.
            console.print("Nothing passed. Why, signature by signature:", highlight=False, markup=False)
            shown = shown or results[:TOP_ROWS]  # none evaluated (all skipped): the first ones, with their reasons
            for r in shown:
                remedy = REMEDIES.get(r.outcome, "-")
                line = f"  {shorten(r.signature, 50)}: {r.outcome}: {r.reason} (change with {remedy})"
                console.print(line, highlight=False, markup=False)
            if len(results) > len(shown):
                console.print(f"  … and {len(results) - len(shown)} more in {where}", highlight=False, markup=False)
        else:
            notes = [r for r in results if r.outcome in ("skipped", "error")]
            for r in notes[:MAX_NOTES]:
                console.print(f"  {r.outcome}: {r.signature}: {r.reason}", highlight=False, markup=False)
            if len(notes) > MAX_NOTES:
                console.print(
                    f"  … and {len(notes) - MAX_NOTES} more skipped or in error (reasons in {where})",
                    highlight=False,
                    markup=False,
                )
    outcomes = ", ".join(f"{counts[o]} {o}" for o in OUTCOME_STYLES if counts[o])
    many = f"{len(results)} signature" + ("" if len(results) == 1 else "s")
    console.print(
        f"{many}: {outcomes}{held_back(results)}. Every signature with its reason: {where}; "
        f"reports and models: {workdir}/signatures/",
        highlight=False,
        markup=False,
        soft_wrap=True,  # one line, however long: --quiet prints only this one
    )


def held_back(results: list[SignatureResult]) -> str:
    """What held most signatures back, with the option that changes it ("" when every signature passed)."""
    held = Counter(r.outcome for r in results if r.outcome != "passed")
    if not held:
        return ""
    outcome, count = held.most_common(1)[0]
    return f" (most held back: {count} {outcome}; change with {REMEDIES.get(outcome, '-')})"


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
        gate = f"[{OUTCOME_STYLES[r.outcome]}]{r.outcome}[/]"  # in the run table's words
        metric = f"{r.metric} {_fmt(r.cv_mean)}" if r.cv_mean is not None else "-"
        table.add_row(r.signature, gate, metric, r.deployed or "-", examples or "-")
    console.print(table)
    if result.bad_request:
        bad = result.bad_request
        left_out = bad.get("dropped", [])
        console.print(
            f"A request to {bad['target']} without {len(left_out)} of its genes ({', '.join(left_out)}) got "
            f"{bad['status']}: {bad['message']}",
            highlight=False,
            markup=False,
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
            d.group, str(d.version or "-"), f"[{colour}]{d.action}[/]" if colour else d.action, d.reason or d.name
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
        f"min a training job; {a['seconds_per_signature']} s to train one signature; the gate's self-contained test: "
        f"{estimate['permutations_per_signature']} permutation(s) per signature in the set run, {a['permutations']} "
        f"for one signature alone, {a['seconds_per_permutation']} s each; the competitive test: "
        f"{estimate['random_sets_per_size']} random sets at each of {estimate['competitive_sizes']} sizes; "
        f"{a['pass_rate']:.0%} pass; "
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
