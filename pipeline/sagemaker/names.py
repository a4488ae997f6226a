"""Every name derived from a signature, from one place: the artifact name (file and S3 key in the MME prefix,
TargetModel), the model package group, package descriptions and pipeline execution display names.

Each is valid under the pattern and length AWS enforces (botocore's service model has them; moto checks
none), stable across runs, and collision-free: whenever a name had to be changed or cut, a short hash of
the signature's original name is kept at its end, so two signatures never share one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from genesig.errors import DataError

# What our artifact names may hold: the MME prefix's object names, TargetModel, local folder names.
ARTIFACT_NAME_MAX = 96
_ARTIFACT_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# SageMaker's EntityName family (model package groups and packages, endpoints, pipeline execution names):
# [a-zA-Z0-9](-*[a-zA-Z0-9]){0,N-1}, so letters and digits joined by hyphens, no other character.
_ENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
ENTITY_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
GROUP_PREFIX = "genesig"
GROUP_NAME_MAX = 63
DESCRIPTION_MAX = 1024
HASH_CHARS = 8
STAMP_FORMAT = "%Y%m%d%H%M%S"


def name_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def artifact_name(signature: str) -> str:
    """A safe, stable object name: unsafe runs become ``_``; a short hash keeps changed names distinct."""
    cleaned = _ARTIFACT_UNSAFE.sub("_", signature.strip()).strip("._-")
    if cleaned == signature and len(signature) <= ARTIFACT_NAME_MAX and cleaned[:1].isalnum():
        return signature
    return f"{(cleaned or 'signature')[:ARTIFACT_NAME_MAX]}-{name_hash(signature)}"


def entity_name(text: str, max_length: int, *, prefix: str = "", key: str | None = None) -> str:
    """``text`` as a SageMaker entity name of at most ``max_length`` characters, after ``prefix-``.

    Unchanged when it is already valid and fits; otherwise runs of other characters become one ``-``, the
    result is cut to fit and ``-<hash of key (default: text)>`` keeps it distinct from every other name.
    """
    lead = f"{prefix}-" if prefix else ""
    body = _ENTITY_UNSAFE.sub("-", text).strip("-")
    if body == text and body and len(lead) + len(body) <= max_length:
        return lead + body
    suffix = f"-{name_hash(key if key is not None else text)}"
    room = max_length - len(lead) - len(suffix)
    if room < 1:
        raise ValueError(f"no room for a name in {max_length} characters after {lead!r}")
    return lead + (body[:room].rstrip("-") or "s") + suffix


def description(text: str) -> str:
    """Free text as AWS descriptions take it (letters, marks, separators, symbols, numbers, punctuation; at most
    1,024 characters): control characters become spaces."""
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return printable[:DESCRIPTION_MAX]


@dataclass(frozen=True)
class SignatureNames:
    """The names of one signature, everywhere it is named."""

    signature: str
    artifact: str
    group: str

    def artifact_file(self, version: int) -> str:
        """The immutable object name in the MME prefix (and the TargetModel): ``<artifact>-v<N>.tar.gz``."""
        return f"{self.artifact}-v{version}.tar.gz"

    def execution_display_name(self, when: datetime) -> str:
        """The group's name without its prefix, then the time: at most 55 + 15 of the 82 characters allowed."""
        return f"{self.group.removeprefix(GROUP_PREFIX + '-')}-{when.strftime(STAMP_FORMAT)}"

    def group_description(self) -> str:
        return description(f"genesig-mme models of signature {self.signature}")


def names_for(signature: str) -> SignatureNames:
    """All names of ``signature`` (its name as defined, e.g. a GO term with spaces and parentheses)."""
    artifact = artifact_name(signature)
    return SignatureNames(signature=signature, artifact=artifact, group=group_name(artifact))


def group_name(artifact: str) -> str:
    """The model package group of an artifact name (a manifest's ``name``): derived from the artifact name alone,
    so a training job, the registry and the CLI that know only the artifact agree on it."""
    return entity_name(artifact, GROUP_NAME_MAX, prefix=GROUP_PREFIX)


# What the user gives the AWS commands, checked before any call so a wrong value is one line naming it (AWS's own
# patterns: botocore's RoleArn and ContainerImage shapes, S3's bucket naming rules, Docker's image references).
_ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
_BUCKET = re.compile(r"(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IMAGE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
IMAGE_URI_MAX = 255


def check_role_arn(flag: str, value: str) -> str:
    if not _ROLE_ARN.fullmatch(value) or len(value) > 2048:
        raise DataError(f"{flag} {value!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return value


def check_bucket(flag: str, value: str) -> str:
    if not _BUCKET.fullmatch(value):
        raise DataError(
            f"{flag} {value!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens; "
            "a bucket name, not an s3:// URI)"
        )
    return value


def check_image_uri(flag: str, value: str) -> str:
    if len(value) > IMAGE_URI_MAX or not _IMAGE.fullmatch(value):
        raise DataError(
            f"{flag} {value!r} is not an image URI (REGISTRY/REPOSITORY:TAG, as build_and_push.sh prints it)"
        )
    return value
