"""Does a signature predict the outcome? The gate's self-contained permutation test with false-discovery control over
the run, and, reported beside it, whether the signature beats random gene sets of its size.

Goeman and Bühlmann (Bioinformatics 2007) separate two questions about a gene set. *Self-contained*: is it
associated with the outcome at all? *Competitive*: is it more associated than other genes are? A model is worth
serving when it predicts the outcome better than chance, the self-contained question, so that one decides; the
competitive one is reported beside it (or, on request, gated on too). On real cohorts most random gene sets are
prognostic (Venet et al., PLoS Comput Biol 2011), so the competitive question rejects almost everything there,
a published signature on its own cohort included.

**The statistic** is the pooled out-of-fold metric (``CrossValidation.pooled_mean``): each CV repeat's out-of-fold
scores over every training patient, scored once, averaged over the repeats.

**The self-contained null** is that metric with the outcome permuted across the training patients (the event, or each
patient's (time, event) pair, kept together) and everything else as the real run does it: the signature's genes, the
folds, the fold-fitted preprocessing, the nested penalty. It is computed by permuting the patients' expression rows
against the outcome, so the folds (which follow the outcome) stay the run's own, and each permutation rides in the
signature's own batched cross-validation (``genesig.pipeline.validation``). A permutation test needs many permutations
per signature to reach the p-values Benjamini-Hochberg asks for over thousands of signatures (1e-5), so the run *shares*
them: each signature gets ``permutations_per_signature`` of them (at least one; the run at least
``GateSettings.permutations`` in all) and :class:`PermutationNull` pools every draw of the run. Measured on real cohorts
(``bench/calibration.py``), that null is the same for every signature up to a location and scale that drift slowly with
size: a size's location and scale are local-linear fits in log size over the draws of nearby sizes
(:class:`SizeSmoothedNull`), and the standardised draws share one shape, empirical where enough draws reach a signature
and a generalised Pareto tail beyond (Knijnenburg et al., Bioinformatics 2009). Binary outcomes give a right-skewed null
(skew ~0.4): a normal tail there is anti-conservative, which is why the shape is fitted, not assumed, but no lighter
than ``SHAPE_FLOOR`` (which the benchmarks' pools reach: their free fits are lighter). The gate passes a
signature when its metric clears the threshold **and** its Benjamini-Hochberg q over the run is at most the FDR.

**The competitive null** compares the same metric with random gene sets drawn from the cohort's genes with the real
outcome (Starmans et al., PLoS One 2011): ``random_sets`` in the run, spread over the signatures' sizes (each size up
to ``EXACT_UP_TO``, geometric bins beyond, at least ``MIN_SETS_PER_SIZE`` at each), drawn in two strata (sets holding
one of the genes best at discriminating alone, and the rest) so that the far tail is seen. Each stratum is a
:class:`SizeSmoothedNull`, as the self-contained null is: on real cohorts the random sets' metric rises and narrows
with size (gse1992: a mean of 0.53 at 3 genes, 0.67 at 155), so its location and scale are local-linear in log size,
and p weighs each stratum's p by its exact share of the random sets of the size (:class:`StratifiedNull`). Where a
random set of the signature's size would share most of its genes with it (the signature holds more than
``COMPETITIVE_MAX_SHARE`` of the cohort's genes), the test is not applicable and says so.
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
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy.stats import false_discovery_control, genpareto, hypergeom, norm
from threadpoolctl import threadpool_limits

from genesig import __version__
from genesig.errors import DataError, GenesigError
from genesig.pipeline.metrics import discrimination_by_column
from genesig.pipeline.settings import L2_GRID, GateSettings, TrainSettings, as_strings, sets_per_size
from genesig.pipeline.split import choose_target, split_rows
from genesig.pipeline.validation import INNER_FOLDS, INNER_TOLERANCE, cross_validate_designs

if TYPE_CHECKING:
    from genesig.pipeline.cohort import Cohort

logger = logging.getLogger(__name__)

# What a signature is compared on, in both tests.
STATISTIC = "cv_pooled"
# Below this many null values at or above the standardised observation, p comes from the fitted tail.
TAIL_MIN_EXCEED = 10
# The generalised Pareto tail is fitted to this many of a pool's largest values (or a tenth of the pool when that is
# fewer); with fewer than TAIL_MIN_POOL values in a pool there is no fitted tail and p goes no lower than 1 / (N + 1).
TAIL_EXCEEDANCES = 250
TAIL_MIN_POOL = 100
# Both nulls' fitted tails are no lighter than this shape. Benjamini-Hochberg decides at z ~ 3.7-4.5,
# far past a pool of ~1,000 draws, where the implied p hangs on a shape fitted with a standard error of ~0.1. For
# normal to right-skewed (0.3-0.7) nulls of 1,002 draws (bench/tail_shape.py), floored at 0 (exponential) p came out
# up to 130x too large; unfloored, a tenth of the skewed pools gave p 20-500x too small at z = 4.5-5; at -0.1 the
# median stays within 0.8-2x of the truth. The competitive strata fit theirs from fewer values (10-35 exceedances by
# default), where a free shape is lighter still more often.
SHAPE_FLOOR = -0.1
# Both nulls' location and scale at a size: local-linear over the draws, weighted by a Gaussian kernel in log size,
# its bandwidth widened from this until the draws it weighs count as at least MIN_NEIGHBOURS (Kish's effective size).
BANDWIDTH = 0.35
MIN_NEIGHBOURS = 100
# Competitive: random sets are drawn at each size up to EXACT_UP_TO and at geometric bins of ratio SIZE_RATIO
# beyond, at least MIN_SETS_PER_SIZE at each and an even number, half in each stratum (the null's location and scale
# are smoothed over nearby sizes).
EXACT_UP_TO = 10
SIZE_RATIO = 1.2
# Competitive: the share of the cohort's genes, best at discriminating alone, whose random sets are their own stratum.
TOP_GENE_SHARE = 0.01
# Competitive: not applicable when the signature holds more than this share of the genes random sets are drawn from.
COMPETITIVE_MAX_SHARE = 0.5


# --- the tail both nulls use ---------------------------------------------------------------------------------------


class PooledTail:
    """Survival function of a pool of standardised null values: empirical where at least ``TAIL_MIN_EXCEED`` reach
    ``z``, beyond that a generalised Pareto tail fitted to the pool's largest values (a normal tail is too thin for
    these nulls), and beyond a bounded fitted tail's end the normal's tail as the floor.

    ``shape_floor``: the lightest tail the fit may choose (the shape refitted there, by maximum likelihood, when the
    free fit is lighter). From a few hundred exceedances a shape's standard error is ~0.1, so a free fit often ends
    the tail too soon; see ``SHAPE_FLOOR``."""

    def __init__(self, pool: np.ndarray, *, shape_floor: float | None = None) -> None:
        values = np.asarray(pool, dtype=float)
        self.pool = np.sort(values[np.isfinite(values)])[::-1]
        self.exceedances = min(TAIL_EXCEEDANCES, len(self.pool) // 10)
        self.pareto: tuple[float, float, float] | None = None  # threshold, shape, scale
        if len(self.pool) >= TAIL_MIN_POOL:
            top = self.pool[: self.exceedances + 1]
            threshold = float((top[-2] + top[-1]) / 2)
            try:
                with np.errstate(all="ignore"):
                    shape, _, scale = genpareto.fit(top[:-1] - threshold, floc=0)
                    if shape_floor is not None and np.isfinite(shape) and shape < shape_floor:
                        shape, _, scale = genpareto.fit(top[:-1] - threshold, fc=shape_floor, floc=0)
            except (ValueError, RuntimeError, FloatingPointError):
                shape, scale = math.nan, math.nan
            if not (np.isfinite(shape) and scale > 0):
                # No fit (e.g. many tied exceedances): an exponential tail, whose scale is the mean excess, rather
                # than none, which would hold every p of the run at 1 / (N + 1) or above.
                logger.info("the null's tail could not be fitted; an exponential tail is used")
                shape, scale = 0.0, float(np.mean(top[:-1] - threshold))
            if scale > 0:  # 0 when every exceedance ties with the threshold: no tail beyond the pool
                self.pareto = (threshold, float(shape), float(scale))

    def sf(self, z: float) -> float:
        """P(a null value >= z): never 0; the pool's own share where at least ``TAIL_MIN_EXCEED`` of it reach ``z``,
        else the fitted tail (a handful of exceedances, or none, say little about how far out ``z`` is)."""
        if not math.isfinite(z):
            return 1.0 if z < 0 else 1.0 / (len(self.pool) + 1)
        beyond = int(np.count_nonzero(self.pool >= z))
        empirical = (1 + beyond) / (len(self.pool) + 1)
        if beyond >= TAIL_MIN_EXCEED or self.pareto is None:
            return empirical
        threshold, shape, scale = self.pareto
        if z <= threshold:
            return empirical
        tail = self.exceedances / len(self.pool) * float(genpareto.sf(z - threshold, shape, 0, scale))
        return float(max(tail, float(norm.sf(z))))


# --- the self-contained test (the gate) ------------------------------------------------------------------------------


def permutations_per_signature(signatures: int, permutations: int) -> int:
    """Permuted cross-validations each of a run's ``signatures`` signatures computes: at least one each, and at least
    ``permutations`` in the run; 0 when the test is off."""
    if permutations <= 0 or signatures <= 0:
        return 0
    return max(1, math.ceil(permutations / signatures))


def permutation_rows(patients: int, count: int, seed: int, key: str) -> np.ndarray:
    """``count`` permutations of the training patients' rows (count x patients), seeded by the training seed and the
    signature (its artifact name), so that they do not depend on the order of the run, the shards or ``--jobs``."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    rng = np.random.default_rng([seed, digest])
    return np.stack([rng.permutation(patients) for _ in range(count)]) if count else np.empty((0, patients), int)


