"""Real-data benchmark: genome-wide expression cohorts with real follow-up, from PyPI's SurvSet.

SurvSet (GPL-3; a test and benchmark dependency only, never a runtime dependency or in an image) ships survival
datasets as pickled tables: ``pid``, ``event``, ``time``, then ``num_*`` (numeric) and ``fac_*`` (categorical)
columns. In the expression cohorts the genes are ``num_HS_<SYMBOL>`` (gse1992, gse3143, gse4335: Affymetrix or
two-colour arrays with gene symbols) or ``num_gene_<N>`` (DLBCL, DBCD: anonymous); other ``num_`` and the ``fac_``
columns are clinical and left out. Every cohort is already on a log scale (log-ratios, log2 intensities), so it is
read with ``--values log``.

1. **Agreement with lifelines.** Per cohort, the top-variance genes (unsupervised: the variance over all patients,
   never the outcome) as one signature, through the pipeline's own split and repeated stratified CV with a fixed
   ridge penalty; on the same folds, with the same fold-fitted standardisation, lifelines' ``CoxPHFitter`` with the
   same penalty (lifelines penalises ``n * penalizer / 2 * |b|^2`` against the summed log partial likelihood, this
   pipeline ``l2 / 2 * |b|^2`` against the mean per event: ``penalizer = l2 * events / n``). Both scored with the
   same Harrell's C. Also the pipeline's CV C-index with its penalty chosen by the nested inner CV.
2. **The gate on real cohorts** (``bench/gates.py``: the gate's own code up to the verdict): the 50 Hallmark sets
   and the published 70-gene MammaPrint signature (van 't Veer et al., Nature 2002; its gene symbols as SurvSet's
   ``nki70`` names them) over the breast cohorts with gene symbols; 50 co-expression modules over DLBCL, whose genes
   are anonymous (no Hallmark set can be placed there); MammaPrint alone on ``nki70`` (144 patients, the signature's
   70 probes and nothing else: random sets of its size would be itself, so the competitive test does not apply).
   How many pass the threshold alone, the default gate (threshold and the self-contained test) and the competitive
   gate, and where the published signature stands in each.

Usage: python bench/real_data.py [--cohorts gse1992,gse3143,gse4335,DLBCL,DBCD] [--top-genes 200] [--cv-repeats 2]
                                 [--l2 1.0] [--gates gse1992,gse3143,gse4335,DLBCL,nki70] [--gate-cv-repeats 5]
Not a test: it measures (tests/pipeline/test_real_data.py checks the agreement on one cohort).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genesig.pipeline.cohort import CohortColumns, read_cohort
from genesig.pipeline.settings import TrainSettings
from genesig.pipeline.signatures import GeneSignature, read_signatures

logger = logging.getLogger("bench.real_data")
BENCH_DIR = Path(__file__).resolve().parent
HALLMARK = BENCH_DIR.parent.parent / "shared" / "data" / "msigdb-hallmark-v7.0.gmt"
COHORTS = ("gse1992", "gse3143", "gse4335", "DLBCL", "DBCD")
TIME_COLUMN = "time"


def survset_cohort(name: str) -> pd.DataFrame:
    """One SurvSet dataset in the pipeline's layout: Case_ID, SurvivalStatus, time and one column per gene (symbol,
    or ``gene_<N>`` where the dataset has no symbols)."""
    from SurvSet.data import SurvLoader

    table = SurvLoader().load_dataset(name)["df"]
    genes = {c: c.removeprefix("num_HS_") for c in table.columns if c.startswith("num_HS_")}
    genes |= {c: c.removeprefix("num_") for c in table.columns if c.startswith("num_gene_")}
    if not genes:
        raise SystemExit(f"SurvSet dataset {name} has no expression columns (num_HS_* or num_gene_*)")
    frame = table[list(genes)].rename(columns=genes).astype(np.float64)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    frame.insert(0, "Case_ID", table["pid"].astype(str))
    frame["SurvivalStatus"] = table["event"].astype(int)
    frame[TIME_COLUMN] = table["time"].astype(np.float64)
    return frame


def top_variance_genes(frame: pd.DataFrame, count: int) -> list[str]:
    genes = frame.columns.difference(["Case_ID", "SurvivalStatus", TIME_COLUMN])
    return list(frame[genes].var().sort_values(ascending=False, kind="stable").index[:count])


def agreement(name: str, top_genes: int, cv_repeats: int, l2: float, work: Path) -> dict[str, Any]:
    """The top-variance signature's CV C-index: this pipeline (fixed penalty, then tuned) and lifelines, same folds."""
    from lifelines import CoxPHFitter
    from sklearn.model_selection import RepeatedStratifiedKFold

    from genesig.artifact.model import apply_preprocessing
    from genesig.pipeline.metrics import discrimination
    from genesig.pipeline.model import fit_preprocessing
    from genesig.pipeline.signatures import match
    from genesig.pipeline.steps import cross_validate, preprocess

    frame = survset_cohort(name)
    path = work / f"{name}.csv"
    frame.to_csv(path, index=False)
    cohort = read_cohort(path, CohortColumns(time=TIME_COLUMN, values="log"))
    genes = top_variance_genes(frame, top_genes)
    signature = GeneSignature(f"{name}_top{top_genes}", tuple(genes))
    fixed = TrainSettings(l2=l2, cv_repeats=cv_repeats)
    prepared = preprocess(cohort, match(signature, cohort.candidate_genes(), 2), settings=fixed)
    started = time.perf_counter()
    ours = cross_validate(prepared, fixed)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    tuned = cross_validate(prepared, TrainSettings(cv_repeats=cv_repeats))
    tuned_s = time.perf_counter() - started

    side = prepared.train
    assert side.time is not None
    splitter = RepeatedStratifiedKFold(n_splits=ours.folds, n_repeats=cv_repeats, random_state=prepared.seed)
    reference = []
    started = time.perf_counter()
    for fit_rows, score_rows in splitter.split(side.raw, side.event):
        scaling = fit_preprocessing(side.raw[fit_rows], log1p=False)
        z_fit = apply_preprocessing(scaling, genes, side.raw[fit_rows])
        z_score = apply_preprocessing(scaling, genes, side.raw[score_rows])
        events = int(side.event[fit_rows].sum())
        data = pd.DataFrame(z_fit, columns=[f"g{i}" for i in range(len(genes))])
        data["T"], data["E"] = side.time[fit_rows], side.event[fit_rows].astype(int)
        fitter = CoxPHFitter(penalizer=l2 * events / len(fit_rows)).fit(data, duration_col="T", event_col="E")
        risk = z_score @ fitter.params_.to_numpy()
        reference.append(discrimination(event=side.event[score_rows], time=side.time[score_rows], risk_score=risk))
    lifelines_s = time.perf_counter() - started
    return {
        "cohort": name,
        "patients": cohort.n,
        "events": int(cohort.event.sum()),
        "genes_in_cohort": len(cohort.candidate_genes()),
        "signature_genes": len(genes),
        "folds": f"{ours.folds} x {cv_repeats}",
        "l2": l2,
        "genesig_cv_c_index": round(ours.mean, 4),
        "lifelines_cv_c_index": round(float(np.mean(reference)), 4),
        "difference": round(ours.mean - float(np.mean(reference)), 4),
        "largest_fold_difference": round(float(np.max(np.abs(np.subtract(ours.values, reference)))), 4),
        "genesig_tuned_cv_c_index": round(tuned.mean, 4),
        "tuned_penalties": sorted(set(tuned.penalties)),
        "seconds": {"genesig": round(ours_s, 2), "tuned": round(tuned_s, 2), "lifelines": round(lifelines_s, 2)},
    }


