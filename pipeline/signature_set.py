"""The signature-set run: one SageMaker execution trains, gates and registers a whole signature set.

Three jobs, whatever the number of signatures:

- **PrepareSignatureSet** (processing): the cohort and the signature set in; every signature matched against
  the cohort; the trainable ones dealt into S shards balanced by their gene counts, each with the number of outcome
  permutations every signature computes for the run's self-contained null, and the sizes the competitive test's
  random gene sets need dealt across the same shards (each drawn once); the cohort with every gene (random sets are
  drawn from all of them); the skipped ones (too few genes) recorded with their reasons.
- **TrainSignatures** (one training job with S instances; the shards channel ``ShardedByS3Key``, so each
  instance receives its own shard): each instance runs, for each signature of its shard, exactly what
  ``genesig run-local`` runs (preprocess, cross-validate with its permutations, fit, evaluate) and uploads the
  signature's artifact and evaluation to the run's results prefix itself, so the outcome does not depend on how
  SageMaker packs several instances' ``/opt/ml/model`` folders.
- **RegisterSignatures** (processing): the run's verdict (``genesig.pipeline.results.judge``, as run-local's:
  every permutation of the run pooled, q over every signature) and every signature's outcome into the run report
  (report.json, a property file, and report.csv); each passing signature registered as the next version of its own
  model package group (an unchanged model is not registered again; versions never race); with
  ``ModelApprovalStatus=Approved``, the registered models deployed into the MME prefix.

A gate miss is a result: the execution succeeds and the report lists every signature as passed / below
threshold / skipped / error, with the reason (run-local's words).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from genesig.errors import DataError, GenesigError
from genesig.pipeline.cohort import columns_of, read_cohort, single_file
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.registry import register_and_deploy
from genesig.pipeline.results import Outcome, RunNulls, SignatureResult, final_evaluation, judge
from genesig.pipeline.run import RunOptions, evaluate_all, load_signatures
from genesig.pipeline.sagemaker.names import names_for
from genesig.pipeline.settings import CohortSettings, GateSettings, sets_per_size
from genesig.pipeline.signatures import GeneSignature, MatchedSignature, match
from genesig.pipeline.significance import (
    RandomSignatureNull,
    SizeNull,
    competitive_applicable,
    competitive_sizes,
    null_size,
    numeric_genes,
    permutations_per_signature,
)

logger = logging.getLogger(__name__)

SHARD_FILE = "shard-{:05d}.json"
PLAN_FILE = "plan.json"
SKIPPED_FILE = "skipped.json"
COHORT_FILE = "cohort.csv"
# The run's report: report.json (the pipeline's property file) and report.csv, as run-local's summary.json/.csv.
REPORT_STEM = "report"
OUTCOMES = "outcomes"
NULLS = "nulls"  # each instance's competitive nulls (random gene sets), by size
SIGNATURES = "signatures"
MAX_SHARDS = 100
UPLOAD_WORKERS = 16
REGISTER_WORKERS = 8
T = TypeVar("T")


@dataclass(frozen=True)
class SetPlan:
    signatures: int
    trainable: int
    skipped: int
    shards: int
    genes: int
    patients: int
    per_shard: list[int] = field(default_factory=list)


def _signature_doc(matched: MatchedSignature) -> dict[str, Any]:
    s = matched.signature
    return {"name": s.name, "genes": list(s.genes), "source": s.source, "description": s.description}


def _least_loaded(items: list[T], genes: Callable[[T], int], shards: int) -> list[list[T]]:
    """``items`` (in the order given: largest first) into ``shards`` groups of about equal work, each to the least
    loaded group; an item's work is a fixed cost plus its genes. The same items always deal the same way."""
    groups: list[list[T]] = [[] for _ in range(shards)]
    loads = [(0, i) for i in range(shards)]
    for item in items:
        load, i = heapq.heappop(loads)
        groups[i].append(item)
        heapq.heappush(loads, (load + genes(item) + 8, i))
    return groups


def deal(matched: list[MatchedSignature], shards: int) -> list[list[MatchedSignature]]:
    """Signatures into ``shards`` groups of about equal work."""
    ordered = sorted(matched, key=lambda m: (-len(m.present), m.artifact_name))
    return _least_loaded(ordered, lambda m: len(m.present), shards)


