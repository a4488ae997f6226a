#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for genesig-mme: system packages, a virtualenv, the project.
#
# Usage: scripts/bootstrap.sh [serve|train|pipeline|dev]
#   serve     what `genesig serve` / `genesig selfcheck` need (default)
#   train     serve plus the pipeline (genesig run-local: torch, pandas, scikit-learn, matplotlib)
#   pipeline  train plus the SageMaker Python SDK (~1 GB): the SageMaker commands (upsert, start-set, registry, sync,
#             endpoint, predict)
#   dev       serve, train, pipeline, tests, linters and benchmarks
# System packages (installed only when missing): a Java 17 runtime for Multi Model Server, nginx; for dev also
# a Docker engine and debootstrap (the image tests build and run the images, from a base made of Debian packages)
# and wrk (the serving benchmark's load generator).
# Python: $PYTHON (default python3, 3.11 or 3.12); the venv is .venv in the repository.
set -euo pipefail

extra="${1:-serve}"
case "$extra" in
  serve | train | pipeline | dev) ;;
  *) echo "usage: $0 [serve|train|pipeline|dev]" >&2; exit 2 ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v java > /dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v nginx > /dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if [[ "$extra" == dev ]]; then
  command -v dockerd > /dev/null 2>&1 || [[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
  command -v debootstrap > /dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
  command -v wrk > /dev/null 2>&1 || missing+=(wrk)
fi
if ((${#missing[@]})); then
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  echo "installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extras="$extra"
[[ "$extra" == train ]] && extras="serve,train"
[[ "$extra" == pipeline ]] && extras="serve,train,pipeline"
.venv/bin/python -m pip install --quiet --editable ".[$extras]"
echo "ready: .venv/bin/genesig" >&2
