#!/usr/bin/env bash
# Test orchestration for `make test` (expects .venv and the server binaries to exist).
#
#   1. start throwaway PostgreSQL + Redis (scripts/services.sh) in .test-services/run.*
#   2. pass 1: pytest against PostgreSQL + Redis (all tests)
#   3. pass 2: the embedded pass, tests marked both_databases on SQLite without Redis
#   4. always stop the services (EXIT trap), even when a pass fails or we are interrupted
#
# Arguments are passed to both pytest runs. Exit status is non-zero if either pass fails
# (including pytest's 5, "no tests collected"). Each pass is limited to
# APIARY_TEST_PASS_TIMEOUT (default 35m) so a hung test cannot eat CI's 90 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTEST=.venv/bin/pytest
PASS_TIMEOUT=${APIARY_TEST_PASS_TIMEOUT:-35m}
BASE=$PWD/.test-services
mkdir -p "$BASE"

# Stop services left behind by crashed runs: each run dir has a sibling <dir>.owner file
# holding the pid of the test.sh that owns it; a dead owner means the dir is stale.
# (Runs whose owner is still alive, e.g. concurrent `make test`s, are left alone.)
for owner_file in "$BASE"/run.*.owner; do
    [[ -f "$owner_file" ]] || continue
    owner=$(cat "$owner_file" 2>/dev/null || true)
    if [[ -z "$owner" ]] || ! kill -0 "$owner" 2>/dev/null; then
        scripts/services.sh stop "${owner_file%.owner}" || true
        rm -f -- "$owner_file"
    fi
done

DIR=$(mktemp -d "$BASE/run.XXXXXX")
echo $$ >"$DIR.owner"

cleanup() {
    scripts/services.sh stop "$DIR" || true
    rm -f -- "$DIR.owner"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo "==> starting PostgreSQL and Redis in $DIR"
scripts/services.sh start "$DIR" >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
echo "    APIARY_TEST_DATABASE_URL=$APIARY_TEST_DATABASE_URL"
echo "    APIARY_TEST_REDIS_URL=$APIARY_TEST_REDIS_URL"

run_pytest() {
    timeout --foreground --kill-after=30s "$PASS_TIMEOUT" "$PYTEST" "$@"
}

echo "==> pass 1/2: pytest on PostgreSQL + Redis"
pass1=0
run_pytest "$@" || pass1=$?

echo "==> pass 2/2: pytest -m both_databases on SQLite, no Redis (embedded)"
pass2=0
APIARY_TEST_DATABASE_URL=sqlite APIARY_TEST_REDIS_URL='' \
    run_pytest -m both_databases "$@" || pass2=$?

describe() {
    case "$1" in
        0) echo "passed" ;;
        5) echo "FAILED (exit 5: no tests collected)" ;;
        124) echo "FAILED (timed out after $PASS_TIMEOUT)" ;;
        *) echo "FAILED (exit $1)" ;;
    esac
}
echo "==> summary"
echo "    pass 1 (PostgreSQL + Redis): $(describe "$pass1")"
echo "    pass 2 (SQLite, embedded):   $(describe "$pass2")"
if ((pass1 != 0 || pass2 != 0)); then
    exit 1
fi
