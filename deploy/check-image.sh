#!/usr/bin/env bash
# `make check-image`: prove the image works on this machine, as production runs it.
#
#   deploy/check-image.sh [IMAGE]          # default IMAGE: localhost/apiary:dev (make image)
#
# Against throwaway PostgreSQL and Redis on the host (scripts/services.sh), with every
# container's root filesystem read-only and only tmpfs for /tmp and the data dir:
#   1. `apiary init` migrates and creates the super admin
#   2. a `serve` container and a `worker` container start (APIARY_RUNNER=celery)
#   3. /readyz answers 200 with the database and Redis checked, / serves the dashboard, and
#      the image's HEALTHCHECK passes for both roles
#   4. a tenant and an API key are made with the image's CLI
#   5. a /v1/chat/completions call is answered by the bundled SmolLM2 model
#   6. a swarm run through the API (`apiary run`, itself in the image) succeeds, and the
#      worker container's log shows it ran the execution
#   7. the Helm chart's API and worker Deployments run under `podman kube play` with this
#      image (their pod specs as rendered, see deploy/lint/kube_play.py) and become ready
# Containers use the host's network, so 127.0.0.1 is the host's PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${1:-localhost/apiary:dev}
WORK=$PWD/.image-build
SERVICES=$PWD/.test-services/check-image.$$
SERVE=apiary-check-serve-$$
WORKER=apiary-check-worker-$$
PLAY=$WORK/kube-play.yaml
DEPLOY_PYTHON=$PWD/.deploy-tools/bin/python   # helm-python-sdk (make deploy-lint installs it)
mkdir -p "$WORK"

log() { printf '\ncheck-image: %s\n' "$*" >&2; }
# Without systemd podman cannot schedule HEALTHCHECK timers and says so on every container
# start; the checks are run by hand below instead.
# `kube down` also reports the pod's volumes as busy while it removes them (they are gone after).
podman() {
    command podman "$@" 2> >(grep -vE 'unable to get systemd connection|Removing volume .* volume is being used' >&2)
}
die() { printf 'check-image: FAILED: %s\n' "$*" >&2; exit 1; }

if [[ ! -f "$WORK/containers.conf" ]]; then
    printf '[engine]\nruntime = "runc"\n\n[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' \
        >"$WORK/containers.conf"
fi
export CONTAINERS_CONF=$WORK/containers.conf
podman image exists "$IMAGE" || die "no image $IMAGE: run 'make image' first"

cleanup() {
    status=$?
    if [[ $status -ne 0 ]]; then
        for name in "$SERVE" "$WORKER"; do
            podman logs --tail 40 "$name" 2>/dev/null | sed "s/^/[$name] /" >&2 || true
        done
    fi
    podman rm -f -t 5 "$SERVE" "$WORKER" >/dev/null 2>&1 || true
    [[ -f "$PLAY" ]] && podman kube down "$PLAY" >/dev/null 2>&1 || true
    scripts/services.sh stop "$SERVICES" >/dev/null 2>&1 || true
    exit $status
}
trap cleanup EXIT

log "starting PostgreSQL and Redis on the host"
scripts/services.sh start "$SERVICES" >/dev/null
set -a
# shellcheck disable=SC1091
. "$SERVICES/env"
set +a
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
JWT=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')

# What every container gets: production settings, a read-only root, no capabilities.
run_args=(--network host --read-only --tmpfs /tmp --tmpfs /var/lib/apiary:rw,U
    --cap-drop ALL --security-opt no-new-privileges
    -e APIARY_ENVIRONMENT=production -e APIARY_RUNNER=celery -e APIARY_PORT="$PORT"
    -e APIARY_DATABASE_URL="$APIARY_TEST_DATABASE_URL" -e APIARY_REDIS_URL="$APIARY_TEST_REDIS_URL"
    -e APIARY_JWT_SECRET="$JWT")
apiary() { podman run --rm "${run_args[@]}" "$IMAGE" "$@"; }

log "1. apiary init (migrations, super admin)"
apiary init | sed -E 's/(password: +).*/\1<hidden>/'

