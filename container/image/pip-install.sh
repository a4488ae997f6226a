#!/bin/sh
# pip inside the image build, never in an image: package mirrors, a proxy's CA bundle and local wheels.
#
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL  build arguments (package index mirrors); pip reads them, empty means unset
#   TORCH_INDEX_URL                      where torch's CPU build comes from, unless a torch wheel is in the inputs
#   /build-inputs/ca-bundle.pem          CA bundle for a proxy that re-signs TLS certificates (build stages only)
#   /build-inputs/*.whl                  local wheels (torch's CPU build, say), used before any index
# Every install is hash-checked against the locks (--require-hashes), whichever source a file came from.
set -eu
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL TORCH_INDEX_URL; do
  eval "value=\${$var:-}"
  [ -n "$value" ] || unset "$var"
done
if [ -s /build-inputs/ca-bundle.pem ]; then
  export PIP_CERT=/build-inputs/ca-bundle.pem
fi
if ls /build-inputs/*.whl > /dev/null 2>&1; then
  set -- --find-links /build-inputs "$@"
fi
# torch's CPU index joins the extra indexes only when no local torch wheel was given (no needless network).
if [ -n "${TORCH_INDEX_URL:-}" ] && ! ls /build-inputs/torch-*.whl > /dev/null 2>&1; then
  export PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:+$PIP_EXTRA_INDEX_URL }$TORCH_INDEX_URL"
fi
exec /opt/venv/bin/python -m pip install "$@"
