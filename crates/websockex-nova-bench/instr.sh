#!/usr/bin/env bash
# Instructions per message (valgrind callgrind: exact and repeatable on noisy machines).
# Ir/msg = (Ir(N=N2) - Ir(N=N1)) / (N2 - N1), which cancels start-up and connect costs.
# Usage: crates/websockex-nova-bench/instr.sh   (builds release first; ~1-2 min)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
N1=${N1:-10000}
N2=${N2:-100000}
SIZE=${SIZE:-350}
cargo build --release -q -p websockex-nova-bench
BIN=target/release/nova-bench
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" server --listen "127.0.0.1:$PORT" 2>/dev/null &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
sleep 0.3
OUT=$(mktemp -d)
ir() { # client parse-flag n [path]
    local f="$OUT/cg.$1.$2.$3.${4:-stream}"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$BIN" stream --client "$1" $2 \
        "ws://127.0.0.1:$PORT/${4:-stream}?n=$3&size=$SIZE" >/dev/null 2>"$f.log"
    grep -E '^summary:|^totals:' "$f" | head -1 | awk '{print $2}'
}
printf '%-18s %-9s %12s\n' client mode Ir/msg
for mode in "" "--no-parse"; do
    for client in raw nova; do
        a=$(ir "$client" "$mode" "$N1")
        b=$(ir "$client" "$mode" "$N2")
        printf '%-18s %-9s %12.0f\n' "$client" "${mode:-parse}" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
    done
done
# The typed path (DESIGN §6): Deribit adapter, frame -> classify -> route -> typed Ticker,
# against the raw client parsing every notification into serde_json::Value, same server path.
for client in raw typed; do
    a=$(ir "$client" "" "$N1" deribit)
    b=$(ir "$client" "" "$N2" deribit)
    printf '%-18s %-9s %12.0f\n' "$client" "deribit" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
done
# The cost of observability on the hot path: nova without parsing, with each collector and
# with a DefaultLoggingHandler (INFO, messages off).
for extra in "--metrics default" "--metrics facade" "--logging" "--json-codec"; do
    a=$(ir nova "--no-parse $extra" "$N1")
    b=$(ir nova "--no-parse $extra" "$N2")
    printf '%-18s %-9s %12.0f\n' "nova ${extra#--}" "--no-parse" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
done
