#!/usr/bin/env bash
# Build the genesig-mme images from the Dockerfile and push them to Amazon ECR:
#   IMAGE_NAME        the serving image (the multi-model endpoint's container; no torch)
#   IMAGE_NAME-train  the training/processing image (the pipeline's jobs; CPU torch)
# Both are tagged TAG and the git commit. The last two lines of output are their URIs (serving first).
#
# Usage: ./build_and_push.sh [OPTIONS] IMAGE_NAME [TAG]
#   IMAGE_NAME  lowercase ECR repository name (created if missing), e.g. genesig-mme
#   TAG         image tag (default: latest)
# Options (every one reaches the build stages only, never an image):
#   --no-push                  build and tag locally (IMAGE_NAME:TAG), no AWS call
#   --base-image IMAGE         base instead of python:3.11.7-slim-bookworm (e.g. scripts/stand-in-base.sh's)
#   --pip-index-url URL        package index mirror
#   --pip-extra-index-url URL  an extra package index
#   --torch-index-url URL      where torch's CPU build comes from (default: PyTorch's CPU index)
#   --torch-wheel FILE         a local torch CPU wheel instead (checked against the lock's sha256)
#   --ca-bundle FILE           CA bundle of a proxy that re-signs TLS certificates
#   --platform PLATFORM        default linux/amd64
#   --network MODE             network of the build's RUN steps (e.g. host where docker has no bridge)
#
# Region: AWS_REGION, else AWS_DEFAULT_REGION, else `aws configure get region`.
# Account: `aws sts get-caller-identity`.
set -euo pipefail

usage() {
  echo "usage: build_and_push.sh [OPTIONS] IMAGE_NAME [TAG]" >&2
  sed -n '8,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
fail() {
  echo "build_and_push.sh: $*" >&2
  exit 2
}

push=1
platform=linux/amd64
build_args=()
torch_wheel=""
ca_bundle=""
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-push) push=0 ;;
    --base-image) build_args+=(--build-arg "PYTHON_IMAGE=${2:?--base-image needs IMAGE}"); shift ;;
    --pip-index-url) build_args+=(--build-arg "PIP_INDEX_URL=${2:?--pip-index-url needs URL}"); shift ;;
    --pip-extra-index-url) build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${2:?--pip-extra-index-url needs URL}"); shift ;;
    --torch-index-url) build_args+=(--build-arg "TORCH_INDEX_URL=${2:?--torch-index-url needs URL}"); shift ;;
    --torch-wheel) torch_wheel="${2:?--torch-wheel needs FILE}"; shift ;;
    --ca-bundle) ca_bundle="${2:?--ca-bundle needs FILE}"; shift ;;
    --platform) platform="${2:?--platform needs PLATFORM}"; shift ;;
    --network) build_args+=(--network "${2:?--network needs MODE}"); shift ;;
    -h | --help) usage ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[[ ${#positional[@]} -ge 1 && ${#positional[@]} -le 2 ]] || usage
image="${positional[0]}"
tag="${positional[1]:-latest}"
[[ "$image" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || { echo "invalid IMAGE_NAME '$image'" >&2; usage; }
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "invalid TAG '$tag'" >&2; usage; }
if [[ -n "$torch_wheel" ]]; then
  [[ -f "$torch_wheel" && "$(basename "$torch_wheel")" == torch-*.whl ]] || fail "--torch-wheel $torch_wheel is not a torch-*.whl file"
fi
[[ -z "$ca_bundle" || -s "$ca_bundle" ]] || fail "--ca-bundle $ca_bundle is not a readable file"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker info > /dev/null 2>&1 || fail "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-default socket}); start dockerd"

# AWS first when pushing: missing credentials should not wait for a build.
if [[ "$push" -eq 1 ]]; then
  region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  if [[ -z "$region" ]]; then
    region="$(aws configure get region || true)"
  fi
  [[ -n "$region" ]] || { echo "no AWS region: set AWS_REGION or run 'aws configure'" >&2; exit 1; }
  account="$(aws sts get-caller-identity --query Account --output text)"
  registry="${account}.dkr.ecr.${region}.amazonaws.com"
fi
commit="$(git -C "$here" rev-parse --short=12 HEAD 2> /dev/null || echo nogit)"

# Build inputs go into the context's inputs folder for this build only; concurrent builds of one checkout
# take turns (each stages and removes its own inputs).
inputs="$here/container/image/inputs"
if command -v flock > /dev/null; then
  exec 9> "$inputs/.build-lock"
  flock 9
fi
staged=()
cleanup() {
  if [[ ${#staged[@]} -gt 0 ]]; then rm -f "${staged[@]}"; fi
}
trap cleanup EXIT
if [[ -n "$ca_bundle" ]]; then
  cp "$ca_bundle" "$inputs/ca-bundle.pem"
  staged+=("$inputs/ca-bundle.pem")
fi
if [[ -n "$torch_wheel" ]]; then
  staged_wheel="$inputs/$(basename "$torch_wheel")"
  ln -f "$torch_wheel" "$staged_wheel" 2> /dev/null || cp "$torch_wheel" "$staged_wheel"
  staged+=("$staged_wheel")
fi

repositories=("$image" "$image-train")
targets=(serve train)
for i in 0 1; do
  started=$SECONDS
  docker build --platform "$platform" --target "${targets[$i]}" "${build_args[@]}" \
    --tag "${repositories[$i]}:${tag}" --tag "${repositories[$i]}:${commit}" "$here" >&2
  size="$(docker image inspect --format '{{.Size}}' "${repositories[$i]}:${tag}")"
  echo "built ${repositories[$i]}:${tag} ($(( ${size:-0} / 1000000 )) MB) in $((SECONDS - started)) s" >&2
done

if [[ "$push" -eq 0 ]]; then
  printf '%s\n' "${repositories[0]}:${tag}" "${repositories[1]}:${tag}"
  exit 0
fi
for repository in "${repositories[@]}"; do
  if ! aws ecr describe-repositories --region "$region" --repository-names "$repository" > /dev/null 2>&1; then
    echo "creating ECR repository $repository in $region" >&2
    aws ecr create-repository --region "$region" --repository-name "$repository" \
      --image-scanning-configuration scanOnPush=true > /dev/null
  fi
done
# Standard output carries only the two URIs (scripts read them): docker's own output goes to standard error.
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry" >&2
for repository in "${repositories[@]}"; do
  for version in "$tag" "$commit"; do
    docker tag "$repository:$version" "$registry/$repository:$version" >&2
    docker push "$registry/$repository:$version" >&2
  done
done
printf '%s\n' "$registry/${repositories[0]}:${tag}" "$registry/${repositories[1]}:${tag}"
