"""``genesig run-local``: preprocess → train → evaluate → gate → register → deploy for each selected signature.

Outputs under the work folder: ``signatures/<name>/{prepared,model,evaluation}``, the local
registry (``registry/``), the local MME prefix (``mme-prefix/``) and ``summary.json``. A
re-run on the same data and settings trains the same weights and registers nothing new.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from genesig.errors import DataError, GenesigError
from genesig.logs import configure_logging
from genesig.pipeline.cohort import Cohort, columns_of, read_cohort
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.registry import LocalRegistry, register_and_deploy
from genesig.pipeline.report import RUN_PLOT_FILE, write_null_plot, write_report
from genesig.pipeline.results import Outcome, RunNulls, RunReport, SignatureResult, final_evaluation, judge
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
from genesig.pipeline.significance import (
    draw_competitive,
    permutations_per_signature,
)
from genesig.pipeline.steps import (
    GATE_FILE,
    PROVISIONAL_VERSION,
    cross_validate,
    evaluate,
    preprocess,
    save_prepared,
    train_model,
)

logger = logging.getLogger(__name__)
# run-local's report in the work folder: summary.json and summary.csv (the set run's is report.json and report.csv).
SUMMARY_STEM = "summary"


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


def load_signatures(path: Path | None) -> list[GeneSignature]:
    signatures = read_signatures(path) if path else default_signatures()
    check_unique(signatures, path.name if path else "built-in signatures")
    return signatures


def evaluate_signature(
    cohort: Cohort,
    matched: MatchedSignature,
    folder: Path,
    options: RunOptions,
    permutations: int = 0,
    *,
    draw: bool = False,
) -> SignatureResult:
    """One signature: preprocess → cross-validate (with its ``permutations``: its share of the run's self-contained
    null, in the same batch) → fit → evaluate against the threshold, into ``folder`` (``prepared/``, ``model/`` with
    the artifact as provisional version 1, ``evaluation/``). The run decides the verdict afterwards (``conclude``) and
    registers; the SageMaker signature-set run calls this for each signature of its shard (``draw``: the report is
    drawn now, as the set run's instances do; run-local draws it once the verdict is known)."""
    started = time.perf_counter()
    if matched.skip_reason:
        return SignatureResult.of(matched, Outcome.SKIPPED, matched.skip_reason)
    result = SignatureResult.of(matched, Outcome.ERROR)
    try:
        prepared = preprocess(cohort, matched, target=options.cohort.target, settings=options.train)
        save_prepared(prepared, folder / "prepared")
        result.n_train, result.n_test = len(prepared.train.ids), len(prepared.test.ids)
        cv = cross_validate(prepared, options.train, permutations=permutations)
        result.permuted = cv.permuted
        model_dir = folder / "model"
        shutil.rmtree(model_dir, ignore_errors=True)  # an earlier run's provisional artifact
        artifact = train_model(prepared, options.train, PROVISIONAL_VERSION, model_dir, cv=cv)
        evaluation = evaluate(prepared, artifact, folder / "evaluation", options.gate, run_decides=True, draw=draw)
        cross_validation = evaluation.cross_validation
        result.metric = evaluation.metric
        result.cv_mean, (result.cv_lower, result.cv_upper) = cross_validation.mean, cross_validation.interval
        result.cv_pooled = cross_validation.pooled
        result.test = evaluation.test.value
        result.l2 = evaluation.model.l2
        result.report = str(folder / "evaluation" / evaluation.report)
        result.artifact = str(artifact)
        result.threshold_passed = evaluation.decided.passed
        result.reason = result.threshold_reason = evaluation.decided.reason
        result.outcome = Outcome.PASSED if result.threshold_passed else Outcome.BELOW_THRESHOLD
    except GenesigError as exc:
        result = result.failed(exc.message)
        logger.warning("signature %s failed: %s", matched.signature.name, exc.message)
    result.seconds = time.perf_counter() - started
    return result


def record_verdict(result: SignatureResult, nulls: RunNulls) -> None:
    """The run's verdict into the signature's evaluation.json (what is registered with the model) and its gate.json;
    the report drawn again with them (at evaluation the run's verdict did not exist yet)."""
    folder = Path(result.artifact).parent.parent / "evaluation"
    evaluation = final_evaluation(Evaluation.read(folder), result, nulls)
    evaluation.write(folder)
    gate_path = folder / GATE_FILE
    if gate_path.is_file():
        decided = evaluation.decided
        verdict = json.loads(gate_path.read_text())
        verdict.update(
            passed=decided.passed, outcome=decided.outcome, reason=decided.reason, final=decided.final,
            significance=evaluation.significance,
        )  # fmt: skip
        gate_path.write_text(json.dumps(verdict, indent=2) + "\n")
    table = pd.read_csv(folder / evaluation.predictions, dtype={0: str})
    write_report(evaluation, table, folder)


def _record_verdict(pair: tuple[SignatureResult, RunNulls]) -> None:
    record_verdict(*pair)


def record_verdicts(results: list[SignatureResult], nulls: RunNulls, jobs: int) -> None:
    """:func:`record_verdict` for each result, in ``jobs`` processes when there are many (redrawing thousands of
    reports with their q-values is most of the cost of the verdicts)."""
    if jobs <= 1 or len(results) < 2 * jobs:
        for result in results:
            record_verdict(result, nulls)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver")) as pool:
        pairs = [(r, nulls) for r in results]
        list(pool.map(_record_verdict, pairs, chunksize=max(1, len(results) // (8 * jobs))))


def _worker_init(
    options: RunOptions, cohort: Cohort, log_level: int, permutations: int = 0, draw: bool = False
) -> None:
    """One BLAS/torch thread per worker: the workers are the parallelism, more threads only contend."""
    from threadpoolctl import threadpool_limits

    configure_logging(log_level)
    threadpool_limits(1)
    if options.train.model == "mlp":
        import torch

        torch.set_num_threads(1)
    _WORKER_STATE.update(options=options, cohort=cohort, permutations=permutations, draw=draw)


_WORKER_STATE: dict[str, Any] = {}
WORKER_ATTEMPTS = 3


def _worker_run(matched: MatchedSignature) -> SignatureResult:
    state = _WORKER_STATE
    options: RunOptions = state["options"]
    return evaluate_signature(
        state["cohort"], matched, signature_folder(options, matched), options, state.get("permutations", 0),
        draw=state.get("draw", False),
    )  # fmt: skip


def signature_folder(options: RunOptions, matched: MatchedSignature) -> Path:
    return options.workdir / "signatures" / matched.artifact_name


def _lost(matched: MatchedSignature, attempts: int) -> SignatureResult:
    """A signature whose worker process kept dying (killed, out of memory) fails alone; the run goes on."""
    reason = f"its worker process died {attempts} times (killed, or out of memory?)"
    logger.warning("signature %s failed: %s", matched.signature.name, reason)
    return SignatureResult.of(matched, Outcome.ERROR, reason)


def _run_parallel(
    options: RunOptions,
    cohort: Cohort,
    matched: list[MatchedSignature],
    jobs: int,
    on_result: Callable[[SignatureResult], None] | None,
    worker: Callable[[MatchedSignature], SignatureResult] = _worker_run,
    permutations: int = 0,
    draw: bool = False,
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
            initargs=(options, cohort, logging.getLogger().getEffectiveLevel(), permutations, draw),
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
    permutations: int = 0,
    *,
    draw: bool = False,
) -> list[SignatureResult]:
    """:func:`evaluate_signature` for each signature (each with ``permutations`` of its own for the run's
    self-contained null; ``draw``: its report drawn now), ``options.jobs`` at a time, into ``options.workdir``;
    results in input order. One signature's failure (even a dying worker) is its own and never stops the others."""
    if options.jobs < 0:
        raise DataError(f"--jobs must be 0 (one per CPU) or more, not {options.jobs}")
    jobs = min(options.jobs or os.cpu_count() or 1, max(len(matched), 1))
    if jobs > 1:
        return _run_parallel(options, cohort, matched, jobs, on_result, permutations=permutations, draw=draw)
    results = []
    for one in matched:
        results.append(
            evaluate_signature(cohort, one, signature_folder(options, one), options, permutations, draw=draw)
        )
        if on_result:
            on_result(results[-1])
    return results


def run_local(
    options: RunOptions,
    on_result: Callable[[SignatureResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunReport:
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
    trainable = sum(not m.skip_reason for m in matched)
    per_signature = permutations_per_signature(trainable, options.gate.permutations)
    results = evaluate_all(options, cohort, matched, on_result, permutations=per_signature)
    jobs = options.jobs or os.cpu_count() or 1
    competitive, genes = None, 0
    if options.gate.competitive != "off":
        trainable_sizes = [len(m.present) for m in matched if not m.skip_reason]
        competitive, genes = draw_competitive(
            cohort, options.train, options.cohort.target, results, trainable_sizes, options.gate.random_sets,
            options.workdir / "null", jobs,
        )  # fmt: skip
    results, nulls = judge(results, options.gate, competitive, genes)
    record_verdicts([r for r in results if r.evaluated], nulls, jobs)
    plot = options.workdir / RUN_PLOT_FILE
    if write_null_plot(results, nulls, competitive or {}, plot) is None:
        plot.unlink(missing_ok=True)  # an earlier run's plot must not sit beside this run's summary
    approval = "Approved" if options.approve else "PendingManualApproval"
    for i, result in enumerate(results):
        if result.passed:
            try:
                evaluation = Evaluation.read(Path(result.artifact).parent.parent / "evaluation")
            except GenesigError as exc:
                results[i] = result.failed(f"registration failed: {exc.message}")
                continue
            results[i] = register_and_deploy(
                registry, result, Path(result.artifact), evaluation, approval_status=approval,
                prefix=str(options.workdir / "mme-prefix"),
            )  # fmt: skip
    report = RunReport(
        options.gate, results, nulls, context={"data": str(options.data), "workdir": str(options.workdir)}
    )
    report.write(options.workdir, SUMMARY_STEM)
    return report
