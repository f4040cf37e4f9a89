#!/usr/bin/env bash
# `make image`: build Apiary's image with podman on this machine.
#
#   deploy/docker/build-image.sh [TAG]        # default TAG: localhost/apiary:dev
#
# BASE_IMAGE (env) picks the base. Unset, and with no Docker Hub in reach, a Debian
# bookworm base is made offline once: debootstrap from the mirror apt already uses,
# imported as localhost/debian:bookworm. The host's CA bundle is handed to the build
# steps (not the image) so pip, uv and npm work behind a TLS-intercepting proxy.
# Writes the build time and the image size to .image-build/last-build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TAG=${1:-localhost/apiary:dev}
WORK=$PWD/.image-build
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$WORK"

log() { printf 'build-image: %s\n' "$*" >&2; }

# crun fails on this kind of machine (setrlimit); runc with these limits works.
cat >"$WORK/containers.conf" <<'CONF'
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
CONF
export CONTAINERS_CONF=$WORK/containers.conf

if [[ "$BASE_IMAGE" == localhost/debian:bookworm ]] && ! podman image exists "$BASE_IMAGE"; then
    mirror=$(grep -hoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "making $BASE_IMAGE offline: debootstrap bookworm from $mirror"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
fi

ca_args=()
if [[ -f "$HOST_CA" ]]; then
    ca_args=(--volume "$HOST_CA:/run/host-ca.crt:ro"
        --build-arg SSL_CERT_FILE=/run/host-ca.crt
        --build-arg PIP_CERT=/run/host-ca.crt
        --build-arg NODE_EXTRA_CA_CERTS=/run/host-ca.crt)
fi

log "building $TAG on $BASE_IMAGE"
started=$(date +%s)
# --format docker: the OCI image format has no HEALTHCHECK.
podman build --isolation=chroot --format docker -f deploy/docker/Dockerfile \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg VERSION="$(sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml | head -n 1)" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${ca_args[@]}" -t "$TAG" .
seconds=$(($(date +%s) - started))
size=$(podman image inspect "$TAG" --format '{{.Size}}')
printf 'image %s\nbuild_seconds %s\nsize_bytes %s\nsize_mb %s\n' \
    "$TAG" "$seconds" "$size" "$((size / 1000000))" | tee "$WORK/last-build"
