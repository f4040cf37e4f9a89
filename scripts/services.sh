#!/usr/bin/env bash
# Start/stop throwaway PostgreSQL + Redis instances for the test suite.
#
#   scripts/services.sh start DIR   # start both on free 127.0.0.1 ports, data under DIR,
#                                   # write DIR/env and print it
#   scripts/services.sh stop DIR    # stop both and remove DIR (safe to call twice)
#
# DIR/env contains:
#   APIARY_TEST_DATABASE_URL=postgresql+asyncpg://apiary@127.0.0.1:PORT/apiary_test
#   APIARY_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#
# PostgreSQL refuses to run as root, so when we are root it runs as the `postgres`
# system user. Its files (data, socket, log) live in DIR/pg when `postgres` can reach
# that path; otherwise (e.g. a checkout under /root, which is mode 700) they go into a
# private directory under /tmp that DIR/pgroot points to.
set -euo pipefail

PG_USER=postgres
DB_NAME=apiary_test
DB_ROLE=apiary
START_TIMEOUT=60
MARKER=.apiary-services # marks a DIR as ours, so stop never deletes a foreign directory

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 {start|stop} DIR" >&2
    exit 2
}

# Directory holding initdb/pg_ctl: the newest /usr/lib/postgresql/*/bin, else $PATH.
pg_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null \
        | sort -V | tail -n 1)
    if [[ -n "$d" && -x "$d/pg_ctl" && -x "$d/initdb" ]]; then
        echo "$d"
    elif command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
        dirname "$(command -v pg_ctl)"
    else
        die "PostgreSQL server binaries (initdb, pg_ctl) not found; run 'make deps-test'"
    fi
}

