"""The gene manifest: the one schema that training writes, the loader validates and clients read.

Decoded with msgspec (typed structs, precise error paths, ~2 ms import) so that
every model backend process can afford to validate it.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Literal

import msgspec

from genesig.errors import ArtifactError

# 1.1 added signature.coverage and training (how the penalty was chosen); 1.0 readers ignore them.
SCHEMA_VERSION = "1.1"
SUPPORTED_MAJOR = 1
# Not "manifest.json": Multi Model Server reads that name as its own legacy manifest and fails the load.
MANIFEST_FILENAME = "genesig-model.json"
WEIGHTS_FILENAME = "weights.safetensors"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

TargetKind = Literal["binary", "time_to_event"]
OutputName = Literal["probability", "risk_score"]

ArtifactName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    """The gene signature as the user defined it, before matching against the data."""

    name: str
    source: str | None = None
    genes_requested: list[str]
    genes_missing: list[str] = []
    # The share of genes_requested that the data had (the model uses those); None in 1.0 manifests.
    coverage: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class Preprocessing(msgspec.Struct, frozen=True, kw_only=True):
    """Fitted on the training split only; the server applies it so clients send raw values."""

    log1p: bool
    center: list[float]
    scale: list[float]


class RiskGroups(msgspec.Struct, frozen=True, kw_only=True):
    """``labels[i]`` covers outputs in ``[cutpoints[i-1], cutpoints[i])``; len(labels) == len(cutpoints) + 1."""

    cutpoints: list[float]
    labels: list[str]


class Output(msgspec.Struct, frozen=True, kw_only=True):
    name: OutputName
    description: str
    risk_groups: RiskGroups


class Architecture(msgspec.Struct, frozen=True, kw_only=True):
    """``linear``: one affine layer; ``mlp``: one hidden layer with ``activation``."""

    kind: Literal["linear", "mlp"]
    hidden_units: NonNegativeInt = 0
    activation: Literal["relu", "tanh"] | None = None


class TrainingData(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    n_rows: PositiveInt
    n_events: NonNegativeInt
    event_column: str
    time_column: str | None = None


class Training(msgspec.Struct, frozen=True, kw_only=True):
    """How the model was fitted: the ridge penalty and how it was chosen (``inner_cv``: the candidate with the best
    held-out log-likelihood, summed over a stratified inner cross-validation on the training split; ``fixed``:
    given)."""

    l2: Annotated[float, msgspec.Meta(ge=0)]
    l2_chosen_by: Literal["fixed", "inner_cv"]
    l2_candidates: list[float] = []
    inner_cv_log_likelihood: list[float] = []
    inner_folds: NonNegativeInt = 0
    cv_folds: PositiveInt
    cv_repeats: PositiveInt
    seed: NonNegativeInt
    # The most Newton steps (linear) or L-BFGS iterations (mlp) per fit: a permutation of the cross-validation
    # repeats it (artifacts written before it was recorded were trained with the default, 200).
    max_iter: PositiveInt = 200


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    sha256: str
    bytes: NonNegativeInt


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a loader, a deploy step and a client need to know about one model artifact."""

    schema_version: str
    name: ArtifactName
    version: PositiveInt
    signature: Signature
    genes: list[str]
    id_column: str
    target: TargetKind
    model: Architecture
    preprocessing: Preprocessing
    output: Output
    metrics: dict[str, float]
    training_data: TrainingData
    created_at: str
    versions: dict[str, str]
    training: Training | None = None  # None in 1.0 manifests
    # Filled in by the artifact writer from the packed files.
    files: dict[str, FileEntry] = {}
    memory_estimate_bytes: NonNegativeInt = 0

    @property
    def artifact_name(self) -> str:
        """The immutable object name in the MME prefix: ``<name>-v<version>.tar.gz``."""
        return artifact_filename(self.name, self.version)


class _VersionProbe(msgspec.Struct):
    schema_version: str