def co_expression_modules(frame: pd.DataFrame, count: int, seed: int = 0) -> list[GeneSignature]:
    """``count`` gene sets as coherent as pathways where a cohort has no gene names: a seed gene and its most
    correlated genes (5 to 50 of them, log-uniform), among a seeded sample of 3,000 of the cohort's genes."""
    genes = [c for c in frame.columns if c not in ("Case_ID", "SurvivalStatus", TIME_COLUMN)]
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(genes), size=min(3000, len(genes)), replace=False)
    correlation = np.corrcoef(frame[genes].to_numpy(dtype=float)[:, pool].T)
    modules = []
    for i, seed_gene in enumerate(rng.choice(len(pool), size=count, replace=False)):
        size = int(round(np.exp(rng.uniform(np.log(5), np.log(50)))))
        nearest = np.argsort(-correlation[seed_gene], kind="stable")[:size]
        modules.append(GeneSignature(f"module_{i:03d}", tuple(genes[pool[j]] for j in nearest)))
    return modules


def mammaprint() -> GeneSignature:
    """The 70-gene MammaPrint signature by gene symbol (SurvSet's ``nki70`` columns: probes named by accession and
    repeated probes of one gene left as one symbol)."""
    from SurvSet.data import SurvLoader

    table = SurvLoader().load_dataset("nki70")["df"]
    probes = [c.removeprefix("num_") for c in table.columns if c.startswith("num_") and c != "num_Age"]
    symbols = [p.rsplit("_", 1)[0] if p.rsplit("_", 1)[-1].isdigit() and "_" in p else p for p in probes]
    named = [s for s in dict.fromkeys(symbols) if not s.startswith(("Contig", "AA", "NM_", "LOC"))]
    return GeneSignature("MAMMAPRINT_70", tuple(named), "van 't Veer et al. 2002 (SurvSet nki70)")