log "2. serve and worker containers"
podman run -d --name "$SERVE" "${run_args[@]}" "$IMAGE" serve >/dev/null
podman run -d --name "$WORKER" "${run_args[@]}" "$IMAGE" worker --concurrency=2 >/dev/null
echo "user in the container: $(podman exec "$SERVE" id -u) (image user $(podman image inspect "$IMAGE" --format '{{.Config.User}}'))"
if podman exec "$SERVE" sh -c 'touch /opt/apiary/probe' 2>/dev/null; then
    die "the root filesystem is writable"
fi
echo "root filesystem: read-only (touch /opt/apiary/probe refused)"

log "3. /readyz"
for _ in $(seq 120); do
    if ready=$(curl -fsS "$URL/readyz" 2>/dev/null); then break; fi
    podman container exists "$SERVE" && [[ $(podman inspect "$SERVE" --format '{{.State.Running}}') == true ]] \
        || die "the serve container exited"
    sleep 1
done
[[ -n "${ready:-}" ]] || die "/readyz did not answer 200 within 120 s"
echo "$ready"
curl -fsS "$URL/" | grep -q '<div id="root"' || die "/ does not serve the dashboard"
echo "/ serves the dashboard built in the image's web stage"
podman healthcheck run "$SERVE" && echo "HEALTHCHECK (serve): healthy"
podman healthcheck run "$WORKER" && echo "HEALTHCHECK (worker): healthy"

log "4. a tenant and an API key (the image's CLI)"
apiary admin create-tenant check-image --admin-email check@example.com >/dev/null
KEY=$(apiary admin create-api-key --tenant check-image --role tenant_admin --name check-image \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
echo "API key ${KEY:0:12}..."

log "5. /v1/chat/completions with the bundled model"
curl -fsS "$URL/v1/chat/completions" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' \
    -d '{"model": "default", "max_tokens": 24, "messages": [{"role": "user", "content": "Say hello."}]}' \
    | python3 -c '
import json, sys
body = json.load(sys.stdin)
text = body["choices"][0]["message"]["content"]
assert text.strip(), body
model, tokens = body["model"], body["usage"]["total_tokens"]
print(f"model {model}: {text.strip()[:120]!r} ({tokens} tokens)")'

log "6. a swarm run through the API, executed by the worker container"
curl -fsS "$URL/api/v1/agents" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"name": "check", "model": "default", "max_subagents": 2}' >/dev/null
podman run --rm "${run_args[@]}" -e APIARY_URL="$URL" -e APIARY_API_KEY="$KEY" "$IMAGE" \
    run "Name two colours, one per line." --agent check --max-agents 2
podman logs "$WORKER" 2>&1 | grep -E "succeeded in|Task .* received" | tail -n 3
podman logs "$WORKER" 2>&1 | grep -qE "succeeded in" || die "the worker's log shows no finished task"

log "7. the chart's Deployments under podman kube play"
podman rm -f -t 5 "$SERVE" "$WORKER" >/dev/null
APIARY_JWT_SECRET=$JWT "$DEPLOY_PYTHON" deploy/lint/kube_play.py "$IMAGE" "$PORT" >"$PLAY"
podman kube play --network host "$PLAY" >/dev/null
ready=""
for _ in $(seq 120); do
    if ready=$(curl -fsS "$URL/readyz" 2>/dev/null); then break; fi
    sleep 1
done
[[ -n "$ready" ]] || die "the chart's API pod did not answer /readyz within 120 s"
echo "$ready"
for container in apiary-api-pod-0-api apiary-worker-pod-0-worker; do
    podman inspect "$container" --format \
        "$container: {{.State.Status}}, user {{.Config.User}}, read-only root {{.HostConfig.ReadonlyRootfs}}, capabilities dropped {{len .HostConfig.CapDrop}} (all), {{.HostConfig.SecurityOpt}}"
done
podman kube down "$PLAY" >/dev/null

log "PASSED: $IMAGE ($(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%d MB", $1/1000000}'))"