def deal_competitive_sizes(matched: list[MatchedSignature], shards: int, genes: int) -> list[list[int]]:
    """The competitive null sizes the run's signatures need (where the test applies), into ``shards`` groups of
    about equal work (a random set costs about what a signature of its size does): each size is drawn by one
    instance, not by every instance whose signatures need it."""
    sizes = sorted(
        {null_size(len(m.present)) for m in matched if competitive_applicable(len(m.present), genes)}, reverse=True
    )
    return [sorted(g) for g in _least_loaded(sizes, lambda size: size, shards)]


def prepare_set(
    data: Path,
    signatures_file: Path | None,
    out_dir: Path,
    *,
    shards: int,
    settings: CohortSettings,
    gate: GateSettings | None = None,
) -> SetPlan:
    """PrepareSignatureSet: ``out_dir/{cohort/cohort.csv, shards/shard-*.json, skipped.json, plan.json}``."""
    gate = gate or GateSettings()
    if not 1 <= shards <= MAX_SHARDS:
        raise DataError(f"--shards must be between 1 and {MAX_SHARDS}, not {shards}")
    source = single_file(data, (".csv", ".tsv", ".txt", ".parquet", ".pq"), "data")
    cohort = read_cohort(source, columns_of(settings), min_events=settings.min_events)
    signatures = load_signatures(signatures_file)
    available = cohort.candidate_genes()
    matched = [match(s, available, settings.min_genes, settings.min_coverage) for s in signatures]
    trainable = [m for m in matched if not m.skip_reason]
    skipped = [SignatureResult.of(m, Outcome.SKIPPED, m.skip_reason or "").to_json() for m in matched if m.skip_reason]
    for m in trainable:
        cohort.expression(m.present)  # every value a model will read is validated here, once
    # Every gene goes to the instances: the competitive test's random sets are drawn from all of the cohort's genes.
    genes = numeric_genes(cohort) if gate.competitive != "off" else available
    keep = [settings.id_column, settings.event_column] + ([settings.time_column] if settings.time_column else [])
    (out_dir / "cohort").mkdir(parents=True, exist_ok=True)
    cohort.table[keep + genes].to_csv(out_dir / "cohort" / COHORT_FILE, index=False)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    groups = deal(trainable, shards)
    competitive = deal_competitive_sizes(trainable, shards, len(genes)) if gate.competitive != "off" else []
    permutations = permutations_per_signature(len(trainable), gate.permutations)
    per_size = sets_per_size(sum(map(len, competitive)), gate.random_sets)
    for i, group in enumerate(groups):
        # Each signature computes its share of the self-contained null; each competitive size is drawn by one
        # instance for the whole run.
        doc = {
            "shard": i,
            "signatures": [_signature_doc(m) for m in group],
            "permutations": permutations,
            "competitive_sizes": competitive[i] if competitive else [],
            "random_sets_per_size": per_size,
        }
        (out_dir / "shards" / SHARD_FILE.format(i)).write_text(json.dumps(doc) + "\n")
    (out_dir / SKIPPED_FILE).write_text(json.dumps(skipped, indent=1) + "\n")
    plan = SetPlan(
        signatures=len(matched),
        trainable=len(trainable),
        skipped=len(skipped),
        shards=shards,
        genes=len(genes),
        patients=cohort.n,
        per_shard=[len(g) for g in groups],
    )
    (out_dir / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=2) + "\n")
    logger.info(
        "%d signatures: %d trainable in %d shards (%s), %d skipped; cohort of %d patients reduced to %d genes",
        plan.signatures,
        plan.trainable,
        shards,
        ", ".join(map(str, plan.per_shard)),
        plan.skipped,
        cohort.n,
        len(genes),
    )
    return plan


@dataclass(frozen=True)
class Shard:
    """An instance's part of the shards channel: its signatures, the permutations each computes, and the competitive
    null sizes it draws for the run, with the random sets at each."""

    signatures: list[MatchedSignature]
    permutations: int
    competitive_sizes: list[int]
    random_sets_per_size: int


