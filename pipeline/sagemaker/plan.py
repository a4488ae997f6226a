"""What a run will cost before it is paid: SageMaker jobs, instance-minutes, wall time and dollars, for the
signature-set run (three jobs, whatever the number of signatures) and for one pipeline execution per signature.

Every assumption is named and can be changed (``genesig pipeline plan --help``); the defaults are public list
prices and start-up times, and this project's own measured training time per signature.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from genesig.errors import DataError
from genesig.pipeline.settings import GateSettings, sets_per_size


@dataclass(frozen=True)
class Assumptions:
    """The numbers an estimate rests on (each a ``genesig pipeline plan`` option)."""

    # Provisioning an instance and pulling the image before a job's code starts (SageMaker's own guidance and
    # what users report: a few minutes for processing, a little more for training).
    processing_startup_minutes: float = 3.0
    training_startup_minutes: float = 4.0
    # Training, cross-validating, evaluating and gating one signature on a 2-vCPU instance (bench/training.py
    # measured 0.14-0.31 s on 2 cores; rounded up for slower instances).
    seconds_per_signature: float = 0.5
    # Registering one passing signature (about six SageMaker and S3 calls, several at a time).
    seconds_per_registration: float = 0.5
    # The share of signatures that pass the gate (registered, and in one-execution-per-signature, deployed).
    pass_rate: float = 0.1
    # ml.m5.large, on demand, us-east-1, training and processing (USD per instance-hour).
    price_per_instance_hour: float = 0.115
    # One execution per signature: how many run at once (`genesig pipeline start-all --max-parallel`).
    max_parallel: int = 4
    # Outcome permutations of the gate's self-contained test (the Permutations parameter; 0 is off): at least this
    # many in a run and one per signature; one signature alone draws them all for itself.
    permutations: int = 200
    # A permuted cross-validation rides in its signature's own batch: measured at about a fifth to a half of the
    # signature's own time (bench/training.py); taken at half.
    seconds_per_permutation: float = 0.25
    # Random gene sets in the competitive test (the RandomSets parameter; Competitive=off skips it): this many in
    # the run, spread over its sizes, at least MIN_SETS_PER_SIZE at each; a random set costs about what a
    # permutation does, and each size is drawn once in the run, the sizes dealt across the instances.
    random_sets: int = GateSettings().random_sets

    def __post_init__(self) -> None:
        """Each assumption as its option: a negative time, price or count, or a pass rate outside 0-1, is refused."""
        for name, value in asdict(self).items():
            option = "--" + name.replace("_", "-").replace("price-per-instance-hour", "price-per-hour")
            if value < 0:
                raise DataError(f"{option} must be 0 or more, not {value:g}")
        if self.pass_rate > 1:
            raise DataError(f"--pass-rate is a share of the signatures: at most 1, not {self.pass_rate:g}")
        if self.max_parallel < 1:
            raise DataError(f"--max-parallel must be at least 1, not {self.max_parallel}")


@dataclass(frozen=True)
class Estimate:
    design: str
    jobs: int
    instances: int
    instance_minutes: float
    wall_minutes: float
    cost_usd: float


def _estimate(design: str, jobs: int, instances: int, instance_minutes: float, wall: float, a: Assumptions) -> Estimate:
    return Estimate(
        design=design,
        jobs=jobs,
        instances=instances,
        instance_minutes=round(instance_minutes, 1),
        wall_minutes=round(wall, 1),
        cost_usd=round(instance_minutes / 60 * a.price_per_instance_hour, 2),
    )


def permutations_each(signatures: int, a: Assumptions) -> int:
    """The permutations each of a run's signatures computes (as ``significance.permutations_per_signature``)."""
    return 0 if a.permutations <= 0 else max(1, math.ceil(a.permutations / signatures))


def signature_set_run(signatures: int, shards: int, a: Assumptions, competitive_sizes: int = 0) -> Estimate:
    """PrepareSignatureSet → TrainSignatures (``shards`` instances, each with its share of the signatures, their
    permutations and the competitive test's sizes) → RegisterSignatures."""
    prepare = a.processing_startup_minutes + 1.0  # reading the cohort and dealing the shards
    per_instance = math.ceil(signatures / shards)
    null = (
        per_instance * permutations_each(signatures, a)
        + math.ceil(competitive_sizes / shards) * sets_per_size(competitive_sizes, a.random_sets)
    ) * a.seconds_per_permutation
    train = a.training_startup_minutes + (per_instance * a.seconds_per_signature + null) / 60
    register = a.processing_startup_minutes + signatures * a.pass_rate * a.seconds_per_registration / 60 + 1.0
    minutes = prepare + shards * train + register
    return _estimate("signature-set run", 3, 2 + shards, minutes, prepare + train + register, a)


def per_signature_executions(signatures: int, a: Assumptions) -> Estimate:
    """PreprocessCohort → TrainModel → EvaluateModel (with the signature's own permutations) → (RegisterModel →
    DeployToMme when it passes), per signature."""
    work = (a.seconds_per_signature + a.permutations * a.seconds_per_permutation) / 60
    one = 2 * a.processing_startup_minutes + a.training_startup_minutes + work + 1.0
    passing = 2 * (a.processing_startup_minutes + 0.5)
    jobs_each = 3 + 2 * a.pass_rate
    minutes = signatures * (one + a.pass_rate * passing)
    wall = math.ceil(signatures / a.max_parallel) * (one + a.pass_rate * passing)
    return _estimate(
        "one execution per signature", round(signatures * jobs_each), round(signatures * jobs_each), minutes, wall, a
    )


def plan(
    signatures: int, shards: int, assumptions: Assumptions | None = None, *, competitive_sizes: int = 0
) -> dict[str, object]:
    """Both designs for ``signatures`` signatures; ``competitive_sizes``: the sizes the competitive test's random
    gene sets need in the signature-set run (0 when it is off)."""
    if signatures < 1:
        raise DataError("the signature set is empty")
    if not 1 <= shards <= 100:
        raise DataError(f"--shards must be between 1 and 100, not {shards}")
    a = assumptions or Assumptions()
    return {
        "signatures": signatures,
        "shards": shards,
        "permutations_per_signature": permutations_each(signatures, a),
        "competitive_sizes": competitive_sizes,
        "random_sets_per_size": sets_per_size(competitive_sizes, a.random_sets),
        "signature_set": asdict(signature_set_run(signatures, shards, a, competitive_sizes)),
        "per_signature": asdict(per_signature_executions(signatures, a)),
        "assumptions": asdict(a),
    }
