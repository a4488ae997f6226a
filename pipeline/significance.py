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

Random sets are drawn in two strata (stratified sampling, as in survey statistics). A random set's metric is high
mostly when it holds one of the few genes that discriminate well on their own (a prognostic gene, or a noise gene
lucky in this cohort); such sets are rare (a few % of small sets) and decide the far tail, where Benjamini-Hochberg
looks (p ~ 1e-4), and R = 100 uniform draws hold only a handful of them. So the genes are ranked by how well each
alone discriminates on the training patients, the top ``TOP_GENE_SHARE`` of them are the *top genes*, and half of each
size's R random sets are drawn among the sets holding at least one top gene, half among those holding none. The share
``w`` of all sets of that size holding one is exact (hypergeometric), and

    p = w p_holding + (1 - w) p_rest

each stratum's p as above (its own empirical p and its own shared tail). This estimates the same p as uniform draws
(the null is still every random set of the size), with many more draws where the tail is decided. On the gate
benchmark, uniform draws gave 8 of 20 planted signatures a p below their true p's 95% lower bound (2e-5 against at
least 9e-4, say); the strata gave 1 of 20 (``bench/calibration.py``).

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
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cached_property
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
# The share of the cohort's genes, best at discriminating on their own, whose random sets are their own stratum.
TOP_GENE_SHARE = 0.01


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


@dataclass(frozen=True)
class SizeNull:
    """The null of one size: the metrics of the random sets holding a top gene and of those holding none, and
    ``weight``, the exact share of all random sets of that size that hold one."""

    holding: np.ndarray
    rest: np.ndarray
    weight: float

    @property
    def replicates(self) -> int:
        return len(self.holding) + len(self.rest)

    def strata(self) -> list[tuple[float, np.ndarray]]:
        """(share, metrics) of each stratum with a share above 0."""
        return [(w, v) for w, v in ((self.weight, self.holding), (1.0 - self.weight, self.rest)) if w > 0]

    def percentiles(self, q: Sequence[float]) -> np.ndarray:
        """Percentiles of the metric over every random set of the size: each stratum's draws weighted by its share."""
        strata = [(w, v) for w, v in self.strata() if len(v)]
        values = np.concatenate([v for _, v in strata])
        weights = np.concatenate([np.full(len(v), w / len(v)) for w, v in strata])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        cumulative = (np.cumsum(weights) - weights / 2) / weights.sum()
        return np.interp(np.asarray(q, dtype=float) / 100, cumulative, values)

    def to_json(self) -> dict[str, Any]:
        return {"weight": self.weight, "holding": self.holding.tolist(), "rest": self.rest.tolist()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SizeNull:
        return cls(np.asarray(doc["holding"], dtype=float), np.asarray(doc["rest"], dtype=float), float(doc["weight"]))


class StratifiedTail:
    """p against a run's stratified nulls: each stratum's p (``NullTail``: empirical, else the tail its sizes share),
    weighted by the stratum's share of all random sets of the size."""

    def __init__(self, nulls: Mapping[int, SizeNull]) -> None:
        self.nulls = dict(nulls)
        self.holding = NullTail({size: n.holding for size, n in self.nulls.items() if n.weight > 0})
        self.rest = NullTail({size: n.rest for size, n in self.nulls.items() if n.weight < 1})

    def unfitted(self) -> list[NullTail]:
        """The strata in use too small (under ``TAIL_MIN_POOL`` random sets) to fit a tail to."""
        return [t for t in (self.holding, self.rest) if t.nulls and t.pareto is None]

    def p_value(self, observed: float, size: int) -> float:
        null = self.nulls[size]
        p = 0.0
        if null.weight > 0:
            p += null.weight * self.holding.p_value(observed, size)
        if null.weight < 1:
            p += (1.0 - null.weight) * self.rest.p_value(observed, size)
        return float(min(p, 1.0))


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
    """Null distributions of the pooled out-of-fold metric of random gene sets, by size and stratum, cached on disk."""

    def __init__(
        self, cohort: Cohort, train: TrainSettings, target: str | None, replicates: int, cache_dir: Path
    ) -> None:
        self.cohort = cohort
        self.train = train
        self.target = target
        self.replicates = replicates
        self.cache_dir = cache_dir
        self.genes = _numeric_genes(cohort)
        self._memory: dict[int, SizeNull] = {}
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
                    "top_gene_share": TOP_GENE_SHARE,
                },
                sort_keys=True,
            )
            digest = hashlib.sha256(self.cohort.fingerprint(self.genes).encode() + settings.encode())
            self._key = digest.hexdigest()[:16]
        return self._key

    def _path(self, size: int) -> Path:
        return self.cache_dir / f"null-{self._cache_key()}-k{size}-r{self.replicates}.json"

    def distribution(self, size: int) -> SizeNull:
        """The pooled out-of-fold metrics of R random sets of ``size`` genes, by stratum (seeded by the training seed
        and the size)."""
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
                self._memory[size] = SizeNull.from_json(json.loads(path.read_text()))
            else:
                todo.append(size)
        draws = [
            (size, stratum, genes)
            for size in todo
            for stratum, sets in zip(("holding", "rest"), self.random_sets(size), strict=True)
            for genes in sets
        ]
        if not draws:
            return
        values = self._cross_validate_all([genes for _, _, genes in draws], jobs)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for size in todo:

            def metrics(stratum: str, size: int = size) -> np.ndarray:
                mine = np.asarray([v for (k, s, _), v in zip(draws, values, strict=True) if (k, s) == (size, stratum)])
                return mine[np.isfinite(mine)]

            null = SizeNull(metrics("holding"), metrics("rest"), self.weight(size))
            path = self._path(size)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"size": size, "replicates": self.replicates, **null.to_json()}))
            tmp.replace(path)
            self._memory[size] = null
            logger.debug(
                "null of %d-gene sets: %d + %d drawn (%.1f%% of all hold a top gene), median %.3f", size,
                len(null.holding), len(null.rest), 100 * null.weight, null.percentiles([50])[0],
            )  # fmt: skip

    @cached_property
    def top_genes(self) -> list[str]:
        """The cohort's genes best at discriminating on their own (the training patients, the run's target): the top
        ``TOP_GENE_SHARE`` of them, at least one."""
        from genesig.pipeline.metrics import discrimination_by_column

        name = "all-genes"
        matched = MatchedSignature(GeneSignature(name, tuple(self.genes)), name, self.genes, [])
        prepared = preprocess(self.cohort, matched, target=self.target, settings=self.train)  # type: ignore[arg-type]
        time = prepared.train.time if prepared.target == "time_to_event" else None
        alone = discrimination_by_column(event=prepared.train.event, time=time, values=prepared.train.raw)
        ranked = np.argsort(-np.abs(alone - 0.5), kind="stable")  # either direction; ties in the cohort's order
        top = max(1, round(TOP_GENE_SHARE * len(self.genes)))
        return [self.genes[j] for j in ranked[:top]]

    def weight(self, size: int) -> float:
        """The exact share of all random sets of ``size`` genes that hold at least one top gene."""
        from scipy.stats import hypergeom

        size = min(size, len(self.genes))
        return float(hypergeom.sf(0, len(self.genes), len(self.top_genes), size))

    def random_sets(self, size: int) -> tuple[list[list[str]], list[list[str]]]:
        """The random gene sets of ``size`` genes the null cross-validates (the same ones on every call): those
        holding at least one top gene (half of R) and those holding none (the other half); all R in one stratum
        when the other has no share."""
        from scipy.stats import hypergeom

        size = min(size, len(self.genes))
        rng = np.random.default_rng([self.train.seed, size])
        top = set(self.top_genes)
        chosen = np.array([j for j, g in enumerate(self.genes) if g in top])  # positions in the cohort's order
        others = np.array([j for j, g in enumerate(self.genes) if g not in top])
        weight = self.weight(size)
        holding_n = 0 if weight == 0 else self.replicates if weight == 1 else self.replicates // 2
        # How many top genes a set holds, given it holds one: the hypergeometric, conditioned on at least one.
        counts = np.arange(1, min(size, len(chosen)) + 1)
        odds = hypergeom.pmf(counts, len(self.genes), len(chosen), size)
        holding = []
        for _ in range(holding_n):
            j = int(rng.choice(counts, p=odds / odds.sum()))
            picked = np.concatenate(
                [rng.choice(chosen, size=j, replace=False), rng.choice(others, size=size - j, replace=False)]
            )
            holding.append([self.genes[i] for i in np.sort(picked)])
        rest = [
            [self.genes[i] for i in np.sort(rng.choice(others, size=size, replace=False))]
            for _ in range(self.replicates - holding_n)
        ]
        return holding, rest

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
    assign_p_values(results, {size: null.distribution(size) for size in sizes})


