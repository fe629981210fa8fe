#!/usr/bin/env bash
# Autobahn TestSuite conformance gate for the nova client, using kosoku's fuzzingserver.
#
# Usage: .ci/autobahn.sh PATH/TO/nova
#
# Environment (all optional):
#   AUTOBAHN_CASES   kosoku case selection, e.g. "-i 1.* -i 2.*" (default: whole suite, 517 cases);
#                    with a subset, the baseline check ignores cases that were not run (--partial)
#   AUTOBAHN_WRITE=1 refresh .ci/autobahn-expected.json from this run instead of diffing against it
#   AUTOBAHN_PORT    port for kosoku (default: a free one)
#   AUTOBAHN_AGENT   agent name (default: websockex-nova)
#   PYTHON           interpreter used to create the venv (default: python3)
set -euo pipefail

NOVA=${1:?usage: $0 PATH/TO/nova}
[[ -x $NOVA ]] || { echo "autobahn: nova binary not found or not executable: $NOVA" >&2; exit 2; }
NOVA=$(cd "$(dirname "$NOVA")" && pwd)/$(basename "$NOVA")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
REQS=$REPO/.ci/requirements-autobahn.txt
EXPECTED=$REPO/.ci/autobahn-expected.json
REPORT_DIR=$REPO/target/autobahn-reports
KOSOKU_LOG=$REPO/target/autobahn-kosoku.log
AGENT=${AUTOBAHN_AGENT:-websockex-nova}
HOST=127.0.0.1
# read -a splits without pathname expansion, so globs like 9.* reach kosoku intact.
read -r -a SEL <<< "${AUTOBAHN_CASES:-}"
if [[ ${AUTOBAHN_WRITE:-0} == 1 && ${#SEL[@]} -gt 0 ]]; then
    echo "autobahn: AUTOBAHN_WRITE=1 needs the whole suite; unset AUTOBAHN_CASES" >&2
    exit 2
fi

# 1. venv with the pinned kosoku (pip is a no-op when the pin is already satisfied).
if [[ ! -x $VENV/bin/python ]]; then
    echo "autobahn: creating venv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
PY=$VENV/bin/python

# 2. fresh report dir: a stale index.json must never be checked.
rm -rf "$REPORT_DIR"
mkdir -p "$(dirname "$REPORT_DIR")"

PORT=${AUTOBAHN_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

KPID=
NPID=
cleanup() {
    local pid
    for pid in $NPID $KPID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 3. kosoku fuzzingserver in the background (exits by itself after /updateReports).
echo "autobahn: kosoku $("$PY" -c 'import importlib.metadata as m; print(m.version("kosoku"))') fuzzingserver on $HOST:$PORT ${SEL[*]:-(all cases)}"
timeout 600 "$VENV/bin/kosoku" -m fuzzingserver -o "$REPORT_DIR" "${SEL[@]}" "$HOST:$PORT" >"$KOSOKU_LOG" 2>&1 &
KPID=$!

# 4. wait until the port accepts connections (~30 s max).
ready=0
for _ in $(seq 1 300); do
    if ! kill -0 "$KPID" 2>/dev/null; then
        echo "autobahn: kosoku exited before listening; log:" >&2
        cat "$KOSOKU_LOG" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ $ready != 1 ]]; then
    echo "autobahn: kosoku not listening on $HOST:$PORT after 30 s; log:" >&2
    cat "$KOSOKU_LOG" >&2
    exit 1
fi

# 5. the client under test drives every case, then calls /updateReports.
start=$SECONDS
nova_rc=0
# (in the background + wait, so that a TERM/INT to this script is handled at once)
timeout 570 "$NOVA" autobahn --server "$HOST:$PORT" --agent "$AGENT" &
NPID=$!
wait "$NPID" || nova_rc=$?
NPID=
echo "autobahn: nova exited with $nova_rc after $((SECONDS - start)) s"

# 6. kosoku writes the reports and exits once /updateReports arrived; give it 60 s.
#    Its exit code is 1 whenever any case is not passed (UNIMPLEMENTED included), so it is
#    not the verdict; 124 (timeout) or a still-running kosoku means no /updateReports.
for _ in $(seq 1 600); do
    kill -0 "$KPID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$KPID" 2>/dev/null; then
    echo "autobahn: kosoku still running 60 s after nova exited (did nova call /updateReports?agent=$AGENT?)" >&2
    cat "$KOSOKU_LOG" >&2
    exit 1
fi
kosoku_rc=0
wait "$KPID" || kosoku_rc=$?
KPID=
echo "autobahn: kosoku exited with $kosoku_rc (1 = some case not passed, UNIMPLEMENTED included); log: $KOSOKU_LOG"
if [[ $kosoku_rc != 0 && $kosoku_rc != 1 ]]; then
    cat "$KOSOKU_LOG" >&2
    exit 1
fi

# 7. the verdict: policy + baseline.
check_args=("$REPORT_DIR/index.json" "$EXPECTED" --agent "$AGENT")
[[ ${AUTOBAHN_WRITE:-0} == 1 ]] && check_args+=(--write)
[[ ${#SEL[@]} -gt 0 ]] && check_args+=(--partial)
check_rc=0
"$PY" "$REPO/.ci/autobahn_check.py" "${check_args[@]}" || check_rc=$?
if [[ $check_rc != 0 && ! -e $EXPECTED ]]; then
    echo "autobahn: no baseline yet; create it with: AUTOBAHN_WRITE=1 bash .ci/autobahn.sh $NOVA   (then commit .ci/autobahn-expected.json)" >&2
fi
if [[ $nova_rc != 0 ]]; then
    echo "autobahn: FAIL: nova exited with $nova_rc" >&2
    exit 1
fi
exit "$check_rc"
