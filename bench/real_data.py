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
2. **Hallmark over one cohort with gene symbols**: ``run-local`` with the 50 Hallmark sets, threshold only and then
   with the random-signature null and FDR, and how many sets pass each way.

Usage: python bench/real_data.py [--cohorts gse1992,gse3143,gse4335,DLBCL,DBCD] [--top-genes 200]
                                 [--cv-repeats 2] [--l2 1.0] [--hallmark gse3143] [--replicates 100]
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
    from genesig.pipeline.cohort import CohortColumns, read_cohort
    from genesig.pipeline.metrics import discrimination
    from genesig.pipeline.model import fit_preprocessing
    from genesig.pipeline.settings import TrainSettings
    from genesig.pipeline.signatures import GeneSignature, match
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


def hallmark(name: str, replicates: int, cv_repeats: int, work: Path) -> dict[str, Any]:
    """The 50 Hallmark sets over one cohort with gene symbols: passed by threshold alone, and with the null and FDR."""
    from genesig.pipeline.run import RunOptions, run_local
    from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings

    path = work / f"{name}.csv"
    survset_cohort(name).to_csv(path, index=False)
    rows: dict[str, Any] = {"cohort": name, "signature_sets": HALLMARK.name, "replicates": replicates}
    for label, gate in (
        ("threshold_only", GateSettings(null_replicates=0)),
        ("null_and_fdr", GateSettings(null_replicates=replicates)),
    ):
        started = time.perf_counter()
        summary = run_local(
            RunOptions(
                data=path,
                workdir=work / f"hallmark-{label}",
                signatures_file=HALLMARK,
                cohort=CohortSettings(time_column=TIME_COLUMN, values="log"),
                train=TrainSettings(cv_repeats=cv_repeats),
                gate=gate,
                jobs=0,
            )
        )
        results = summary.results
        rows[label] = {
            "evaluated": sum(r.status == "done" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "passed": sorted(r.signature for r in results if r.passed),
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows[label]["passed_count"] = len(rows[label]["passed"])
        if label == "null_and_fdr":
            done = [r for r in results if r.status == "done" and r.p_value is not None]
            rows[label]["smallest_q"] = sorted(
                (round(r.q_value or 1.0, 4), r.signature) for r in done
            )[:5]  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohorts", default=",".join(COHORTS))
    parser.add_argument("--top-genes", type=int, default=200)
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument("--l2", type=float, default=1.0, help="the fixed penalty of the lifelines comparison")
    parser.add_argument("--hallmark", default="gse3143", help="the cohort of the Hallmark run ('' to skip it)")
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "real_data.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="genesig-real-data-") as tmp:
        rows = []
        for name in filter(None, args.cohorts.split(",")):
            rows.append(agreement(name, args.top_genes, args.cv_repeats, args.l2, Path(tmp)))
            logger.warning("%s", rows[-1])
        hallmark_rows = hallmark(args.hallmark, args.replicates, args.cv_repeats, Path(tmp)) if args.hallmark else None
    result = {"agreement": rows, "hallmark": hallmark_rows, "top_genes": args.top_genes, "cv_repeats": args.cv_repeats}
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
    if hallmark_rows:
        lines.append(
            f"Hallmark on {hallmark_rows['cohort']}: passed {hallmark_rows['threshold_only']['passed_count']} by "
            f"threshold alone, {hallmark_rows['null_and_fdr']['passed_count']} with the null (R = "
            f"{args.replicates}) and FDR"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
