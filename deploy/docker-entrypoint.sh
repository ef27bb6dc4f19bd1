#!/usr/bin/env bash
# Entrypoint of the Pravah image: one image, every role, chosen by the command.
#
#   combined (default)  engine + API + worker in one container (the MVP)
#   engine [ARGS]       pravah-engine on PRAVAH_ENGINE_LISTEN (default 0.0.0.0:50051)
#   serve|api [ARGS]    pravah serve (REST API; worker too unless PRAVAH_RUN_WORKER=false)
#   worker [ARGS]       pravah worker (jobs only, engines from PRAVAH_ENGINE_URLS)
#   migrate             pravah migrate (create/upgrade the schema, then exit)
#   anything else       run as given (`pravah tasks`, `bash`, ...)
#
# Single roles exec their program, so it receives signals directly (tini is
# PID 1 in the image and forwards them). Combined mode supervises two
# children: it starts the engine on loopback, waits until grpc.health.v1 says
# SERVING, then runs `pravah serve` against it. On SIGTERM/SIGINT it stops the
# API first (the worker finishes or requeues its jobs), then the engine, and
# exits 0. If either child dies on its own, the other is stopped and the
# script exits non-zero so the orchestrator restarts the container.
#
# The tests run this script on the host (tests/deploy/test_entrypoint.py);
# PRAVAH_ENGINE_BIN, PRAVAH_CLI and PRAVAH_PYTHON let them point it at a build.
set -euo pipefail

ENGINE_BIN=${PRAVAH_ENGINE_BIN:-pravah-engine}
PRAVAH_CLI=${PRAVAH_CLI:-pravah}
PRAVAH_PYTHON=${PRAVAH_PYTHON:-python3}

log() { echo "pravah-entrypoint: $*" >&2; }

healthy() {  # healthy TARGET: one probe of an http:// or grpc:// target
    "$PRAVAH_PYTHON" -m pravah.healthcheck --quiet --timeout 1 "$1" 2>/dev/null
}

engine_pid=""
api_pid=""

stop_child() {  # stop_child PID NAME: SIGTERM, then wait for its exit status
    local pid=$1 name=$2 rc=0
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    wait "$pid" || rc=$?
    log "$name exited with status $rc"
    return "$rc"
}

on_signal() {
    trap '' TERM INT  # one shutdown at a time; tini/the runtime escalates to SIGKILL
    log "received SIG$1: stopping the API, then the engine"
    local rc=0
    stop_child "$api_pid" api || rc=$?
    stop_child "$engine_pid" engine || true
    exit "$rc"
}

combined() {
    local listen=${PRAVAH_ENGINE_LISTEN:-127.0.0.1:50051}
    local timeout=${PRAVAH_ENGINE_START_TIMEOUT:-30}
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT

    # The engine's sandbox also needs the job workspaces (state folder), and
    # none of the control plane's secrets.
    local sandbox=()
    if [[ -n "${PRAVAH_ALLOWED_ROOTS:-}" ]]; then
        sandbox=("PRAVAH_ALLOWED_ROOTS=$PRAVAH_ALLOWED_ROOTS,${PRAVAH_STATE_DIR:-/var/lib/pravah}")
    fi
    env -u PRAVAH_ADMIN_KEY -u DATABASE_URL "${sandbox[@]}" "$ENGINE_BIN" --listen "$listen" &
    engine_pid=$!
    log "engine started (pid $engine_pid) on $listen"
    local deadline=$((SECONDS + ${timeout%.*}))
    until healthy "grpc://$listen"; do
        if ! kill -0 "$engine_pid" 2>/dev/null; then
            local rc=0
            wait "$engine_pid" || rc=$?
            log "engine exited with status $rc before it became healthy"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "engine not healthy after ${timeout} s"
            stop_child "$engine_pid" engine || true
            exit 1
        fi
        sleep 0.2
    done
    log "engine is serving"

    PRAVAH_ENGINE_URLS=$listen "$PRAVAH_CLI" serve "$@" &
    api_pid=$!
    log "api started (pid $api_pid)"

    # Wait for the first child to end; a trapped signal interrupts the wait
    # and on_signal takes over.
    local rc=0
    wait -n "$engine_pid" "$api_pid" || rc=$?
    if ! kill -0 "$engine_pid" 2>/dev/null; then
        log "engine exited unexpectedly (status $rc); stopping the API"
        stop_child "$api_pid" api || true
    else
        log "api exited unexpectedly (status $rc); stopping the engine"
        stop_child "$engine_pid" engine || true
    fi
    exit $((rc == 0 ? 1 : rc))
}

role=${1:-combined}
[[ $# -gt 0 ]] && shift
case $role in
    combined) combined "$@" ;;
    engine) exec "$ENGINE_BIN" --listen "${PRAVAH_ENGINE_LISTEN:-0.0.0.0:50051}" "$@" ;;
    serve | api) exec "$PRAVAH_CLI" serve "$@" ;;
    worker) exec "$PRAVAH_CLI" worker "$@" ;;
    migrate) exec "$PRAVAH_CLI" migrate "$@" ;;
    *) exec "$role" "$@" ;;
esac