def model_identity(manifest: Manifest) -> str:
    """What makes two artifacts the same model whatever their version and creation time: weights, genes,
    preprocessing, target, architecture, output and training data. A registry registers a model only once."""
    parts = {k: getattr(manifest, k) for k in ("files", "genes", "target", "model", "preprocessing", "output")}
    parts["training_data"] = manifest.training_data
    return hashlib.sha256(msgspec.json.encode(parts, order="sorted")).hexdigest()


def artifact_filename(name: str, version: int) -> str:
    return f"{name}-v{version}.tar.gz"


def decode_manifest(raw: bytes) -> Manifest:
    """Decode and validate manifest bytes; refuse unknown major schema versions first, with a clear message."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{MANIFEST_FILENAME} is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        probe = msgspec.json.decode(raw, type=_VersionProbe)
    except msgspec.DecodeError as exc:
        raise ArtifactError(f"{MANIFEST_FILENAME} is not a valid manifest: {exc}") from None
    major = probe.schema_version.split(".", 1)[0]
    if major != str(SUPPORTED_MAJOR):
        raise ArtifactError(
            f"manifest schema_version {probe.schema_version!r} is not supported; "
            f"this release reads {SUPPORTED_MAJOR}.x (upgrade genesig-mme to read newer artifacts)"
        )
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ArtifactError(f"{MANIFEST_FILENAME} is invalid: {exc}") from None
    check_manifest(manifest)
    return manifest


def encode_manifest(manifest: Manifest) -> bytes:
    check_manifest(manifest)
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def check_manifest(m: Manifest) -> None:
    """Cross-field rules that types alone cannot express."""
    n = len(m.genes)
    if n == 0:
        raise ArtifactError("manifest lists no genes")
    duplicates = sorted({g for g in m.genes if m.genes.count(g) > 1}) if len(set(m.genes)) != n else []
    if duplicates:
        raise ArtifactError(f"manifest lists genes more than once: {', '.join(duplicates)}")
    if any(not g.strip() for g in m.genes):
        raise ArtifactError("manifest lists an empty gene name")
    p = m.preprocessing
    for field, values in (("center", p.center), ("scale", p.scale)):
        if len(values) != n:
            raise ArtifactError(f"preprocessing.{field} has {len(values)} values but the manifest lists {n} genes")
        if not all(math.isfinite(v) for v in values):
            raise ArtifactError(f"preprocessing.{field} contains a non-finite value")
    if any(s <= 0 for s in p.scale):
        raise ArtifactError("preprocessing.scale must be positive for every gene")
    groups = m.output.risk_groups
    if len(groups.labels) != len(groups.cutpoints) + 1:
        raise ArtifactError(
            f"output.risk_groups has {len(groups.cutpoints)} cutpoints and {len(groups.labels)} labels; "
            "expected one label more than cutpoints"
        )
    if not all(math.isfinite(c) for c in groups.cutpoints) or groups.cutpoints != sorted(groups.cutpoints):
        raise ArtifactError("output.risk_groups.cutpoints must be finite and ascending")
    expected_output = "probability" if m.target == "binary" else "risk_score"
    if m.output.name != expected_output:
        raise ArtifactError(f"target {m.target!r} produces {expected_output!r}, manifest says {m.output.name!r}")
    if m.model.kind == "mlp" and (m.model.hidden_units < 1 or m.model.activation is None):
        raise ArtifactError("an mlp model needs hidden_units >= 1 and an activation")
    if m.memory_estimate_bytes <= 0:
        raise ArtifactError("manifest.memory_estimate_bytes must be positive")
    if WEIGHTS_FILENAME not in m.files:
        raise ArtifactError(f"manifest.files does not list {WEIGHTS_FILENAME}")
    for fname, entry in m.files.items():
        if "/" in fname or fname in (".", "..") or fname == MANIFEST_FILENAME or not fname:
            raise ArtifactError(f"manifest.files has an invalid file name {fname!r}")
        if not _SHA256.match(entry.sha256):
            raise ArtifactError(f"manifest.files[{fname!r}].sha256 is not a lowercase sha256 hex digest")