def read_shards(folder: Path, available: list[str], min_genes: int) -> Shard:
    """The signatures of the shard files in ``folder`` (an instance's part of the shards channel)."""
    matched: list[MatchedSignature] = []
    sizes: list[int] = []
    permutations = per_size = 0
    for path in sorted(folder.glob("shard-*.json")):
        doc = json.loads(path.read_text())
        for one in doc["signatures"]:
            signature = GeneSignature(one["name"], tuple(one["genes"]), one["source"], one["description"])
            matched.append(match(signature, available, min_genes))
        sizes += doc.get("competitive_sizes", [])
        permutations = max(permutations, int(doc.get("permutations", 0)))
        per_size = max(per_size, int(doc.get("random_sets_per_size", 0)))
    return Shard(matched, permutations, sizes, per_size)


def train_shard(
    cohort_dir: Path, shards_dir: Path, work: Path, options: RunOptions, *, host: str
) -> list[SignatureResult]:
    """TrainSignatures on one instance: every signature of its shard through run-local's evaluation (with its
    permutations), into ``work`` (``signatures/<artifact>/{model,evaluation}``, ``outcomes/<host>.json`` and, for the
    competitive sizes it was dealt, ``nulls/<host>.json``)."""
    cohort = read_cohort(
        single_file(cohort_dir, (".csv",), "cohort"), columns_of(options.cohort), min_events=options.cohort.min_events
    )
    shard = read_shards(shards_dir, cohort.candidate_genes(), options.cohort.min_genes)
    logger.info("%s: %d signatures to train", host, len(shard.signatures))
    options = RunOptions(**{**options.__dict__, "workdir": work})
    # Reports are drawn here, with the threshold's verdict (RegisterSignatures registers, it does not draw).
    results = evaluate_all(options, cohort, shard.signatures, permutations=shard.permutations, draw=True)
    # Where the report and the artifact are under the run's results prefix (this instance's folder goes with it).
    results = [
        replace(
            r, report=str(Path(r.report).relative_to(work)) if r.report else "",
            artifact=str(Path(r.artifact).relative_to(work)) if r.artifact else "",
        )
        for r in results
    ]  # fmt: skip
    if options.gate.competitive != "off" and shard.competitive_sizes:
        # This instance's share of the run's competitive sizes (PrepareSignatureSet dealt them); RegisterSignatures
        # computes every signature's p over all of them, so a p does not depend on the shards.
        if shard.random_sets_per_size < 1:
            raise GenesigError(
                "the shard files deal competitive sizes but no random sets per size: PrepareSignatureSet ran with "
                "another image; rerun the pipeline with this image"
            )
        null = RandomSignatureNull(cohort, options.train, options.cohort.target, shard.random_sets_per_size, work)
        null.draw(shard.competitive_sizes, jobs=options.jobs or os.cpu_count() or 1)
        nulls = {
            "genes": len(null.genes),
            "sizes": {str(size): null.distribution(size).to_json() for size in shard.competitive_sizes},
        }
        logger.info("%s: drew the random-set null of %d sizes", host, len(shard.competitive_sizes))
        (work / NULLS).mkdir(parents=True, exist_ok=True)
        (work / NULLS / f"{host}.json").write_text(json.dumps(nulls) + "\n")
    (work / OUTCOMES).mkdir(parents=True, exist_ok=True)
    (work / OUTCOMES / f"{host}.json").write_text(json.dumps([r.to_json() for r in results]) + "\n")
    return results


def upload_results(s3: Any, work: Path, results: list[SignatureResult], output_uri: str, host: str) -> int:
    """Each signature's artifact and evaluation, then this instance's outcomes, to the run's results prefix."""
    from genesig.pipeline.sagemaker.aws import s3_join, write_object

    files = [
        p
        for r in results
        if r.evaluated
        for folder in ("model", "evaluation")
        for p in sorted((work / SIGNATURES / r.artifact_name / folder).glob("*"))
        if p.is_file()
    ]

    def put(path: Path) -> None:
        write_object(s3, s3_join(output_uri, str(path.relative_to(work))), path.read_bytes())

    with ThreadPoolExecutor(max_workers=UPLOAD_WORKERS) as pool:
        list(pool.map(put, files))
    nulls = work / NULLS / f"{host}.json"
    if nulls.is_file():
        put(nulls)
    put(work / OUTCOMES / f"{host}.json")  # last: its presence says the instance finished
    return len(files) + 1 + nulls.is_file()


