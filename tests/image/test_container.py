"""The built images run as SageMaker runs them: `docker run IMAGE serve` with /opt/ml/models mounted read-only and
SageMaker's variables, and `docker run IMAGE train` / `genesig step ...` with SageMaker's /opt/ml layout."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genesig.artifact import extract_artifact, load_model_dir, read_artifact
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient
from genesig.container_server import ContainerServer
from genesig.local_endpoint import runtime_client, start_local_endpoint
from genesig.pipeline.cohort import read_cohort
from genesig.pipeline.sagemaker.aws import client, read_object, s3_join
from genesig.pipeline.sagemaker.executions import start_set, upsert_pipeline
from genesig.pipeline.sagemaker.pipeline import PipelineConfig
from genesig.pipeline.sagemaker.run_here import DockerRunner, LocalPipelineRunner
from genesig.pipeline.signatures import default_signatures, match
from genesig.pipeline.steps import preprocess, save_prepared
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort
from genesig.selfcheck import GENES

from .conftest import REPO, Images, docker

MB = 1_000_000


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("opt-ml-models")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def serving(images: Images, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerServer]:
    log = tmp_path_factory.mktemp("serving") / "container.log"
    with ContainerServer(images.serve, models_dir, log_path=log) as server:
        yield server


def place_model(models_dir: Path, folder: str, **kwargs: Any) -> str:
    """An extracted artifact in the host folder; returns the path the container sees."""
    archive = write_synthetic_artifact(
        models_dir.parent / f"prefix-{folder}", folder, kwargs.pop("genes", GENES), **kwargs
    )
    extract_artifact(archive, models_dir / folder / "model")
    (models_dir / folder).chmod(0o755)
    return f"/opt/ml/models/{folder}/model"


def containers() -> set[str]:
    return set(docker("ps", "--all", "--format", "{{.Names}} {{.Image}}").stdout.splitlines())


# --- the images themselves ---------------------------------------------------------------------------------


def test_serving_image_is_small_and_has_no_torch(images: Images) -> None:
    assert images.sizes_mb[images.serve] <= 600, images.sizes_mb
    probe = docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        images.serve,
        "-c",
        "import importlib.util, sys; print(importlib.util.find_spec('torch') is None, sys.version_info[:3])",
    )
    assert probe.stdout.startswith("True"), probe.stdout
    trained = docker(
        "run", "--rm", "--entrypoint", "python", images.train, "-c", "import torch; print(torch.__version__)"
    )
    assert trained.stdout.strip().endswith("+cpu")


def test_serving_image_user_has_its_own_group(images: Images) -> None:
    assert docker("run", "--rm", "--entrypoint", "id", images.serve).stdout.split()[:2] == [
        "uid=1000(model-server)",
        "gid=1000(model-server)",
    ]


def test_build_is_quiet_pinned_and_sends_a_small_context(images: Images) -> None:
    log = images.build_log
    assert "debconf: unable to initialize frontend" not in log, "apt runs non-interactively"
    assert "useradd warning" not in log
    assert "Installing build dependencies" not in log, "no build isolation fetching unpinned setuptools/wheel"
    sizes = [
        float(m) * {"kB": 1e-3, "MB": 1, "GB": 1e3}[u]
        for m, u in re.findall(r"build context to Docker daemon\s+([\d.]+)(kB|MB|GB)", log)
    ]
    assert sizes, "the classic builder reports the context it sends"
    wheel = max((p.stat().st_size for p in (REPO / "container/image/inputs").glob("*.whl")), default=0) / MB
    assert max(sizes) < 250, f"context {max(sizes)} MB: .dockerignore keeps .venv and .git out ({wheel=})"


# --- serving as SageMaker runs it ------------------------------------------------------------------------------


def test_selfcheck_against_the_container(serving: ContainerServer, models_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "selfcheck", "--url", serving.url, "--models-dir", str(models_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"self-check: \d+ passed, 0 failed", result.stderr)


def test_mme_contract_from_the_host(serving: ContainerServer, models_dir: Path) -> None:
    url = place_model(models_dir, "contract", seed=3)
    with ModelServerClient(serving.url) as client:
        assert client.load("c0ffee", url).status == 200
        assert client.load("c0ffee", url).status == 409
        described = client.describe("c0ffee").json()
        assert described["genesig"]["genes"] == GENES
        rows = client.invoke("c0ffee", b"Case_ID,GDF15,HPGD,LRIG1\nP1,11.5,0,3.2\n", "text/csv").json()
        assert rows["predictions"][0]["id"] == "P1"
        missing = client.invoke("c0ffee", json.dumps([{"LRIG1": 1.0}]).encode())
        assert missing.status == 400 and missing.json()["detail"]["missing_genes"] == ["HPGD", "GDF15"]
        assert client.load("nothere", "/opt/ml/models/absent/model").status == 404
        assert client.unload("c0ffee").status == 200
        assert client.invoke("c0ffee", b'{"inputs": [[1, 2, 3]]}').status == 404


def test_an_unreadable_model_folder_is_a_clear_403(serving: ContainerServer, models_dir: Path) -> None:
    url = place_model(models_dir, "private", seed=4)
    (models_dir / "private" / "model").chmod(0o700)  # owned by this (host) user; the container runs as uid 1000
    with ModelServerClient(serving.url) as client:
        response = client.load("private", url)
        assert response.status == 403, response.body
        message = response.json()["message"]
        assert "may not read /opt/ml/models/private/model" in message and "chmod -R a+rX" in message
        assert client.describe("private").status == 404, "nothing registered"
        assert client.request("GET", "/ping").status == 200, "the server keeps serving"


def test_memory_limit_of_the_container_drives_admission_and_the_jvm(
    images: Images, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Under --memory the 507 comes from the container's cgroup, and the JVM's heap fits inside the limit."""
    limit_mb = 1024
    models = tmp_path_factory.mktemp("big-models")
    models.chmod(0o755)
    genes = [f"G{i}" for i in range(4000)]
    server = ContainerServer(images.serve, models, memory_mb=limit_mb, env={"GENESIG_MEMORY_RESERVE_MB": "150"})
    with server, ModelServerClient(server.url) as client:
        answers = []
        for i in range(200):
            url = place_model(models, f"big{i}", genes=genes, hidden_units=256, seed=i)
            response = client.load(f"big{i}", url)
            answers.append(response.status)
            if response.status == 507:
                detail = response.json()["detail"]
                assert detail["source"].startswith("cgroup"), detail
                break
            assert response.status == 200, response.body
        assert answers[-1] == 507 and answers.count(200) >= 1, answers
        assert client.invoke("big0", json.dumps({"inputs": [[1.0] * len(genes)]}).encode()).status == 200
        find_jvm = (
            "import psutil; print(' '.join(next(p.info['cmdline'] for p in psutil.process_iter(['cmdline'])"
            " if 'com.amazonaws.ml.mms.ModelServer' in (p.info['cmdline'] or []))))"
        )
        jvm_args = docker("exec", server.name, "python", "-c", find_jvm).stdout
        options = [a for a in jvm_args.split() if a.startswith("-XX:")]
        flags = docker("exec", server.name, "java", *options, "-XX:+PrintFlagsFinal", "-version").stdout
        max_heap = int(re.search(r"MaxHeapSize\s*=\s*(\d+)", flags).group(1))  # type: ignore[union-attr]
        assert max_heap <= 0.25 * limit_mb * 2**20, (
            f"the JVM's heap ({max_heap} bytes) must fit the {limit_mb} MB limit"
        )


