#!/usr/bin/env bash
# Regenerate the images' hash-pinned dependency locks from pyproject.toml (uv, from the dev extra).
#
#   container/requirements/build.lock  pip and setuptools: the build tools for the one sdist we install
#                                      (sagemaker-inference) and for the project itself, pinned like the rest
#   container/requirements/serve.lock  the serving image: '.[serve]' (no torch)
#   container/requirements/train.lock  the training/processing image: '.[train,aws]' with torch's CPU build
#
# Usage: scripts/lock.sh [--torch-wheel FILE]
#   torch's CPU build comes from PyTorch's CPU index by default, or from a local wheel of the same version
#   (PyPI's default Linux wheel is the CUDA build). Resolved for CPython 3.11 on x86_64 manylinux 2.28.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
if [[ "${1:-}" == "--torch-wheel" ]]; then
  [[ -f "${2:-}" ]] || { echo "usage: $0 [--torch-wheel FILE]" >&2; exit 2; }
  torch_source=(--find-links "$(dirname "$2")")
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--torch-wheel FILE]" >&2
  exit 2
fi

uv="${UV:-.venv/bin/uv}"
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --no-config --custom-compile-command "scripts/lock.sh")
# A proxy that re-signs certificates is trusted through the system's CA store.
[[ -n "${SSL_CERT_FILE:-}" || ! -f /etc/ssl/certs/ca-certificates.crt ]] || export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

out=container/requirements
printf 'pip\nsetuptools>=77,<82\n' | "$uv" pip compile "${common[@]}" - -o "$out/build.lock"
"$uv" pip compile "${common[@]}" pyproject.toml --extra serve -o "$out/serve.lock"
"$uv" pip compile "${common[@]}" "${torch_source[@]}" pyproject.toml --extra train --extra aws -o "$out/train.lock"
echo "wrote $out/build.lock, $out/serve.lock, $out/train.lock" >&2
