# genesig-mme serving image: a SageMaker Multi-Model Endpoint container.
# nginx (public port) -> Multi Model Server, started by the SageMaker Inference Toolkit,
# -> one light numpy backend per loaded signature model; the Python gateway handles loads.
# Build: ./build_and_push.sh IMAGE_NAME [TAG]   (linux/amd64)

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- build stage: resolve and install Python packages into a venv; nothing from here but the venv ships -----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU build of torch from PyTorch's own index (PyPI's default wheel carries several GB of CUDA).
# Serving backends never import it; it is here for the pipeline's training job, which runs this image.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
# Exact versions of the serve and train extras first (their own layer, cached across code changes), then the
# project without resolving again. The pipeline's processing and training jobs run this same image.
COPY container/requirements.lock ./container/requirements.lock
RUN pip install --requirement container/requirements.lock
COPY pyproject.toml README.md ./
COPY genesig ./genesig
COPY container ./container
COPY pipeline ./pipeline
# A regular (non-editable) install: the final image needs no source tree.
RUN pip install --no-deps --no-build-isolation .

# --- final stage: runtime only (no compilers, no editors, no pip cache) -------------------------------
FROM ${PYTHON_IMAGE}

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="genesig-mme" \
      org.opencontainers.image.description="One survival model per gene signature behind one SageMaker MME"

# Debian stable's security updates replace package versions, so pinning them would break rebuilds;
# the base image tag is pinned instead. The man folder must exist for the JRE's post-install script on slim.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless nginx-light \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 1000 --create-home --home-dir /home/model-server model-server \
 && mkdir -p /opt/ml/models \
 && chown model-server /opt/ml/models

COPY --from=build /opt/venv /opt/venv

# PATH: the venv's python and the genesig entry point.
# PYTHONUNBUFFERED: log lines reach CloudWatch as they are written.
# PYTHONDONTWRITEBYTECODE: no .pyc writes into the read-only venv at run time.
# GENESIG_STATE_DIR: MMS config, logs, pid file and backend sockets (the toolkit would use /etc and /tmp).
# GENESIG_FRONT: nginx owns port 8080 so invocations bypass Python; loads go through our gateway.
# SAGEMAKER_MULTI_MODEL: SageMaker sets it for MME; set here too so `docker run IMAGE` behaves the same.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GENESIG_STATE_DIR=/tmp/genesig-serve \
    GENESIG_FRONT=nginx \
    SAGEMAKER_MULTI_MODEL=true

# Non-root: SageMaker mounts /opt/ml/models readable by the container user. Run with --user root if a
# platform mounts it owner-only.
USER 1000
WORKDIR /home/model-server
EXPOSE 8080

# SageMaker starts the container as `docker run IMAGE serve`.
ENTRYPOINT ["genesig"]
CMD ["serve"]