def _compared(result: SignatureResult) -> bool:
    """Whether a signature meets the null: evaluated, with the metric the null compares."""
    return result.status == "done" and result.cv_pooled is not None


def sizes_needed(results: list[SignatureResult]) -> list[int]:
    """The null sizes of the signatures a run compares with the null."""
    return sorted({null_size(len(r.genes)) for r in results if _compared(r)})


def assign_p_values(results: list[SignatureResult], nulls: Mapping[int, SizeNull]) -> None:
    """p against the run's nulls (every size drawn in the run: the tails they share are learned from all of them)."""
    tail = StratifiedTail(nulls)
    compared = sum(_compared(r) for r in results)
    unfitted = tail.unfitted()
    if unfitted and compared:
        smallest = min(len(t.pool) for t in unfitted)
        logger.warning(
            "the null has %d random sets in a stratum, too few (under %d) to fit its tail: p cannot go much below "
            "%.2g, and Benjamini-Hochberg over %d signatures needs p <= FDR/%d for the first to pass; raise "
            "--null-replicates (100 by default)", smallest, TAIL_MIN_POOL, 1 / (smallest + 1), compared, compared,
        )  # fmt: skip
    for r in results:
        if _compared(r):
            size = null_size(len(r.genes))
            r.p_value = tail.p_value(r.cv_pooled, size)
            r.null_size = size
            r.null_replicates = nulls[size].replicates


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
