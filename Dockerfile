# genesig-mme images, two targets from one Dockerfile:
#   serve (the default, last stage)  the SageMaker Multi-Model Endpoint container: nginx (public port) ->
#                                    Multi Model Server started by the SageMaker Inference Toolkit -> our numpy
#                                    backend; the Python gateway verifies and admits loads. No torch.
#   train                            the pipeline's processing and training jobs: the same code with the
#                                    pipeline's dependencies and the CPU build of torch; no Java, no nginx.
# Build and push both: ./build_and_push.sh IMAGE_NAME [TAG]   (--help: mirrors, CA bundle, torch wheel)
# Dependencies are hash-pinned in container/requirements/*.lock (scripts/lock.sh regenerates them).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- build-base: a venv with pinned pip and setuptools, and the project built once as a wheel ---------------
# Build arguments (index mirrors, the CA bundle) reach only the build stages; the images copy the venv alone.
FROM ${PYTHON_IMAGE} AS build-base
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY container/image/inputs/ /build-inputs/
COPY container/image/pip-install.sh /usr/local/bin/pip-install
COPY container/requirements/ /locks/
# sagemaker-inference is published only as source: it is built with these pinned tools (no build isolation,
# which would fetch unpinned ones), as is the project.
RUN python -m venv /opt/venv \
 && pip-install --require-hashes --requirement /locks/build.lock
COPY pyproject.toml README.md /src/
COPY genesig /src/genesig
COPY container /src/container
COPY pipeline /src/pipeline
RUN /opt/venv/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

# --- serve-build: the serving venv (pip itself removed: nothing is installed at run time) -------------------
FROM build-base AS serve-build
RUN pip-install --require-hashes --no-build-isolation --requirement /locks/serve.lock \
 && pip-install --no-deps /wheels/*.whl \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip

# --- jre-build: a Java runtime with only the modules Multi Model Server uses (49 MB instead of Debian's 190 MB
# JRE and its desktop libraries). java.desktop: log4j2 needs java.beans; java.management, java.naming, java.xml,
# java.sql, java.logging: log4j2, gson and netty; jdk.unsupported: netty's direct buffers.
# binutils: jlink strips the native libraries with objcopy.
FROM ${PYTHON_IMAGE} AS jre-build
ARG DEBIAN_FRONTEND=noninteractive
ARG JAVA_MODULES=java.base,java.desktop,java.logging,java.management,java.naming,java.sql,java.xml,jdk.unsupported
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless binutils \
 && jlink --add-modules "$JAVA_MODULES" --strip-debug --no-man-pages --no-header-files --compress=2 \
      --output /opt/java

# --- train-build: the training/processing venv, with torch's CPU build --------------------------------------
FROM build-base AS train-build
# PyPI's default Linux torch wheel carries several GB of CUDA; the lock pins the CPU build's hash.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip-install --require-hashes --no-build-isolation --requirement /locks/train.lock \
 && pip-install --no-deps /wheels/*.whl

# --- train: what SageMaker processing and training jobs run ------------------------------------------------
FROM ${PYTHON_IMAGE} AS train
LABEL org.opencontainers.image.title="genesig-mme-train" \
      org.opencontainers.image.description="genesig-mme pipeline jobs: preprocess, train, evaluate, register, deploy"
COPY --from=train-build /opt/venv /opt/venv

# PATH: the venv's python and the genesig entry point.
# PYTHONUNBUFFERED: log lines reach CloudWatch as they are written.
# MPLCONFIGDIR: matplotlib's cache in a folder that exists whatever the user (reports are drawn headless).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# No USER: SageMaker mounts /opt/ml/input, /opt/ml/model and /opt/ml/processing/* for root, and a job whose
# image switches to another user cannot write its outputs there.
WORKDIR /opt/ml
# SageMaker runs training as `docker run IMAGE train`; processing jobs set their entry point (`genesig step ...`).
ENTRYPOINT ["genesig"]
CMD ["train"]

# --- serve (default target): the multi-model endpoint container ---------------------------------------------
FROM ${PYTHON_IMAGE} AS serve

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="genesig-mme" \
      org.opencontainers.image.description="One survival model per gene signature behind one SageMaker MME"

# Debian stable's security updates replace package versions, so pinning them would break rebuilds;
# the base image tag is pinned instead. User 1000 with its own group 1000 (a system account would warn
# about the uid and take gid 999).
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
 && groupadd --gid 1000 model-server \
 && useradd --uid 1000 --gid 1000 --no-log-init --create-home --home-dir /home/model-server \
      --shell /usr/sbin/nologin model-server \
 && mkdir -p /opt/ml/models

COPY --from=jre-build /opt/java /opt/java
COPY --from=serve-build /opt/venv /opt/venv

# JAVA_HOME: Multi Model Server's launcher starts $JAVA_HOME/bin/java.
# PATH: the venv's python and the genesig entry point.
# PYTHONUNBUFFERED: log lines reach CloudWatch as they are written.
# PYTHONDONTWRITEBYTECODE: no .pyc writes at run time (the venv was compiled at build; the root may be read-only).
# GENESIG_STATE_DIR: MMS config, logs, pid file and backend sockets (the toolkit would use /etc and /tmp).
# GENESIG_FRONT: nginx owns port 8080 so invocations bypass Python; loads go through our gateway.
# SAGEMAKER_MULTI_MODEL: SageMaker sets it for MME; set here too so `docker run IMAGE` behaves the same.
ENV JAVA_HOME=/opt/java \
    PATH=/opt/venv/bin:/opt/java/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GENESIG_STATE_DIR=/tmp/genesig-serve \
    GENESIG_FRONT=nginx \
    SAGEMAKER_MULTI_MODEL=true

# Non-root: SageMaker mounts /opt/ml/models readable by the container user. Any other --user works too
# (state lives under /tmp); run with --user root if a platform mounts the models owner-only.
USER 1000
WORKDIR /home/model-server
EXPOSE 8080

# SageMaker starts the container as `docker run IMAGE serve`.
ENTRYPOINT ["genesig"]
CMD ["serve"]