# Run a command as the PostgreSQL owner (postgres when we are root, else ourselves).
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# Two distinct free TCP ports on 127.0.0.1 (both sockets held open while picking).
free_ports() {
    python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# True if PID is alive and its command line mentions WORD (guards against pid reuse).
pid_is() {
    local pid=$1 word=$2
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- "$word"
}

# Wait up to N seconds for PID to exit.
wait_gone() {
    local pid=$1 n=$2 i
    for ((i = 0; i < n * 10; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    return 1
}

# Where PostgreSQL files for DIR live (DIR/pg or the /tmp fallback recorded in DIR/pgroot).
pg_root_of() {
    local dir=$1
    if [[ -f "$dir/pgroot" ]]; then
        cat "$dir/pgroot"
    else
        echo "$dir/pg"
    fi
}

stop_services() {
    local dir=$1
    [[ -d "$dir" ]] || { log "nothing to stop in $dir"; return 0; }
    [[ -f "$dir/$MARKER" ]] \
        || die "$dir was not created by $0 start (no $MARKER); refusing to touch it"

    # --- Redis ---
    local rpid=""
    [[ -f "$dir/redis.pid" ]] && rpid=$(cat "$dir/redis.pid" 2>/dev/null || true)
    if [[ -f "$dir/redis.port" ]] && command -v redis-cli >/dev/null; then
        redis-cli -h 127.0.0.1 -p "$(cat "$dir/redis.port")" shutdown nosave \
            >/dev/null 2>&1 || true
    fi
    if [[ -n "$rpid" ]] && pid_is "$rpid" redis-server; then
        wait_gone "$rpid" 5 || { kill "$rpid" 2>/dev/null || true; wait_gone "$rpid" 5 || true; }
        pid_is "$rpid" redis-server && kill -9 "$rpid" 2>/dev/null || true
    fi

    # --- PostgreSQL ---
    local pgroot data ppid=""
    pgroot=$(pg_root_of "$dir")
    data="$pgroot/data"
    if [[ -f "$data/postmaster.pid" ]]; then
        ppid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
        if pid_is "$ppid" postgres; then
            as_pg "$(pg_bindir)/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null 2>&1 \
                || { kill -QUIT "$ppid" 2>/dev/null || true; wait_gone "$ppid" 5 || true; }
            pid_is "$ppid" postgres && kill -9 "$ppid" 2>/dev/null || true
        fi
    fi

    # Remove the /tmp fallback only if it is the one we created.
    if [[ -f "$dir/pgroot" && "$pgroot" == /tmp/apiary-pg.* ]]; then
        rm -rf -- "$pgroot"
    fi
    rm -rf -- "$dir"
    log "stopped services in $dir"
}

# EXIT trap while starting: a failed start stops whatever it already launched.
on_start_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        log "start failed; cleaning up"
        stop_services "$STARTED_DIR" || true
    fi
    exit "$rc"
}

start_services() {
    local dir=$1
    command -v redis-server >/dev/null || die "redis-server not found; run 'make deps-test'"
    command -v redis-cli >/dev/null || die "redis-cli not found; run 'make deps-test'"
    local bindir
    bindir=$(pg_bindir)

    # A DIR left over from a crashed run: stop whatever it still runs, then start afresh.
    if [[ -f "$dir/$MARKER" ]]; then
        log "found $dir from an earlier run; cleaning it up first"
        stop_services "$dir"
    elif [[ -d "$dir" && -n "$(ls -A "$dir")" ]]; then
        die "$dir exists, is not empty and was not created by $0; refusing to use it"
    fi
    mkdir -p "$dir/redis"
    dir=$(cd "$dir" && pwd) # absolute, so pg_ctl/redis don't depend on our cwd
    touch "$dir/$MARKER"
    chmod 755 "$dir" # mktemp -d makes it 0700, which would lock the postgres user out

    # If anything below fails, don't leave half-started services behind.
    STARTED_DIR=$dir
    trap on_start_exit EXIT

    # --- PostgreSQL owner ---
    if [[ $EUID -eq 0 ]] && ! getent passwd "$PG_USER" >/dev/null; then
        log "creating system user $PG_USER"
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$PG_USER"
    fi

    # --- Where PostgreSQL's files go ---
    # Use DIR/pg when the postgres user can reach it and the socket path is short enough
    # (Unix socket paths are limited to ~107 bytes); otherwise a private dir under /tmp.
    local pgroot="$dir/pg"
    mkdir -p "$pgroot"
    if [[ $EUID -eq 0 ]]; then chown "$PG_USER:" "$pgroot"; fi
    if ! as_pg test -w "$pgroot" 2>/dev/null || ((${#pgroot} > 80)); then
        rm -rf -- "$pgroot"
        pgroot=$(mktemp -d /tmp/apiary-pg.XXXXXXXX)
        if [[ $EUID -eq 0 ]]; then chown "$PG_USER:" "$pgroot"; fi
        echo "$pgroot" >"$dir/pgroot"
        log "postgres cannot use $dir/pg; using $pgroot"
    fi
    as_pg mkdir -p "$pgroot/sock"

    local pg_port redis_port
    read -r pg_port redis_port <<<"$(free_ports)"

    # --- PostgreSQL ---
    as_pg "$bindir/initdb" -D "$pgroot/data" -U "$DB_ROLE" --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; false; }
    if ! as_pg "$bindir/pg_ctl" start -D "$pgroot/data" -w -t "$START_TIMEOUT" \
        -l "$pgroot/postgres.log" \
        -o "-p $pg_port -k $pgroot/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null; then
        cat "$pgroot/postgres.log" >&2 || true
        false
    fi
    local i
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do
        pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
        sleep 0.2
    done
    pg_isready -q -h 127.0.0.1 -p "$pg_port" || die "PostgreSQL did not become ready"
    "$bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U "$DB_ROLE" "$DB_NAME"

    # --- Redis ---
    echo "$redis_port" >"$dir/redis.port"
    redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes \
        --save '' --appendonly no --dir "$dir/redis" \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do
        [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" == PONG ]] && break
        sleep 0.2
    done
    [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" == PONG ]] \
        || { cat "$dir/redis.log" >&2 || true; die "Redis did not become ready"; }

    cat >"$dir/env" <<EOF
APIARY_TEST_DATABASE_URL=postgresql+asyncpg://$DB_ROLE@127.0.0.1:$pg_port/$DB_NAME
APIARY_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
EOF
    cat "$dir/env"
    trap - EXIT
}

[[ $# -eq 2 ]] || usage
case "$1" in
    start) start_services "$2" ;;
    stop) stop_services "$2" ;;
    *) usage ;;
esac
