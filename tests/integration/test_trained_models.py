"""Models trained by run-local, served by the real model server, give exactly the training-time predictions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genesig.artifact import extract_artifact
from genesig.client import ModelServerClient
from genesig.pipeline.run import RunOptions, run_local
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

from .conftest import ServerFactory, opaque


def test_served_predictions_equal_evaluation_predictions_exactly(start_server: ServerFactory, tmp_path: Path) -> None:
    data = write_synthetic_cohort(
        tmp_path / "cohort.csv",
        default_signatures(),
        SyntheticSpec(seed=7, planted={"metagene_19": 2.0, "metagene_10": 1.5}),
    )
    summary = run_local(
        RunOptions(
            data=data,
            workdir=tmp_path / "w",
            approve=True,
            train=TrainSettings(cv_repeats=2),
            gate=GateSettings(threshold=0.5, permutations=0, competitive="off"),  # serving is the subject
        )
    )
    deployed = [r for r in summary.results if r.deployed]
    assert deployed, "at least one signature passed and was deployed"
    cohort_text = data.read_text().splitlines()
    header = cohort_text[0].split(",")
    by_id = {line.split(",")[0]: line for line in cohort_text[1:]}

    server = start_server()
    client = ModelServerClient(server.url)
    for result in deployed:
        assert result.deployed is not None
        archive = tmp_path / "w" / "mme-prefix" / result.deployed
        name = opaque(result.deployed)
        model_dir = extract_artifact(archive, tmp_path / "cache" / name / "model")
        assert client.load(name, str(model_dir)).status == 200
        expected = pd.read_csv(
            tmp_path / "w" / "signatures" / result.artifact_name / "evaluation" / "predictions.csv",
            dtype={"Case_ID": str},
            float_precision="round_trip",
        )
        # The raw text of the held-out patients' rows, as a client would send it (all columns, any order).
        body = (",".join(header) + "\n" + "\n".join(by_id[i] for i in expected["Case_ID"]) + "\n").encode()
        response = client.invoke(name, body, "text/csv")
        assert response.status == 200, response.body
        served = response.json()["predictions"]
        assert [p["id"] for p in served] == expected["Case_ID"].tolist()
        assert [p["probability"] for p in served] == expected["probability"].tolist(), "bit-for-bit equal"
        assert [p["risk_group"] for p in served] == expected["risk_group"].tolist()
        assert client.unload(name).status == 200