class SizeSmoothedNull:
    """A null metric that drifts with the signature's size, from draws at many sizes: at a size, its location and
    scale are local-linear fits in log size (a Gaussian kernel, so a trend across the sizes is followed rather than
    averaged away), and the draws standardised by their own size's location and scale share one shape
    (``PooledTail``, no lighter than ``SHAPE_FLOOR``)."""

    def __init__(self, draws: Iterable[tuple[int, float]]) -> None:
        pairs = [(k, v) for k, v in draws if math.isfinite(v) and k > 0]
        self.sizes = np.array([k for k, _ in pairs], dtype=float)
        self.values = np.array([v for _, v in pairs], dtype=float)
        self.logs = np.log(self.sizes) if len(pairs) else np.empty(0)
        self._moments: dict[int, tuple[float, float]] = {}
        residuals = [(v - mean) / spread for k, v in pairs for mean, spread in [self.moments(k)] if spread > 0]
        self.tail = PooledTail(np.asarray(residuals), shape_floor=SHAPE_FLOOR)

    @property
    def draws(self) -> int:
        return len(self.values)

    def moments(self, size: int) -> tuple[float, float]:
        """Location and scale of the null at ``size`` genes: local-linear fits in log size of the draws and of their
        absolute deviations from that fit, weighted by a Gaussian kernel whose bandwidth is widened until the draws it
        weighs count as ``MIN_NEIGHBOURS`` (or all of them). Where the draws' sizes do not spread enough to fit a
        slope (one size), the weighted means."""
        if size not in self._moments:
            if len(self.values) < 2:
                self._moments[size] = (float(np.mean(self.values)) if len(self.values) else 0.5, 0.0)
                return self._moments[size]
            want = min(MIN_NEIGHBOURS, len(self.values))
            distance = self.logs - math.log(size)
            width = BANDWIDTH
            while True:
                weight = np.exp(-0.5 * (distance / width) ** 2)
                total, squares = weight.sum(), float(np.sum(weight**2))
                if (total > 0 and total**2 / squares >= want * 0.999) or width > 50:
                    break
                width *= 1.5
            mean, slope = _weighted_line(distance, weight, self.values)
            # Scale: the local line of the absolute deviations from the local line of the values (positive where a
            # line of squared deviations, steeper, often runs below 0 at the largest size), as a standard deviation
            # for a normal null. Any scale proportional to the truth gives the same p: the pool is standardised by it.
            deviation = np.abs(self.values - (mean + slope * distance))
            # No less than half the kernel's mean deviation: a steep fall in spread can carry the line near 0 at
            # the largest size.
            spread = max(_weighted_line(distance, weight, deviation)[0], 0.5 * float(weight @ deviation / total))
            spread *= math.sqrt(math.pi / 2) / max(1.0 - squares / total**2, 1e-9) ** 0.5
            self._moments[size] = (mean, spread)
        return self._moments[size]

    def p_value(self, observed: float, size: int) -> float:
        if not math.isfinite(observed) or not len(self.values):
            return 1.0
        mean, spread = self.moments(size)
        if spread <= 0:
            return empirical_p(observed, self.values)
        return self.tail.sf((observed - mean) / spread)

    def percentiles(self, size: int, q: Sequence[float]) -> np.ndarray:
        """Percentiles of the null at ``size`` genes: its location and scale there, the shared shape."""
        mean, spread = self.moments(size)
        if not len(self.tail.pool) or spread <= 0:
            return np.full(len(q), mean)
        return mean + spread * np.percentile(self.tail.pool, np.asarray(q, dtype=float))


