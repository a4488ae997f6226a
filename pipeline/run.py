"""``genesig run-local``: preprocess → train → evaluate → gate → register → deploy for each selected signature.

Outputs under the work folder: ``signatures/<name>/{prepared,model,evaluation}``, the local
registry (``registry/``), the local MME prefix (``mme-prefix/``) and ``summary.json``. A
re-run on the same data and settings trains the same weights and registers nothing new.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from genesig.errors import DataError, GenesigError
from genesig.pipeline.cohort import Cohort, columns_of, read_cohort
from genesig.pipeline.deploy import deploy_package
from genesig.pipeline.registry import LocalRegistry
from genesig.pipeline.report import RUN_PLOT_FILE, write_null_plot, write_report
from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings
from genesig.pipeline.signatures import (
    GeneSignature,
    MatchedSignature,
    check_unique,
    default_signatures,
    match,
    read_signatures,
    select,
)
from genesig.pipeline.significance import RandomSignatureNull, attach_p_values, gate_run, significance_record
from genesig.pipeline.steps import (
    EVALUATION_FILE,
    GATE_FILE,
    PROVISIONAL_VERSION,
    cross_validate,
    evaluate,
    preprocess,
    save_prepared,
    train_model,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """One run: the data and signatures, the typed settings (defaults in ``genesig.pipeline.settings``), and how."""

    data: Path
    workdir: Path = Path("genesig-work")
    signatures_file: Path | None = None
    # Names of the signatures to run (as defined, or their artifact names); None runs every signature.
    signatures: tuple[str, ...] | None = None
    cohort: CohortSettings = CohortSettings()
    train: TrainSettings = TrainSettings()
    gate: GateSettings = GateSettings()
    approve: bool = False
    # Signatures trained at the same time, each in its own process (0: one per CPU).
    jobs: int = 1


@dataclass
class SignatureResult:
    signature: str
    name: str
    genes: list[str]
    missing_genes: list[str]
    status: str
    reason: str = ""
    metric: str = ""
    n_train: int = 0
    n_test: int = 0
    cv_mean: float | None = None
    cv_interval: list[float] | None = None
    # The pooled out-of-fold metric: what the random-signature null compares.
    cv_pooled: float | None = None
    test_value: float | None = None
    passed: bool = False
    # The gate in parts: the metric against the threshold (decided when evaluated), then the run's false-discovery
    # control (p against the random-signature null of its size, q over the whole run; see significance.py).
    threshold_passed: bool = False
    threshold_reason: str = ""
    coverage: float | None = None
    l2: float | None = None
    p_value: float | None = None
    q_value: float | None = None
    null_size: int | None = None
    null_replicates: int | None = None
    version: int | None = None
    approval_status: str | None = None
    deployed: str | None = None
    report: str | None = None
    # The provisional artifact (version 1) this run trained; the registry renumbers what it registers.
    artifact: str | None = None
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """What became of it, in the words of the report: passed, below threshold, not significant (it cleared the
        threshold but not the run's false-discovery control), skipped or error."""
        if self.status == "done":
            if self.passed:
                return "passed"
            return "not significant" if self.threshold_passed else "below threshold"
        return "skipped" if self.status == "skipped" else "error"

    @classmethod
    def of(cls, matched: MatchedSignature, status: str, reason: str = "") -> SignatureResult:
        return cls(
            signature=matched.signature.name,
            name=matched.artifact_name,
            genes=matched.present,
            missing_genes=matched.missing,
            status=status,
            reason=reason,
            coverage=round(matched.coverage, 4),
        )


@dataclass
class RunSummary:
    data: str
    workdir: str
    threshold: float
    gate_on: str
    fdr: float
    null_replicates: int
    results: list[SignatureResult]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for row, result in zip(doc["results"], self.results, strict=True):
            row["outcome"] = result.outcome
        return doc

    def write(self, folder: Path) -> None:
        """``summary.json`` (everything) and ``summary.csv`` (the full table, a row per signature) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        with open(folder / "summary.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(SUMMARY_COLUMNS)
            for r in self.results:
                low, high = r.cv_interval or (None, None)
                writer.writerow(
                    [
                        r.signature,
                        r.name,
                        r.outcome,
                        r.reason,
                        len(r.genes),
                        len(r.missing_genes),
                        r.coverage,
                        r.metric,
                        r.n_train,
                        r.n_test,
                        r.cv_mean,
                        low,
                        high,
                        r.cv_pooled,
                        r.test_value,
                        r.l2,
                        r.p_value,
                        r.q_value,
                        r.version,
                        r.approval_status,
                        r.deployed,
                        r.report,
                    ]  # fmt: skip
                )


SUMMARY_COLUMNS = (
    "signature",
    "artifact_name",
    "outcome",
    "reason",
    "genes_in_data",
    "genes_missing",
    "coverage",
    "metric",
    "n_train",
    "n_test",
    "cv_mean",
    "cv_lower",
    "cv_upper",
    "cv_pooled",
    "test",
    "l2",
    "p_value",
    "q_value",
    "version",
    "approval_status",
    "deployed_as",
    "report",
)


def load_signatures(path: Path | None) -> list[GeneSignature]:
    signatures = read_signatures(path) if path else default_signatures()
    check_unique(signatures, path.name if path else "built-in signatures")
    return signatures


def evaluate_signature(cohort: Cohort, matched: MatchedSignature, folder: Path, options: RunOptions) -> SignatureResult:
    """One signature: preprocess → cross-validate → fit → evaluate and gate, into ``folder`` (``prepared/``,
    ``model/`` with the artifact as provisional version 1, ``evaluation/``). No registry: ``run-local`` registers
    afterwards, and the SageMaker signature-set run calls this for each signature of its shard."""
    started = time.perf_counter()
    result = SignatureResult.of(matched, "skipped")
    if matched.skip_reason:
        result.reason = matched.skip_reason
        return result
    try:
        prepared = preprocess(cohort, matched, target=options.cohort.target, settings=options.train)
        save_prepared(prepared, folder / "prepared")
        result.n_train, result.n_test = len(prepared.train.ids), len(prepared.test.ids)
        cv = cross_validate(prepared, options.train)
        model_dir = folder / "model"
        shutil.rmtree(model_dir, ignore_errors=True)  # an earlier run's provisional artifact
        artifact = train_model(prepared, options.train, PROVISIONAL_VERSION, model_dir, cv=cv)
        evaluation = evaluate(
            prepared, artifact, folder / "evaluation", options.gate, run_decides=options.gate.null_replicates > 0
        )
        result.metric = evaluation["metric"]
        result.cv_mean = evaluation["cross_validation"]["mean"]
        result.cv_interval = evaluation["cross_validation"]["interval"]
        result.cv_pooled = evaluation["cross_validation"]["pooled"]
        result.test_value = evaluation["test"]["value"]
        result.l2 = evaluation["model"]["l2"]
        result.report = str(folder / "evaluation" / evaluation["report"])
        result.artifact = str(artifact)
        result.passed = result.threshold_passed = bool(evaluation["gate"]["passed"])
        result.reason = result.threshold_reason = str(evaluation["gate"]["reason"])
        result.status = "done"
    except GenesigError as exc:
        result.status = "failed"
        result.reason = exc.message
        logger.warning("signature %s failed: %s", matched.signature.name, exc.message)
    result.seconds = time.perf_counter() - started
    return result


def record_verdict(result: SignatureResult) -> None:
    """The run's verdict into the signature's evaluation.json (what is registered with the model): the gate's final
    decision and reason, and the significance figures."""
    assert result.artifact is not None
    path = Path(result.artifact).parent.parent / "evaluation" / EVALUATION_FILE
    evaluation = json.loads(path.read_text())
    evaluation["gate"] = {**evaluation["gate"], "passed": result.passed, "reason": result.reason, "final": True}
    evaluation["significance"] = significance_record(result)
    path.write_text(json.dumps(evaluation, indent=2) + "\n")
    gate_path = path.parent / GATE_FILE
    if gate_path.is_file():
        verdict = json.loads(gate_path.read_text())
        verdict.update(passed=result.passed, reason=result.reason, significance=evaluation["significance"])
        gate_path.write_text(json.dumps(verdict, indent=2) + "\n")
    if result.p_value is not None:
        # Drawn at evaluation, before the run's q-values existed: drawn again with them and the final verdict.
        table = pd.read_csv(path.parent / evaluation["predictions"], dtype={0: str})
        write_report(evaluation, table, path.parent)


def record_verdicts(results: list[SignatureResult], jobs: int) -> None:
    """:func:`record_verdict` for each result, in ``jobs`` processes when there are many (redrawing thousands of
    reports with their q-values is most of the cost of the verdicts)."""
    if jobs <= 1 or len(results) < 2 * jobs:
        for result in results:
            record_verdict(result)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(record_verdict, results, chunksize=max(1, len(results) // (8 * jobs))))


def register_and_deploy(options: RunOptions, registry: LocalRegistry, result: SignatureResult) -> None:
    """A model that passed the gate into the local registry (the next version, unless unchanged), and into the MME
    prefix when its package is Approved."""
    assert result.artifact is not None
    evaluation = json.loads((Path(result.artifact).parent.parent / "evaluation" / EVALUATION_FILE).read_text())
    package, created = registry.register(
        result.name,
        Path(result.artifact),
        evaluation,
        approve=options.approve,
        description=f"signature {result.signature}; {result.reason}",
    )
    if not created:
        result.reason += f"; unchanged since version {package.version}, not registered again"
    result.version = package.version
    result.approval_status = package.approval_status
    if package.approval_status == "Approved":
        result.deployed = deploy_package(package, options.workdir / "mme-prefix").name


def _worker_init(options: RunOptions, cohort: Cohort, log_level: int) -> None:
    """One BLAS/torch thread per worker: the workers are the parallelism, more threads only contend."""
    from threadpoolctl import threadpool_limits

    from genesig.logs import configure_logging

    configure_logging(log_level)
    threadpool_limits(1)
    if options.train.model == "mlp":
        import torch

        torch.set_num_threads(1)
    _WORKER_STATE.update(options=options, cohort=cohort)


_WORKER_STATE: dict[str, Any] = {}
WORKER_ATTEMPTS = 3


def _worker_run(matched: MatchedSignature) -> SignatureResult:
    state = _WORKER_STATE
    options: RunOptions = state["options"]
    return evaluate_signature(state["cohort"], matched, signature_folder(options, matched), options)


def signature_folder(options: RunOptions, matched: MatchedSignature) -> Path:
    return options.workdir / "signatures" / matched.artifact_name


def _lost(matched: MatchedSignature, attempts: int) -> SignatureResult:
    """A signature whose worker process kept dying (killed, out of memory) fails alone; the run goes on."""
    reason = f"its worker process died {attempts} times (killed, or out of memory?)"
    logger.warning("signature %s failed: %s", matched.signature.name, reason)
    return SignatureResult.of(matched, "failed", reason)


def _run_parallel(
    options: RunOptions,
    cohort: Cohort,
    matched: list[MatchedSignature],
    jobs: int,
    on_result: Callable[[SignatureResult], None] | None,
    worker: Callable[[MatchedSignature], SignatureResult] = _worker_run,
) -> list[SignatureResult]:
    """Signatures in worker processes, at most ``jobs`` submitted at a time.

    When a worker dies the whole pool is broken and every signature in it reports BrokenProcessPool, so
    those become suspects: each runs again alone, and only one that keeps killing its worker
    (``WORKER_ATTEMPTS`` times) is given up. Signatures not yet submitted are never blamed.
    """
    results: list[SignatureResult | None] = [None] * len(matched)
    attempts = [0] * len(matched)
    queue = deque(range(len(matched)))
    suspects: deque[int] = deque()
    # forkserver: workers never inherit a forked copy of threads (BLAS, torch) from this process.
    context = multiprocessing.get_context("forkserver")

    def finish(index: int, result: SignatureResult) -> None:
        results[index] = result
        if on_result:
            on_result(result)

    while queue or suspects:
        alone = bool(suspects)
        source, width = (suspects, 1) if alone else (queue, jobs)
        with ProcessPoolExecutor(
            width,
            mp_context=context,
            initializer=_worker_init,
            initargs=(options, cohort, logging.getLogger().getEffectiveLevel()),
        ) as pool:
            outstanding: dict[Future[SignatureResult], int] = {}
            broken = False
            try:
                while (source or outstanding) and not broken:
                    while source and len(outstanding) < width:
                        index = source.popleft()
                        outstanding[pool.submit(worker, matched[index])] = index
                    done, _ = wait(outstanding, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = outstanding.pop(future)
                        try:
                            finish(index, future.result())
                        except BrokenProcessPool:
                            broken = True
                            if not alone:
                                suspects.append(index)
                                continue
                            attempts[index] += 1
                            if attempts[index] >= WORKER_ATTEMPTS:
                                finish(index, _lost(matched[index], attempts[index]))
                            else:
                                suspects.appendleft(index)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            suspects.extend(outstanding.values())  # in the broken pool too, not yet reported
        if broken:
            logger.warning("a worker process died; running %d signature(s) again, one at a time", len(suspects))
    return [r for r in results if r is not None]


def evaluate_all(
    options: RunOptions,
    cohort: Cohort,
    matched: list[MatchedSignature],
    on_result: Callable[[SignatureResult], None] | None = None,
) -> list[SignatureResult]:
    """:func:`evaluate_signature` for each signature, ``options.jobs`` at a time, into ``options.workdir``; results in
    input order. One signature's failure (even a dying worker) is its own and never stops the others."""
    if options.jobs < 0:
        raise DataError(f"--jobs must be 0 (one per CPU) or more, not {options.jobs}")
    jobs = min(options.jobs or os.cpu_count() or 1, max(len(matched), 1))
    if jobs > 1:
        return _run_parallel(options, cohort, matched, jobs, on_result)
    results = []
    for one in matched:
        results.append(evaluate_signature(cohort, one, signature_folder(options, one), options))
        if on_result:
            on_result(results[-1])
    return results


def run_local(
    options: RunOptions,
    on_result: Callable[[SignatureResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunSummary:
    """Run every selected signature; one signature's failure is recorded and never stops the others."""
    if options.jobs < 0:
        raise DataError(f"--jobs must be 0 (one per CPU) or more, not {options.jobs}")
    cohort = read_cohort(options.data, columns_of(options.cohort), min_events=options.cohort.min_events)
    signatures = select(load_signatures(options.signatures_file), options.signatures)
    registry = LocalRegistry(options.workdir / "registry")
    available = cohort.candidate_genes()
    cohort_settings = options.cohort
    matched = [match(s, available, cohort_settings.min_genes, cohort_settings.min_coverage) for s in signatures]
    if on_start:
        on_start(len(signatures))
    results = evaluate_all(options, cohort, matched, on_result)
    if options.gate.null_replicates:
        null = RandomSignatureNull(
            cohort, options.train, options.cohort.target, options.gate.null_replicates, options.workdir / "null"
        )
        attach_p_values(results, null, jobs=options.jobs or os.cpu_count() or 1)
    gate_run(results, options.gate)
    record_verdicts([r for r in results if r.status == "done"], options.jobs or os.cpu_count() or 1)
    if options.gate.null_replicates:
        write_null_plot(results, null.distribution, options.workdir / RUN_PLOT_FILE)
    for result in results:
        if result.passed:
            try:
                register_and_deploy(options, registry, result)
            except GenesigError as exc:
                result.status, result.reason = "failed", f"registration failed: {exc.message}"
                logger.warning("signature %s: %s", result.signature, result.reason)
    summary = RunSummary(
        data=str(options.data),
        workdir=str(options.workdir),
        threshold=options.gate.threshold,
        gate_on=options.gate.gate_on,
        fdr=options.gate.fdr,
        null_replicates=options.gate.null_replicates,
        results=results,
    )
    summary.write(options.workdir)
    return summary
