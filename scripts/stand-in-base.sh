#!/usr/bin/env bash
# Make a stand-in for python:3.11-slim-bookworm from Debian packages alone (debootstrap), for machines that
# cannot reach Docker Hub: a minimal bookworm with Debian's Python 3.11, `python` on PATH as in the official image.
#
# Usage: scripts/stand-in-base.sh [IMAGE]        (default genesig-stand-in-base:bookworm; needs root and docker)
#   DEBIAN_MIRROR  (default http://deb.debian.org/debian)
# Prints the image name; does nothing when the image already exists.
set -euo pipefail
image="${1:-genesig-stand-in-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" > /dev/null 2>&1; then
  echo "$image"
  exit 0
fi
command -v debootstrap > /dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
[[ "$(id -u)" -eq 0 ]] || { echo "debootstrap needs root" >&2; exit 1; }

root="$(mktemp -d "${TMPDIR:-/tmp}/genesig-base.XXXXXX")"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >&2
# What the slim image leaves out: package caches, docs, locales; `python` as the interpreter's name.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$image" > /dev/null
echo "$image"
