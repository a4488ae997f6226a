#!/usr/bin/env bash
# Build the genesig-mme serving image for linux/amd64 and push it to Amazon ECR.
#
# Usage: ./build_and_push.sh IMAGE_NAME [TAG]
#   IMAGE_NAME  ECR repository name (created if missing), e.g. genesig-mme
#   TAG         image tag (default: latest); the image is also tagged with the git commit
#
# Region: AWS_REGION, else AWS_DEFAULT_REGION, else `aws configure get region`.
# Account: `aws sts get-caller-identity`. Prints the pushed image URI on the last line.
set -euo pipefail

usage() {
  echo "usage: $0 IMAGE_NAME [TAG]" >&2
  echo "  IMAGE_NAME: lowercase ECR repository name, e.g. genesig-mme" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
image="$1"
tag="${2:-latest}"
[[ "$image" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || { echo "invalid IMAGE_NAME '$image'" >&2; usage; }
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "invalid TAG '$tag'" >&2; usage; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
if [[ -z "$region" ]]; then
  region="$(aws configure get region || true)"
fi
[[ -n "$region" ]] || { echo "no AWS region: set AWS_REGION or run 'aws configure'" >&2; exit 1; }

account="$(aws sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${region}.amazonaws.com"
uri="${registry}/${image}"
commit="$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo nogit)"

if ! aws ecr describe-repositories --region "$region" --repository-names "$image" >/dev/null 2>&1; then
  echo "creating ECR repository $image in $region" >&2
  aws ecr create-repository --region "$region" --repository-name "$image" \
    --image-scanning-configuration scanOnPush=true >/dev/null
fi

aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"

docker build --platform linux/amd64 --tag "${uri}:${tag}" --tag "${uri}:${commit}" "$here"
docker push "${uri}:${tag}"
docker push "${uri}:${commit}"

echo "${uri}:${tag}"