def test_read_only_root_tmpfs_and_any_user(images: Images, models_dir: Path) -> None:
    url = place_model(models_dir, "readonly", seed=6)
    extra = ["--read-only", "--tmpfs", "/tmp:rw,exec,size=256m", "--user", "4242:4242"]
    with ContainerServer(images.serve, models_dir, extra_args=extra) as server, ModelServerClient(server.url) as client:
        assert client.load("ro", url).status == 200
        assert client.invoke("ro", b'{"inputs": [[1, 2, 3]]}').status == 200
        assert client.unload("ro").status == 200


def test_docker_stop_exits_zero_and_leaves_nothing(images: Images, models_dir: Path, tmp_path: Path) -> None:
    url = place_model(models_dir, "stopme", seed=7)
    server = ContainerServer(images.serve, models_dir, log_path=tmp_path / "stop.log").start()
    with ModelServerClient(server.url) as client:
        assert client.load("stopme", url).status == 200
        assert client.invoke("stopme", b'{"inputs": [[1, 2, 3]]}').status == 200
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    assert server.exit_code == 0, (tmp_path / "stop.log").read_text()[-2000:]
    assert took < 20, f"docker stop took {took:.1f} s: the server did not stop on SIGTERM"
    assert re.search(r"stopped \d+ child processes", (tmp_path / "stop.log").read_text())
    assert server.name not in docker("ps", "--all", "--format", "{{.Names}}").stdout


# --- the training image under SageMaker's job contracts ---------------------------------------------------------