def nki70_cohort() -> pd.DataFrame:
    """SurvSet's ``nki70``: 144 patients and the 70 MammaPrint probes (log ratios), in the pipeline's layout."""
    from SurvSet.data import SurvLoader

    table = SurvLoader().load_dataset("nki70")["df"]
    probes = [c for c in table.columns if c.startswith("num_") and c != "num_Age"]
    frame = table[probes].rename(columns=lambda c: c.removeprefix("num_")).astype(np.float64)
    frame.insert(0, "Case_ID", table["pid"].astype(str))
    frame["SurvivalStatus"] = table["event"].astype(int)
    frame[TIME_COLUMN] = table["time"].astype(np.float64)
    return frame


def gates_on(name: str, cv_repeats: int, work: Path) -> dict[str, Any]:
    """One cohort's gene sets through the gate: how many pass each gate, and the published signature's standing."""
    from gates import decide_gates, gate_settings

    if name == "nki70":
        frame, signatures, kind = nki70_cohort(), [], "MammaPrint alone"
        probes = [c for c in frame.columns if c not in ("Case_ID", "SurvivalStatus", TIME_COLUMN)]
        signatures = [GeneSignature("MAMMAPRINT_70", tuple(probes), "van 't Veer et al. 2002")]
    else:
        frame = survset_cohort(name)
        if any(c.startswith("gene_") for c in frame.columns):
            kind, signatures = "50 co-expression modules", co_expression_modules(frame, 50)
        else:
            kind, signatures = "50 Hallmark sets and MammaPrint", [*read_signatures(HALLMARK), mammaprint()]
    path = work / f"gates-{name}.csv"
    frame.to_csv(path, index=False)
    cohort = read_cohort(path, CohortColumns(time=TIME_COLUMN, values="log"))
    decided = decide_gates(signatures, cohort, TrainSettings(cv_repeats=cv_repeats), gate_settings())
    out: dict[str, Any] = {
        "cohort": name, "sets": kind, "patients": cohort.n, "events": int(cohort.event.sum()),
        "genes": len(cohort.candidate_genes()),
        "evaluated": sum(r.evaluated for r in decided.gates["default"]),
        "skipped": sum(r.outcome == "skipped" for r in decided.gates["default"]),
        "seconds": {"evaluate": round(decided.evaluate_s, 1), "competitive": round(decided.competitive_s, 1)},
    }  # fmt: skip
    for gate, rows in decided.gates.items():
        out[gate] = {"passed": sum(r.passed for r in rows), "names": sorted(r.signature for r in rows if r.passed)}
    default = decided.gates["default"]
    out["best_by_q"] = [
        {"signature": r.signature, "genes": len(r.genes), "cv_mean": round(r.cv_mean or 0, 3),
         "cv_pooled": round(r.cv_pooled or 0, 3), "p": r.p_value, "q": r.q_value, "competitive": r.competitive,
         "competitive_p": r.competitive_p, "competitive_q": r.competitive_q}
        for r in sorted((r for r in default if r.q_value is not None), key=lambda r: r.q_value or 1.0)[:8]
    ]  # fmt: skip
    published = next((r for r in default if r.signature == "MAMMAPRINT_70"), None)
    if published is not None:
        out["published"] = {
            "signature": published.signature, "genes": len(published.genes),
            "status": "done" if published.evaluated else str(published.outcome),
            "reason": published.reason, "cv_mean": published.cv_mean, "cv_pooled": published.cv_pooled,
            "p": published.p_value, "q": published.q_value, "competitive": published.competitive,
            "competitive_p": published.competitive_p, "competitive_q": published.competitive_q,
            "outcome": published.outcome,
            "outcome_competitive_gate": next(
                r.outcome for r in decided.gates["competitive_gate"] if r.signature == "MAMMAPRINT_70"
            ),
        }  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohorts", default=",".join(COHORTS), help="the lifelines comparison's cohorts ('' skips)")
    parser.add_argument("--top-genes", type=int, default=200)
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument("--l2", type=float, default=1.0, help="the fixed penalty of the lifelines comparison")
    parser.add_argument("--gates", default="gse1992,gse3143,gse4335,DLBCL,nki70", help="cohorts of the gate runs")
    parser.add_argument("--gate-cv-repeats", type=int, default=5, help="as run-local's default")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "real_data.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="genesig-real-data-") as tmp:
        rows = []
        for name in filter(None, args.cohorts.split(",")):
            rows.append(agreement(name, args.top_genes, args.cv_repeats, args.l2, Path(tmp)))
            logger.warning("%s", rows[-1])
        gate_rows = []
        for name in filter(None, args.gates.split(",")):
            gate_rows.append(gates_on(name, args.gate_cv_repeats, Path(tmp)))
            logger.warning("%s", {k: v for k, v in gate_rows[-1].items() if k != "best_by_q"})
    result = {"agreement": rows, "gates": gate_rows, "top_genes": args.top_genes, "cv_repeats": args.cv_repeats,
              "gate_cv_repeats": args.gate_cv_repeats}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| cohort | patients | events | genes | CV C-index, genesig | lifelines | difference | tuned penalty |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['cohort']} | {r['patients']} | {r['events']} | {r['genes_in_cohort']} | {r['genesig_cv_c_index']} | "
        f"{r['lifelines_cv_c_index']} | {r['difference']:+.4f} | {r['genesig_tuned_cv_c_index']} |"
        for r in rows
    ]
    lines += ["", "| cohort | sets (evaluated) | threshold only | default gate | competitive gate | MammaPrint |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for g in gate_rows:
        published = g.get("published")
        standing = "-" if published is None else (
            f"{published['outcome']} (p {published['p']:.2g}, q {published['q']:.2g}; vs random: "
            + (f"p {published['competitive_p']:.2g}" if published["competitive_p"] is not None
               else published["competitive"] or "off") + ")"
        )  # fmt: skip
        lines.append(f"| {g['cohort']} | {g['sets']} ({g['evaluated']}) | {g['threshold_only']['passed']} | "
                     f"{g['default']['passed']} | {g['competitive_gate']['passed']} | {standing} |")  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
