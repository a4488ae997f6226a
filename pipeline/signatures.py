"""Gene signatures: the built-in metagenes of the seed cohort, MSigDB ``.gmt`` files and a simple JSON map.

A signature's name becomes an artifact name, so it is sanitised (GO names hold spaces,
quotes, parentheses); the original name is kept in the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genesig.errors import DataError
from genesig.pipeline.sagemaker.names import artifact_name

# Zhou et al., Radiology 2018: the metagenes of the NSCLC radiogenomics cohort.
METAGENES: dict[str, tuple[str, ...]] = {
    "metagene_19": ("LRIG1", "HPGD", "GDF15"),
    "metagene_10": ("CDH2", "POSTN", "VCAN", "PDGFRA"),
    "metagene_9": ("VCAM1", "CD44", "CD48"),
    "metagene_4": ("CD4", "LYL1", "SPI1", "CD37"),
    "metagene_3": ("VIM", "LMO2", "EGR2"),
    "metagene_21": ("BGN", "COL4A1", "COL5A1", "COL5A2"),
}
ALL = "ALL"


@dataclass(frozen=True)
class GeneSignature:
    name: str
    genes: tuple[str, ...]
    source: str = "built-in"
    description: str = ""


@dataclass(frozen=True)
class MatchedSignature:
    """A signature checked against the data: the genes it can use, those it cannot, and why it is skipped."""

    signature: GeneSignature
    artifact_name: str
    present: list[str]
    missing: list[str]
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """The share of the signature's genes present in the data."""
        total = len(self.present) + len(self.missing)
        return len(self.present) / total if total else 0.0


def default_signatures() -> list[GeneSignature]:
    signatures = [GeneSignature(name, genes) for name, genes in METAGENES.items()]
    all_genes = tuple(g for genes in METAGENES.values() for g in genes)
    return signatures + [GeneSignature(ALL, all_genes, description="all 21 metagene genes")]


def _unique_genes(genes: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.strip() for g in genes if g.strip()))


def parse_gmt(text: str, source: str) -> list[GeneSignature]:
    """MSigDB GMT: one set per line, tab-separated ``name``, ``description`` (or URL), genes..."""
    signatures = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < 3 or not fields[0].strip():
            raise DataError(f"{source} line {number}: expected tab-separated name, description and genes")
        genes = _unique_genes(fields[2:])
        if not genes:
            raise DataError(f"{source} line {number}: gene set {fields[0]!r} lists no genes")
        signatures.append(GeneSignature(fields[0].strip(), genes, source=source, description=fields[1].strip()))
    return signatures


def parse_json(text: str, source: str) -> list[GeneSignature]:
    """``{"name": ["GENE", ...]}`` or ``{"name": {"genes": [...], "description": "..."}}``."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not doc:
        raise DataError(f'{source}: expected a JSON object {{"signature name": ["GENE", ...]}}')
    signatures = []
    for name, value in doc.items():
        description = ""
        if isinstance(value, dict):
            description = str(value.get("description", ""))
            value = value.get("genes")
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            raise DataError(f"{source}: signature {name!r} must be a list of gene names")
        genes = _unique_genes(value)
        if not genes:
            raise DataError(f"{source}: signature {name!r} lists no genes")
        signatures.append(GeneSignature(str(name), genes, source=source, description=description))
    return signatures


def read_signatures(path: Path) -> list[GeneSignature]:
    from genesig.pipeline.cohort import single_file

    path = single_file(path, (".gmt", ".json"), "signature")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".gmt":
        signatures = parse_gmt(text, path.name)
    elif suffix == ".json":
        signatures = parse_json(text, path.name)
    else:
        raise DataError(f"{path.name}: unsupported signature file type {suffix!r}; use .gmt or .json")
    if not signatures:
        raise DataError(f"{path.name}: no signatures")
    check_unique(signatures, path.name)
    return signatures


def check_unique(signatures: list[GeneSignature], source: str) -> None:
    seen: dict[str, str] = {}
    for signature in signatures:
        name = artifact_name(signature.name)
        if name in seen:
            raise DataError(f"{source}: signatures {seen[name]!r} and {signature.name!r} share the name {name!r}")
        seen[name] = signature.name


def select(signatures: list[GeneSignature], names: Sequence[str] | None) -> list[GeneSignature]:
    """The signatures named (as defined, or by artifact name), in file order; every signature when ``names`` is
    None. ``ALL`` is a name like any other (the built-in set's signature of all 21 metagene genes)."""
    if names is None:
        return list(signatures)
    if isinstance(names, str):
        raise TypeError("select() takes a sequence of names, not one string")
    wanted = set(names)
    chosen = [s for s in signatures if wanted & {s.name, artifact_name(s.name)}]
    found = {n for s in chosen for n in (s.name, artifact_name(s.name))}
    unknown = [n for n in names if n not in found]
    if unknown:
        known = ", ".join(s.name for s in signatures[:10])
        raise DataError(
            f"no signature named {', '.join(map(repr, unknown))}; known: {known}{'...' if len(signatures) > 10 else ''}"
        )
    return chosen


def match(
    signature: GeneSignature, available: list[str], min_genes: int, min_coverage: float = 0.0
) -> MatchedSignature:
    """Which of the signature's genes the data has; a signature with fewer than ``min_genes`` of them, or a smaller
    share than ``min_coverage``, is skipped (a 200-gene set with 2 genes in the data is not that signature)."""
    have = set(available)
    present = [g for g in signature.genes if g in have]
    missing = [g for g in signature.genes if g not in have]
    coverage = len(present) / len(signature.genes) if signature.genes else 0.0
    reason = None
    if len(present) < min_genes or coverage < min_coverage:
        rule = f"minimum {min_genes} genes" + (f" and {min_coverage:.0%} of the signature" if min_coverage else "")
        reason = f"only {len(present)} of {len(signature.genes)} genes ({coverage:.0%}) are in the data ({rule})" + (
            f"; missing {', '.join(missing[:10])}{'...' if len(missing) > 10 else ''}" if missing else ""
        )
    return MatchedSignature(signature, artifact_name(signature.name), present, missing, reason)