def test_training_job_entry_writes_a_verified_artifact(images: Images, tmp_path: Path) -> None:
    """SageMaker's training contract: the `prepared` channel and hyperparameters in, /opt/ml/model out (no AWS call:
    the RegisterModel job gives the artifact its version)."""
    root = tmp_path / "opt-ml"
    data = write_synthetic_cohort(tmp_path / "cohort.csv", default_signatures(), SyntheticSpec(seed=5))
    cohort = read_cohort(data)
    chosen = next(s for s in default_signatures() if s.name == "metagene_19")
    save_prepared(preprocess(cohort, match(chosen, cohort.candidate_genes(), 2)), root / "input/data/prepared")
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps({"model": "linear", "cv_repeats": "2"}))
    result = docker("run", "--rm", "--volume", f"{root}:/opt/ml", images.train, "train", check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    model = load_model_dir(root / "model")
    assert model.manifest.name == "metagene_19" and model.manifest.version == 1


def test_processing_entry_points_the_pipeline_uses(images: Images, tmp_path: Path) -> None:
    """preprocess and evaluate as the pipeline's processing jobs run them (inputs and outputs under
    /opt/ml/processing), on Debian 12's Python 3.11.2 in the stand-in base: artifact extraction included."""
    processing = tmp_path / "processing"
    data = processing / "input" / "data"
    data.mkdir(parents=True)
    write_synthetic_cohort(data / "cohort.csv", default_signatures(), SyntheticSpec(seed=8))
    mount = ["--volume", f"{processing}:/opt/ml/processing"]

    def step(*args: str) -> subprocess.CompletedProcess[str]:
        return docker("run", "--rm", *mount, "--entrypoint", "genesig", images.train, "step", *args, check=False)

    prepared = step(
        "preprocess",
        "--data",
        "/opt/ml/processing/input/data",
        "--signature",
        "metagene_19",
        "--out",
        "/opt/ml/processing/prepared",
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    trained = step(
        "train",
        "--prepared",
        "/opt/ml/processing/prepared",
        "--out",
        "/opt/ml/processing/model",
        "--cv-repeats",
        "2",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluated = step(
        "evaluate",
        "--prepared",
        "/opt/ml/processing/prepared",
        "--model",
        "/opt/ml/processing/model",
        "--out",
        "/opt/ml/processing/evaluation",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    evaluation = json.loads((processing / "evaluation" / "evaluation.json").read_text())
    assert evaluation["name"] == "metagene_19" and 0 <= evaluation["test"]["value"] <= 1
    assert read_artifact(next((processing / "model").glob("*.tar.gz"))).manifest.version == 1


def test_the_signature_set_run_in_the_training_image(
    images: Images,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """Its three jobs created through the SageMaker API (moto behind the strict layer) and run in the training
    image with SageMaker's layout: shards on two training instances, the report, the registrations."""
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    sm, s3 = client("sagemaker"), client("s3")
    bucket = f"img{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    config = PipelineConfig(
        role_arn="arn:aws:iam::123456789012:role/genesig",
        bucket=bucket,
        training_image_uri=images.train,
        serving_image_uri=images.serve,
    )
    upsert_pipeline(sm, s3, config, default_signatures())
    # A signature that beats random sets of its size for sure: with only the built-ins' 21 genes, 39% of random
    # 3-gene sets hold one of metagene_19's, and its true p is far above what the run's FDR passes.
    spec = SyntheticSpec(seed=3, n_patients=200, planted={"metagene_19": 3.0}, background_genes=500)
    cohort = write_synthetic_cohort(tmp_path / "cohort.csv", default_signatures(), spec)
    s3.put_object(Bucket=bucket, Key="genesig/data/cohort.csv", Body=cohort.read_bytes())
    arn = start_set(sm, config.set_name, {"ShardCount": "2", "ModelApprovalStatus": "Approved"})
    record = LocalPipelineRunner(sm, s3, DockerRunner(), tmp_path / "runs").run(arn)
    assert record.status == "Succeeded", [(s.name, s.failure_reason) for s in record.steps]
    report = json.loads(
        read_object(s3, s3_join(config.base_uri, "runs", arn.rsplit("/", 1)[1], "report", "report.json"))
    )
    rows = {r["signature"]: r for r in report["signatures"]}
    assert len(rows) == len(default_signatures())
    assert (
        rows["metagene_19"]["outcome"] == "passed"
        and rows["metagene_19"]["deployed"] == "genesig/mme/metagene_19-v1.tar.gz"
    )


# --- the local endpoint and the demo on the image ------------------------------------------------------------------


def test_local_endpoint_runs_the_image_as_the_model_server(images: Images, tmp_path: Path) -> None:
    archive = write_synthetic_artifact(tmp_path / "prefix", "metagene_19", GENES, seed=9)
    before = containers()
    endpoint, url = start_local_endpoint(tmp_path / "prefix", None, tmp_path, image=images.serve, timeout_s=120)
    try:
        answer = runtime_client(url).invoke_endpoint(
            EndpointName="local",
            TargetModel=archive.name,
            ContentType="text/csv",
            Body=b"Case_ID,LRIG1,HPGD,GDF15\nP1,3.2,0,11.5\n",
        )
        assert json.loads(answer["Body"].read())["predictions"][0]["id"] == "P1"
        [started] = containers() - before
        assert started.endswith(images.serve), "the model server is the image"
    finally:
        endpoint.send_signal(signal.SIGTERM)
        endpoint.wait(timeout=90)
    assert endpoint.returncode == 0
    assert containers() == before, "the container is stopped and removed"


def test_demo_on_the_image(images: Images, tmp_path: Path) -> None:
    before = containers()
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "demo", "--image", images.serve, "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "invoked through the local MME endpoint" in result.stdout
    assert containers() == before