def _weighted_line(distance: np.ndarray, weight: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """The weighted least-squares line of ``values`` on ``distance``: its value at distance 0 and its slope (the
    weighted mean and no slope where the distances do not spread enough to fit one)."""
    s0, s1, s2 = weight.sum(), float(weight @ distance), float(weight @ distance**2)
    spread = s0 * s2 - s1**2
    mean = float(weight @ values) / s0
    if spread <= 1e-9 * s0 * max(s2, 1e-12):
        return mean, 0.0
    slope = (s0 * float(weight @ (distance * values)) - s1 * float(weight @ values)) / spread
    return mean - slope * s1 / s0, slope


class PermutationNull(SizeSmoothedNull):
    """The run's self-contained null: every permuted pooled out-of-fold metric of every signature, by size; p of a
    signature of ``k`` genes is its metric standardised by the null's location and scale at ``k``, against the
    pooled standardised draws, whose tail is no lighter than ``SHAPE_FLOOR``."""

    def describe(self, signatures: int) -> str:
        span = f"{int(self.sizes.min())}-{int(self.sizes.max())} genes" if len(self.sizes) else "no genes"
        return (
            f"the outcome permuted across patients, as the run does everything else: {self.draws} permutations of "
            f"{signatures} signature{'s' if signatures != 1 else ''} ({span})"
        )


# --- the competitive test (reported beside the verdict) ------------------------------------------------------------


def null_size(k: int) -> int:
    """The size whose competitive null a signature of ``k`` genes is compared with."""
    if k <= EXACT_UP_TO:
        return k
    step = round(math.log(k / EXACT_UP_TO) / math.log(SIZE_RATIO))
    return round(EXACT_UP_TO * SIZE_RATIO**step)


def competitive_applicable(k: int, genes: int) -> bool:
    """Whether random sets of ``k`` genes drawn from the cohort's ``genes`` are other gene sets, not (nearly) the
    signature itself."""
    return genes > 0 and k <= COMPETITIVE_MAX_SHARE * genes


def empirical_p(observed: float, null: np.ndarray) -> float:
    """(1 + #null >= observed) / (R + 1): never 0, and exact for a null of R draws."""
    return float((1 + np.count_nonzero(null >= observed)) / (len(null) + 1))


@dataclass(frozen=True)
class SizeNull:
    """The competitive null of one size: the metrics of the random sets holding a top gene and of those holding none,
    and ``weight``, the exact share of all random sets of that size that hold one."""

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
        if not strata:  # no random set of the size could be fitted
            return np.full(len(q), math.nan)
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


EMPTY_SIZE_NULL = SizeNull(np.empty(0), np.empty(0), 0.0)


class StratifiedNull:
    """The competitive null over a run's sizes: each stratum (random sets holding a top gene, and the rest) one
    :class:`SizeSmoothedNull` over the draws of every size; p at a size is each stratum's p there, weighted by the
    stratum's exact share of all random sets of the size."""

    def __init__(self, nulls: Mapping[int, SizeNull]) -> None:
        self.nulls = dict(nulls)
        self.holding = SizeSmoothedNull((k, v) for k, n in self.nulls.items() if n.weight > 0 for v in n.holding)
        self.rest = SizeSmoothedNull((k, v) for k, n in self.nulls.items() if n.weight < 1 for v in n.rest)

    @property
    def sets(self) -> int:
        return self.holding.draws + self.rest.draws

    def unfitted(self) -> list[SizeSmoothedNull]:
        """The strata in use too small (under ``TAIL_MIN_POOL`` random sets) to fit a tail to."""
        return [s for s in (self.holding, self.rest) if s.draws and s.tail.pareto is None]

    def p_value(self, observed: float, size: int) -> float:
        weight = self.nulls[size].weight
        p = 0.0
        if weight > 0:
            p += weight * self.holding.p_value(observed, size)
        if weight < 1:
            p += (1.0 - weight) * self.rest.p_value(observed, size)
        return float(min(p, 1.0))


class RandomSignatureNull:
    """Competitive nulls: the pooled out-of-fold metrics of ``replicates`` random gene sets at each size, by stratum,
    cached on disk. A size's random sets share the outcome and so the folds: they are cross-validated as one batch of
    designs. ``genes``: the cohort's ``numeric_genes`` where the caller has them already."""

    def __init__(
        self,
        cohort: Cohort,
        train: TrainSettings,
        target: str | None,
        replicates: int,
        cache_dir: Path,
        *,
        genes: list[str] | None = None,
    ) -> None:
        self.cohort = cohort
        self.train = train
        self.target = target
        self.replicates = replicates
        self.cache_dir = cache_dir
        self.genes = numeric_genes(cohort) if genes is None else genes
        self._target = choose_target(cohort, target)  # type: ignore[arg-type]
        self._memory: dict[int, SizeNull] = {}
        self._key: str | None = None

    def _cache_key(self) -> str:
        if self._key is None:
            # Everything a random set's cross-validated metric depends on besides the data's values: the settings,
            # how the values are read, the inner CV's penalty grid and the code that fits.
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
        """The nulls of ``sizes`` into memory: from the cache where drawn before, else drawn now (the random sets here,
        in order, so the result does not depend on ``jobs``; their cross-validations in ``jobs`` processes) and
        cached."""
        todo = []
        for size in dict.fromkeys(sizes):
            if size in self._memory:
                continue
            path = self._path(size)
            if path.is_file():
                self._memory[size] = SizeNull.from_json(json.loads(path.read_text()))
            else:
                todo.append(size)
        if not todo:
            return
        sets = {size: self.random_sets(size) for size in todo}
        work = [(size, holding + rest) for size, (holding, rest) in sets.items()]
        values = dict(zip(todo, self._cross_validate_all(work, jobs), strict=True))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for size in todo:
            held = len(sets[size][0])
            metrics = np.asarray(values[size])
            null = SizeNull(_finite(metrics[:held]), _finite(metrics[held:]), self.weight(size))
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
        rows, _ = split_rows(self.cohort, self.train)
        time = self.cohort.time[rows] if self._target == "time_to_event" and self.cohort.time is not None else None
        raw = self.cohort.expression(self.genes)[rows]  # rank metrics: a log transform would change nothing
        alone = discrimination_by_column(event=self.cohort.event[rows], time=time, values=raw)
        ranked = np.argsort(-np.abs(alone - 0.5), kind="stable")  # either direction; ties in the cohort's order
        top = max(1, round(TOP_GENE_SHARE * len(self.genes)))
        return [self.genes[j] for j in ranked[:top]]

    def weight(self, size: int) -> float:
        """The exact share of all random sets of ``size`` genes that hold at least one top gene."""
        size = min(size, len(self.genes))
        return float(hypergeom.sf(0, len(self.genes), len(self.top_genes), size))

    def random_sets(self, size: int) -> tuple[list[list[str]], list[list[str]]]:
        """The random gene sets of ``size`` genes the null cross-validates (the same ones on every call): those
        holding at least one top gene (half of R) and those holding none (the other half); all R in one stratum
        when the other has no share."""
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

    def _cross_validate_all(self, work: list[tuple[int, list[list[str]]]], jobs: int) -> list[list[float]]:
        """The pooled out-of-fold metric of every random set, per size; each size's sets in batches of
        ``RANDOM_SETS_PER_BATCH``, the batches spread over ``jobs`` processes."""
        batches = [(i, sets[j : j + RANDOM_SETS_PER_BATCH]) for i, (_, sets) in enumerate(work)
                   for j in range(0, len(sets), RANDOM_SETS_PER_BATCH)]  # fmt: skip
        if jobs <= 1 or len(batches) < 2:
            with threadpool_limits(1):  # as in the workers: the same arithmetic, whatever the number of processes
                results = [random_sets_cv(self.cohort, self.train, self.target, sets) for _, sets in batches]
        else:
            # forkserver, as run-local's workers: no forked copy of this process's threads (BLAS).
            context = multiprocessing.get_context("forkserver")
            try:
                with ProcessPoolExecutor(
                    jobs, mp_context=context, initializer=_null_worker_init,
                    initargs=(self.cohort, self.train, self.target),
                ) as pool:  # fmt: skip
                    results = list(pool.map(_null_worker_cv, [sets for _, sets in batches]))
            except BrokenProcessPool:
                raise GenesigError(
                    "a worker drawing the random-signature null died (out of memory?): run again with fewer --jobs, "
                    "a smaller --random-sets, or --competitive off"
                ) from None
        out: list[list[float]] = [[] for _ in work]
        for (i, _), values in zip(batches, results, strict=True):
            out[i] += values
        return out


def draw_competitive(
    cohort: Cohort,
    train: TrainSettings,
    target: str | None,
    rows: Sequence[Evaluated],
    trainable: Iterable[int],
    random_sets: int,
    cache_dir: Path,
    jobs: int = 1,
) -> tuple[dict[int, SizeNull], int]:
    """The random-set nulls a run's evaluated signatures need, drawn or read from ``cache_dir``, and the number of
    genes they were drawn from. ``random_sets`` are spread over the sizes of the run's ``trainable`` signatures (their
    gene counts), as the set run deals them before any is evaluated, so that both draw the same sets."""
    if not any(r.evaluated for r in rows):
        return {}, 0  # nothing to compare: no reading every column of a cohort whose signatures all failed
    usable = numeric_genes(cohort)
    planned = {null_size(k) for k in trainable if competitive_applicable(k, len(usable))}
    per_size = sets_per_size(len(planned), random_sets)
    sizes = competitive_sizes(rows, len(usable))
    null = RandomSignatureNull(cohort, train, target, per_size, cache_dir, genes=usable)
    if sizes:  # minutes on a large cohort, after the progress bar is full: say what is going on
        logger.info(
            "beside the verdict: %d random gene sets at each of %d size%s, cross-validated as the signatures were "
            "(--competitive off skips this)", per_size, len(sizes), "" if len(sizes) == 1 else "s",
        )  # fmt: skip
    null.draw(sizes, jobs)
    return {size: null.distribution(size) for size in sizes}, len(usable)


# Random sets of one size cross-validated in one batch (bounded so that the work spreads over --jobs processes).
RANDOM_SETS_PER_BATCH = 25


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def random_sets_cv(cohort: Cohort, train: TrainSettings, target: str | None, gene_sets: list[list[str]]) -> list[float]:
    """The pooled out-of-fold metric of random gene sets of one size: the same split, folds and model as a
    signature's, the sets cross-validated as one batch; NaN for a batch that cannot be fitted (left out of the null,
    which is counted as drawn)."""
    if not gene_sets:
        return []
    rows, _ = split_rows(cohort, train)
    kind = choose_target(cohort, target)  # type: ignore[arg-type]
    time = cohort.time[rows] if kind == "time_to_event" and cohort.time is not None else None

    def pooled(sets: list[list[str]]) -> list[float]:
        raw = np.stack([cohort.expression(genes)[rows] for genes in sets])
        cvs = cross_validate_designs(raw, cohort.event[rows], time, kind, train, train.seed, log1p=cohort.log1p)
        return [cv.pooled_mean for cv in cvs]

    try:
        return pooled(gene_sets)
    except GenesigError:
        if len(gene_sets) == 1:
            raise
    out = []  # one set of the batch could not be fitted: find it, keep the others
    for genes in gene_sets:
        try:
            out += pooled([genes])
        except GenesigError as exc:
            logger.warning("a random %d-gene set could not be fitted and is left out of the null: %s", len(genes),
                           exc.message)  # fmt: skip
            out.append(math.nan)
    return out


_NULL_WORKER: dict[str, Any] = {}


def _null_worker_init(cohort: Cohort, train: TrainSettings, target: str | None) -> None:
    threadpool_limits(1)  # the workers are the parallelism
    _NULL_WORKER.update(cohort=cohort, train=train, target=target)


def _null_worker_cv(gene_sets: list[list[str]]) -> list[float]:
    return random_sets_cv(_NULL_WORKER["cohort"], _NULL_WORKER["train"], _NULL_WORKER["target"], gene_sets)


def numeric_genes(cohort: Cohort) -> list[str]:
    """The cohort's columns that hold valid expression values: random sets are drawn from these only (a clinical or
    text column is no gene)."""
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


# --- the verdict ---------------------------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What became of a signature, in the words of every report (run-local's summary, the set run's report, the
    registered package): passed; below threshold; not significant (it cleared the threshold but not the run's
    false-discovery control); not above random (the competitive test, when gated on); skipped (too few of its genes in
    the data); error (its evaluation or registration failed)."""

    PASSED = "passed"
    BELOW_THRESHOLD = "below threshold"
    NOT_SIGNIFICANT = "not significant"
    NOT_ABOVE_RANDOM = "not above random"
    SKIPPED = "skipped"
    ERROR = "error"


class Evaluated(Protocol):
    """What the gate reads of a signature's evaluation (a :class:`~genesig.pipeline.results.SignatureResult`)."""

    @property
    def evaluated(self) -> bool: ...

    metric: str
    genes: list[str]
    cv_pooled: float | None
    threshold_passed: bool
    threshold_reason: str
    p_value: float | None
    competitive: str
    competitive_p: float | None
    null_size: int | None
    random_sets: int | None
    coverage: float | None


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on one signature: passed, the outcome in the report's words, the reason (every part that
    failed, or every part when it passed), and the q-values of both tests over the run."""

    passed: bool
    outcome: Outcome
    reason: str
    q_value: float | None = None
    competitive_q: float | None = None
    parts: tuple[tuple[str, bool], ...] = field(default=())


def _qvalues(p_values: Sequence[float]) -> list[float]:
    if not p_values:
        return []
    q = false_discovery_control(np.asarray(p_values, dtype=float), method="bh")
    return [float(max(a, b)) for a, b in zip(q, p_values, strict=True)]  # q >= p exactly


def decide(rows: Sequence[Evaluated], gate: GateSettings) -> list[Verdict | None]:
    """The run's verdict on every evaluated signature (None for the others): its metric clears the threshold (decided
    when it was evaluated) and, when the self-contained test is on, its Benjamini-Hochberg q over every signature of
    the run with a p is at most the FDR; with ``competitive="gate"``, its competitive q too (over the signatures it
    applies to). The reason names every part, passed or failed."""
    done = [i for i, r in enumerate(rows) if r.evaluated]
    tested = [i for i in done if rows[i].p_value is not None]
    q = dict(zip(tested, _qvalues([float(rows[i].p_value or 1.0) for i in tested]), strict=True))
    versus = [i for i in done if rows[i].competitive == "tested" and rows[i].competitive_p is not None]
    cq = dict(zip(versus, _qvalues([float(rows[i].competitive_p or 1.0) for i in versus]), strict=True))
    verdicts: list[Verdict | None] = [None] * len(rows)
    for i in done:
        r = rows[i]
        parts: list[tuple[str, bool, Outcome]] = [(r.threshold_reason, r.threshold_passed, Outcome.BELOW_THRESHOLD)]
        if i in q:
            held = q[i] <= gate.fdr
            parts.append(
                (
                    f"q {q[i]:.3g} {'<=' if held else '>'} FDR {gate.fdr:g} (pooled out-of-fold {r.metric} "
                    f"{r.cv_pooled:.3f}, p {r.p_value:.2g} with the outcome permuted)",
                    held,
                    Outcome.NOT_SIGNIFICANT,
                )
            )
        if gate.competitive == "gate":
            if i in cq:
                held = cq[i] <= gate.fdr
                parts.append(
                    (
                        f"against random {r.null_size}-gene sets q {cq[i]:.3g} {'<=' if held else '>'} FDR "
                        f"{gate.fdr:g} (p {r.competitive_p:.2g}, {r.random_sets} random sets in the run)",
                        held,
                        Outcome.NOT_ABOVE_RANDOM,
                    )
                )
            elif r.competitive == "not applicable":
                parts.append(("against random sets: not applicable (the signature holds most of the genes)", True,
                              Outcome.PASSED))  # fmt: skip
        if r.coverage is not None:
            parts.append((f"coverage {r.coverage:.0%}", True, Outcome.PASSED))
        failed = [(text, outcome) for text, held, outcome in parts if not held]
        verdicts[i] = Verdict(
            passed=not failed,
            outcome=failed[0][1] if failed else Outcome.PASSED,
            reason="; ".join(text for text, _ in failed) if failed else "; ".join(text for text, _, _ in parts),
            q_value=q.get(i),
            competitive_q=cq.get(i),
            parts=tuple((text, held) for text, held, _ in parts),
        )
    return verdicts


def competitive_p_values(
    rows: Sequence[Evaluated], nulls: Mapping[int, SizeNull], genes: int
) -> list[tuple[str, float | None]]:
    """Each row's competitive status and p against the run's random-set nulls (every size drawn in the run: the tails
    they share are learned from all of them); rows not evaluated get ("", None)."""
    tail = StratifiedNull(nulls) if nulls else None
    unfitted = tail.unfitted() if tail else []
    compared = sum(r.evaluated for r in rows)
    if unfitted and compared:
        smallest = min(t.draws for t in unfitted)
        # Info, not a warning: a small run (one signature, a few sizes) always has strata this small by default.
        logger.info(
            "the random-set null has %d sets in a stratum, too few (under %d) to fit its tail: its p cannot go much "
            "below %.2g; raise --random-sets", smallest, TAIL_MIN_POOL, 1 / (smallest + 1),
        )  # fmt: skip
    out: list[tuple[str, float | None]] = []
    for r in rows:
        if not r.evaluated:
            out.append(("", None))
        elif not competitive_applicable(len(r.genes), genes):
            out.append(("not applicable", None))
        elif tail is None or not nulls.get(null_size(len(r.genes)), EMPTY_SIZE_NULL).replicates:
            out.append(("", None))  # not tested: no random set of the size was fitted
        else:
            out.append(("tested", tail.p_value(r.cv_pooled or 0.0, null_size(len(r.genes)))))
    return out


def competitive_sizes(rows: Sequence[Evaluated], genes: int) -> list[int]:
    """The competitive null sizes a run needs (signatures evaluated, the test applicable)."""
    return sorted(
        {null_size(len(r.genes)) for r in rows if r.evaluated and competitive_applicable(len(r.genes), genes)}
    )
