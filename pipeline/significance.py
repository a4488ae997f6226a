"""Does a signature beat chance? A random-signature null, empirical p-values and false-discovery control.

Random gene sets are prognostic more often than not (Venet et al., PLoS Comput Biol 2011), so a threshold on a
cross-validated metric alone passes noise in proportion to the number of signatures tried. Here each signature's
pooled out-of-fold metric (each repeat's out-of-fold scores over every training patient, scored once, averaged over
the repeats: ``CrossValidation.pooled_mean``) is compared with the same metric for ``R`` random gene sets of its
size drawn from the cohort's genes, with the same split, folds, preprocessing and model (Starmans et al., PLoS One
2011):

    p = (1 + #{random >= observed}) / (R + 1)

and the Benjamini-Hochberg procedure turns the p-values of every signature evaluated in a run into q-values.

An empirical p cannot go below 1 / (R + 1), and Benjamini-Hochberg over m signatures needs p <= FDR x rank / m: over
1,000 signatures with R = 100 nothing could ever pass. So where fewer than ``TAIL_MIN_EXCEED`` random sets of its
size reach the signature's metric, p comes from the null's tail (``NullTail``, never above the empirical p). The
tail is learned from every size's random sets at once: each size's metrics are standardised (its mean and standard
deviation) and pooled, and a generalised Pareto distribution is fitted to the pool's largest ``TAIL_EXCEEDANCES``
(Knijnenburg et al., Bioinformatics 2009). A normal tail is too thin: random sets that happen to hold a prognostic
gene, or a penalty chosen by chance, give the null a heavier right tail, and on the gate benchmark a normal turned
noise signatures at 1-in-100 of their own null into p ~ 1e-5. Beyond the fitted tail's end (a negative shape
bounds it) the normal's tail is the floor. The gate passes a signature when its metric clears the threshold **and**
q <= FDR (coverage is checked before training: below the minimum a signature is skipped).

The null depends only on the set size and the data, so it is shared: sizes up to ``EXACT_UP_TO`` have their own
null; above, sizes are binned geometrically (each bin spans a factor of ``SIZE_RATIO``) and a bin's null is drawn at
its representative size. Cost: R cross-validations per bin used, not per signature — for the 6,036 GO sets (2 to
~2,000 genes) about 40 bins, so R = 100 costs ~4,000 cross-validations against the run's 6,036. Nulls are cached
on disk by data fingerprint, settings, size, R and seed, so a re-run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from genesig.pipeline.settings import L2_GRID, GateSettings, TrainSettings, as_strings
from genesig.pipeline.signatures import GeneSignature, MatchedSignature
from genesig.pipeline.steps import cross_validate, preprocess

if TYPE_CHECKING:
    from genesig.pipeline.cohort import Cohort
    from genesig.pipeline.run import SignatureResult

logger = logging.getLogger(__name__)
EXACT_UP_TO = 10
SIZE_RATIO = 1.2
# Below this many random sets at or above the observed metric, p comes from the null's fitted tail.
TAIL_MIN_EXCEED = 10
# The generalised Pareto tail is fitted to this many of the pooled standardised null's largest values (or a tenth of
# the pool when that is fewer); with fewer than TAIL_MIN_POOL values in the pool, there is no fitted tail and p goes
# no lower than the pool's own 1 / (N + 1).
TAIL_EXCEEDANCES = 250
TAIL_MIN_POOL = 100
# What a signature and its random sets are compared on.
STATISTIC = "cv_pooled"


def null_size(k: int) -> int:
    """The size whose null a signature of ``k`` genes is compared with."""
    if k <= EXACT_UP_TO:
        return k
    step = round(math.log(k / EXACT_UP_TO) / math.log(SIZE_RATIO))
    return round(EXACT_UP_TO * SIZE_RATIO**step)


def empirical_p(observed: float, null: np.ndarray) -> float:
    """(1 + #null >= observed) / (R + 1): never 0, and exact for a null of R draws."""
    return float((1 + np.count_nonzero(null >= observed)) / (len(null) + 1))


class NullTail:
    """p-values against the random-signature nulls of a run's sizes: empirical where enough random sets reach the
    observed metric, else from the tail that every size's standardised null shares (see the module's text)."""

    def __init__(self, nulls: Mapping[int, np.ndarray]) -> None:
        self.nulls = {size: np.asarray(values, dtype=float) for size, values in nulls.items()}
        self.moments = {
            size: (float(np.mean(v)), float(np.std(v, ddof=1)))
            for size, v in self.nulls.items()
            if len(v) >= 3 and np.std(v) > 0
        }
        pooled = [(self.nulls[size] - mean) / spread for size, (mean, spread) in self.moments.items()]
        self.pool = np.sort(np.concatenate(pooled))[::-1] if pooled else np.empty(0)
        self.exceedances = min(TAIL_EXCEEDANCES, len(self.pool) // 10)
        self.pareto: tuple[float, float, float] | None = None  # threshold, shape, scale
        if len(self.pool) >= TAIL_MIN_POOL:
            from scipy.stats import genpareto

            top = self.pool[: self.exceedances + 1]
            threshold = float((top[-2] + top[-1]) / 2)
            try:
                with np.errstate(all="ignore"):
                    shape, _, scale = genpareto.fit(top[:-1] - threshold, floc=0)
            except (ValueError, RuntimeError, FloatingPointError):
                shape, scale = math.nan, math.nan
            if np.isfinite(shape) and scale > 0:
                self.pareto = (threshold, float(shape), float(scale))
                logger.debug(
                    "null tail: generalised Pareto (shape %.3f, scale %.3f) over the largest %d of %d standardised "
                    "random-set metrics from %d sizes", shape, scale, self.exceedances, len(self.pool),
                    len(self.moments),
                )  # fmt: skip
            else:
                logger.debug("null tail: no generalised Pareto fit; p no lower than 1 / (random sets + 1)")

    def p_value(self, observed: float, size: int) -> float:
        from scipy.stats import genpareto, norm

        if not math.isfinite(observed):
            return 1.0
        null = self.nulls[size]
        empirical = empirical_p(observed, null)
        if np.count_nonzero(null >= observed) >= TAIL_MIN_EXCEED or size not in self.moments:
            return empirical
        mean, spread = self.moments[size]
        z = (observed - mean) / spread
        beyond = int(np.count_nonzero(self.pool >= z))
        pooled = (1 + beyond) / (len(self.pool) + 1)
        if self.pareto is None:  # too few random sets to fit a tail to: no further than the pool's own
            return min(empirical, pooled)
        normal = float(norm.sf(z))
        threshold, shape, scale = self.pareto
        if z <= threshold or beyond >= TAIL_MIN_EXCEED:
            tail = pooled
        else:
            tail = self.exceedances / len(self.pool) * float(genpareto.sf(z - threshold, shape, 0, scale))
        return float(min(empirical, max(tail, normal)))


def bh_qvalues(p_values: Iterable[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given."""
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(q_sorted, 1.0)
    return np.maximum(q, p)  # q >= p exactly (p x m / m can round below p)


class RandomSignatureNull:
    """Null distributions of the pooled out-of-fold metric of random gene sets, by size, cached on disk."""

    def __init__(
        self, cohort: Cohort, train: TrainSettings, target: str | None, replicates: int, cache_dir: Path
    ) -> None:
        self.cohort = cohort
        self.train = train
        self.target = target
        self.replicates = replicates
        self.cache_dir = cache_dir
        self.genes = _numeric_genes(cohort)
        self._memory: dict[int, np.ndarray] = {}
        self._key: str | None = None

    def _cache_key(self) -> str:
        if self._key is None:
            # Everything a random set's cross-validated metric depends on besides the data's values: the settings,
            # how the values are read, the inner CV's penalty grid and the code that fits.
            from genesig import __version__
            from genesig.pipeline.validation import INNER_FOLDS, INNER_TOLERANCE

            settings = json.dumps(
                {
                    "train": as_strings(self.train),
                    "target": self.target,
                    "values": self.cohort.columns.values,
                    "l2_grid": L2_GRID,
                    "inner": [INNER_FOLDS, INNER_TOLERANCE],
                    "genesig": __version__,
                    "statistic": STATISTIC,
                },
                sort_keys=True,
            )
            digest = hashlib.sha256(self.cohort.fingerprint(self.genes).encode() + settings.encode())
            self._key = digest.hexdigest()[:16]
        return self._key

    def _path(self, size: int) -> Path:
        return self.cache_dir / f"null-{self._cache_key()}-k{size}-r{self.replicates}.json"

    def distribution(self, size: int) -> np.ndarray:
        """R pooled out-of-fold metrics for random sets of ``size`` genes (seeded by the training seed and the size)."""
        if size not in self._memory:
            self.draw([size])
        return self._memory[size]

    def draw(self, sizes: list[int], jobs: int = 1) -> None:
        """The nulls of ``sizes`` into memory: from the cache where drawn before, else drawn now, each random set's
        cross-validation in one of ``jobs`` worker processes (the draws themselves are made here, in order, so the
        result does not depend on ``jobs``) and cached."""
        todo = []
        for size in dict.fromkeys(sizes):
            if size in self._memory:
                continue
            path = self._path(size)
            if path.is_file():
                self._memory[size] = np.asarray(json.loads(path.read_text())[STATISTIC], dtype=float)
            else:
                todo.append(size)
        draws = [(size, genes) for size in todo for genes in self.random_sets(size)]
        if not draws:
            return
        values = self._cross_validate_all([genes for _, genes in draws], jobs)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for size in todo:
            mine = np.asarray([v for (k, _), v in zip(draws, values, strict=True) if k == size], dtype=float)
            mine = mine[np.isfinite(mine)]
            path = self._path(size)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"size": size, "replicates": self.replicates, STATISTIC: mine.tolist()}))
            tmp.replace(path)
            self._memory[size] = mine
            logger.debug("null of %d-gene sets: %d drawn, median %.3f", size, len(mine), np.median(mine))

    def random_sets(self, size: int) -> list[list[str]]:
        """The R random gene sets of ``size`` genes the null cross-validates (the same ones on every call)."""
        size = min(size, len(self.genes))
        rng = np.random.default_rng([self.train.seed, size])
        return [
            [self.genes[j] for j in sorted(rng.choice(len(self.genes), size=size, replace=False))]
            for _ in range(self.replicates)
        ]

    def _cross_validate_all(self, gene_sets: list[list[str]], jobs: int) -> list[float]:
        if jobs <= 1 or len(gene_sets) < 2:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # as in the workers: the same arithmetic, whatever the number of processes
                return [random_set_cv(self.cohort, self.train, self.target, genes) for genes in gene_sets]
        # forkserver, as run-local's workers: no forked copy of this process's threads (BLAS).
        context = multiprocessing.get_context("forkserver")
        try:
            with ProcessPoolExecutor(
                jobs, mp_context=context, initializer=_null_worker_init, initargs=(self.cohort, self.train, self.target)
            ) as pool:
                return list(pool.map(_null_worker_cv, gene_sets, chunksize=max(1, len(gene_sets) // (8 * jobs))))
        except BrokenProcessPool:
            from genesig.errors import GenesigError

            raise GenesigError(
                "a worker drawing the random-signature null died (out of memory?): run again with fewer --jobs, or "
                "a smaller --null-replicates (0 turns the null off)"
            ) from None


def random_set_cv(cohort: Cohort, train: TrainSettings, target: str | None, genes: list[str]) -> float:
    """The pooled out-of-fold metric of one random gene set: the same split, folds and model as a signature's;
    NaN when it cannot be fitted (it is then left out of the null, which is counted as drawn)."""
    from genesig.errors import GenesigError

    name = f"random-{len(genes)}"
    matched = MatchedSignature(GeneSignature(name, tuple(genes)), name, genes, [])
    try:
        prepared = preprocess(cohort, matched, target=target, settings=train)  # type: ignore[arg-type]
        return cross_validate(prepared, train).pooled_mean
    except GenesigError as exc:
        logger.warning("a random %d-gene set could not be fitted and is left out of the null: %s", len(genes), exc)
        return math.nan


_NULL_WORKER: dict[str, Any] = {}


def _null_worker_init(cohort: Cohort, train: TrainSettings, target: str | None) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # the workers are the parallelism
    _NULL_WORKER.update(cohort=cohort, train=train, target=target)


def _null_worker_cv(genes: list[str]) -> float:
    return random_set_cv(_NULL_WORKER["cohort"], _NULL_WORKER["train"], _NULL_WORKER["target"], genes)


def _numeric_genes(cohort: Cohort) -> list[str]:
    """The cohort's columns that hold valid expression values: random sets are drawn from these only (a clinical or
    text column is no gene)."""
    from genesig.errors import DataError

    genes = cohort.candidate_genes()
    try:
        cohort.expression(genes)
        return genes
    except DataError:
        pass
    usable = []
    for gene in genes:
        try:
            cohort.expression([gene])
            usable.append(gene)
        except DataError:
            continue
    logger.info(
        "random signatures are drawn from %d of %d columns (the others are not expression)", len(usable), len(genes)
    )
    return usable


def attach_p_values(results: list[SignatureResult], null: RandomSignatureNull, jobs: int = 1) -> None:
    """Each evaluated signature's p against the null of its size (``p_value``; skipped ones keep None); the nulls not
    yet cached are drawn first, ``jobs`` processes at a time."""
    sizes = sizes_needed(results)
    null.draw(sizes, jobs)
    nulls = {size: null.distribution(size) for size in sizes}
    assign_p_values(results, nulls)


def _compared(result: SignatureResult) -> bool:
    """Whether a signature meets the null: evaluated, with the metric the null compares."""
    return result.status == "done" and result.cv_pooled is not None


def sizes_needed(results: list[SignatureResult]) -> list[int]:
    """The null sizes of the signatures a run compares with the null."""
    return sorted({null_size(len(r.genes)) for r in results if _compared(r)})


def assign_p_values(results: list[SignatureResult], nulls: Mapping[int, np.ndarray]) -> None:
    """p against the run's nulls (every size drawn in the run: the tail they share is learned from all of them)."""
    tail = NullTail(nulls)
    compared = sum(_compared(r) for r in results)
    if tail.pareto is None and compared:
        logger.warning(
            "the null has %d random sets in all, too few (under %d) to fit its tail: no p can go below %.2g, and "
            "Benjamini-Hochberg over %d signatures needs p <= FDR/%d for the first to pass; raise --null-replicates "
            "(100 by default)", len(tail.pool), TAIL_MIN_POOL, 1 / (len(tail.pool) + 1), compared, compared,
        )  # fmt: skip
    for r in results:
        if _compared(r):
            size = null_size(len(r.genes))
            r.p_value = tail.p_value(r.cv_pooled, size)
            r.null_size = size
            r.null_replicates = len(nulls[size])


class Compared(Protocol):
    """What a run knows of one signature's comparison with the null (run-local's results, the set run's rows)."""

    metric: str
    cv_pooled: float | None
    p_value: float | None
    q_value: float | None
    null_size: int | None
    null_replicates: int | None
    coverage: float | None


def significance_record(result: Compared) -> dict[str, Any]:
    """The ``significance`` block an evaluation and a registered package carry once the run has decided."""
    return {
        "statistic": f"pooled out-of-fold {result.metric}",
        "observed": result.cv_pooled,
        "p_value": result.p_value,
        "q_value": result.q_value,
        "null_size": result.null_size,
        "null_replicates": result.null_replicates,
        "coverage": result.coverage,
    }


def gate_run(results: list[SignatureResult], gate: GateSettings) -> None:
    """The run's verdict on every evaluated signature: its metric clears the threshold (``threshold_passed``, decided
    when it was evaluated) and, when p-values were computed, its Benjamini-Hochberg q over the whole run is at most
    the FDR. ``passed`` and ``reason`` are set; the reason names every part, passed or failed."""
    done = [r for r in results if r.status == "done"]
    with_p = [r for r in done if r.p_value is not None]
    for r, q in zip(with_p, bh_qvalues(r.p_value for r in with_p if r.p_value is not None), strict=True):
        r.q_value = float(q)
    for r in done:
        parts = [(r.threshold_reason, r.threshold_passed)]  # each part of the gate and whether it held
        if r.q_value is not None:
            significant = r.q_value <= gate.fdr
            parts.append(
                (
                    f"q {r.q_value:.3g} {'<=' if significant else '>'} FDR {gate.fdr:g} (pooled out-of-fold "
                    f"{r.metric} {r.cv_pooled:.3f}, p {r.p_value:.2g} against {r.null_replicates} random "
                    f"{r.null_size}-gene sets)",
                    significant,
                )
            )
        if r.coverage is not None:
            parts.append((f"coverage {r.coverage:.0%}", True))
        failed = [text for text, held in parts if not held]
        r.passed = not failed
        r.reason = "; ".join(failed or [text for text, _ in parts])