def collect(results_dir: Path, set_dir: Path, gate: GateSettings) -> tuple[list[SignatureResult], RunNulls]:
    """Every signature of the set once, the training instances' outcomes and the skipped ones, with the run's verdict
    (``judge``: every permutation of the run pooled, Benjamini-Hochberg q over every signature evaluated, the
    competitive p against the nulls the instances drew)."""
    docs: list[dict[str, Any]] = json.loads((set_dir / SKIPPED_FILE).read_text())
    for path in sorted((results_dir / OUTCOMES).glob("*.json")):
        docs += json.loads(path.read_text())
    plan = json.loads((set_dir / PLAN_FILE).read_text())
    if len(docs) != plan["signatures"]:
        raise GenesigError(
            f"the run has outcomes for {len(docs)} of its {plan['signatures']} signatures: a training instance "
            "did not finish (see the TrainSignatures job's log)"
        )
    evaluated = [SignatureResult.from_json(doc, f"{OUTCOMES}/") for doc in docs]
    nulls: dict[int, SizeNull] = {}
    genes = int(plan["genes"])
    for path in sorted((results_dir / NULLS).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            nulls.update({int(k): SizeNull.from_json(v) for k, v in doc["sizes"].items()})
            genes = int(doc["genes"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise GenesigError(
                f"{NULLS}/{path.name}: not a null this version reads ({type(exc).__name__}: {exc}); the training "
                "instance wrote it with another image or was cut short: rerun the pipeline with this image"
            ) from None
    competitive: dict[int, SizeNull] | None = None
    if gate.competitive != "off":
        needed = set(competitive_sizes(evaluated, genes))
        if needed - nulls.keys():
            raise GenesigError(
                f"the run has no random-set null for signatures of {', '.join(map(str, sorted(needed - nulls.keys())))}"
                " genes: a training instance did not upload its nulls (see the TrainSignatures job's log)"
            )
        # The sizes of the signatures evaluated, as run-local uses: a size dealt for one that failed is left out.
        competitive = {size: nulls[size] for size in needed}
    decided, described = judge(evaluated, gate, competitive, genes)
    return sorted((replace(r, group=names_for(r.signature).group) for r in decided), key=lambda r: r.signature), (
        described
    )


def register_passing(
    results: list[SignatureResult],
    results_dir: Path,
    *,
    sm: Any,
    s3: Any,
    package_prefix: str,
    serving_image: str,
    approval_status: str,
    mme_prefix: str | None,
    nulls: RunNulls,
    workers: int = REGISTER_WORKERS,
) -> list[SignatureResult]:
    """RegisterSignatures: each passing signature registered (and, when Approved, deployed) through
    :func:`~genesig.pipeline.registry.register_and_deploy`, as run-local registers; a failure is that signature's
    ("error"), never the run's. Returns the results with their registrations."""
    from genesig.pipeline.sagemaker.registry import SageMakerRegistry

    registry = SageMakerRegistry(sm, s3, package_prefix=package_prefix, serving_image=serving_image)

    def one(result: SignatureResult) -> SignatureResult:
        if not result.passed:
            return result
        folder = results_dir / SIGNATURES / result.artifact_name
        artifacts = sorted((folder / "model").glob("*.tar.gz"))
        if len(artifacts) != 1:
            return result.failed(f"registration failed: {len(artifacts)} artifacts in {folder / 'model'}, not one")
        try:
            evaluation = Evaluation.read(folder / "evaluation")
        except GenesigError as exc:
            return result.failed(f"registration failed: {exc.message}")
        return register_and_deploy(
            registry, result, artifacts[0], final_evaluation(evaluation, result, nulls),
            approval_status=approval_status, prefix=mme_prefix,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, results))


def host_name(config_dir: Path) -> str:
    """This training instance's name (``algo-1``, ...), from SageMaker's resourceconfig.json."""
    path = config_dir / "resourceconfig.json"
    return str(json.loads(path.read_text())["current_host"]) if path.is_file() else "algo-1"


def default_work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="genesig-set-", dir=os.environ.get("TMPDIR")))
