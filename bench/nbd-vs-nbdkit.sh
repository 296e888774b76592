#!/usr/bin/env bash
# qbd-master against nbdkit's file plugin (the strongest peer measured here), 4 KiB random
# read and write at QD1 and QD32 through fio's nbd engine, over loopback.
#
# Both servers get a 1 GiB target on tmpfs (/dev/shm: this VM reclaims page cache, so disk-backed
# "cached" files turn into disk reads), both are pre-filled so reads hit data, and the two are
# interleaved in every round (alternating which goes first) so drift on the shared two cores hits
# both. Report: per-round IOPS, then median and range per server and the median ratio QBD/nbdkit.
#
# With REPLICAS=N (N > 1) qbd-master serves replicate:N over N directories on tmpfs, so every
# write goes to N part files; nbdkit stays a single file (that is the comparison asked for:
# what N copies cost against the plain peer).
#
# With NODES=N (N > 0) the backends are N qbd-node daemons instead of directories: each serves
# its own tmpfs directory on 127.0.0.1 (port picked by the kernel, read from its ready line),
# all with one fresh cluster key (`qbd keygen`), and qbd-master reaches them over the TCP node
# protocol (--node ... --cluster-key ...) with replicate:REPLICAS (REPLICAS <= NODES). Workloads,
# interleaving with nbdkit and the report are the same. SERVER_CPUS pins the nodes too.
#
# Environment (defaults in brackets):
#   RUNTIME [10]      seconds per fio run          ROUNDS [3]       rounds
#   SIZE [1G]         target size                  NBDKIT_PORT [10811]
#   REPLICAS [1]      qbd-master: replicate:REPLICAS over REPLICAS tmpfs directories
#   NODES [0]         0: directory backends; N > 0: N qbd-node daemons as the backends
#   SERVER_CPUS []    taskset CPU list for both servers (empty: no pinning)
#   CLIENT_CPUS []    taskset CPU list for fio      (empty: no pinning)
#   OUT [bench/out]   directory for the report (kept; raw fio JSON goes there too)
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-1G}
NBDKIT_PORT=${NBDKIT_PORT:-10811}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
OUT=${OUT:-bench/out}
REPLICAS=${REPLICAS:-1}
[[ $REPLICAS =~ ^[1-8]$ ]] || { echo "REPLICAS must be 1..8, got: $REPLICAS" >&2; exit 1; }
NODES=${NODES:-0}
[[ $NODES =~ ^[0-8]$ ]] || { echo "NODES must be 0..8, got: $NODES" >&2; exit 1; }
if ((NODES > 0 && REPLICAS > NODES)); then
    echo "REPLICAS ($REPLICAS) needs at least as many NODES ($NODES)" >&2
    exit 1
fi
WORKLOADS=("randread 1" "randread 32" "randwrite 1" "randwrite 32")

for tool in fio nbdkit python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
if ((NODES > 0)); then
    cargo build --release -p qbd-master -p qbd-node -p qbd-tools
else
    cargo build --release -p qbd-master
fi
BIN=${CARGO_TARGET_DIR:-target}/release/qbd-master
NODE_BIN=${CARGO_TARGET_DIR:-target}/release/qbd-node
QBD_TOOL=${CARGO_TARGET_DIR:-target}/release/qbd

WORK=$(mktemp -d /dev/shm/qbd-bench.XXXXXX)
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
NAME=nbd-vs-nbdkit-$STAMP
((REPLICAS > 1)) && NAME+=-replicate$REPLICAS
((NODES > 0)) && NAME+=-nodes$NODES
REPORT="$OUT/$NAME.txt"
QBD_PID=
NBDKIT_PID=
NODE_PIDS=()

cleanup() {
    # The master first (it syncs through the nodes when it stops), then the nodes.
    for pid in $QBD_PID $NBDKIT_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $QBD_PID $NBDKIT_PID; do
        wait "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU pinning prefixes (taskset execs its command, so $! stays the server's own pid).
PIN_SERVER=()
PIN_CLIENT=()
[[ -n $SERVER_CPUS ]] && PIN_SERVER=(taskset -c "$SERVER_CPUS")
[[ -n $CLIENT_CPUS ]] && PIN_CLIENT=(taskset -c "$CLIENT_CPUS")

wait_for() { # wait_for SECONDS CONDITION...: poll a condition, bounded
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# Backends: REPLICAS tmpfs directories, or NODES qbd-node daemons each on its own tmpfs directory.
QBD_BACKENDS=()
if ((NODES > 0)); then
    "$QBD_TOOL" keygen >"$WORK/cluster.key"
    for ((i = 1; i <= NODES; i++)); do
        mkdir "$WORK/node$i"
        "${PIN_SERVER[@]}" "$NODE_BIN" --data "$WORK/node$i" --listen 127.0.0.1:0 \
            --cluster-key "$WORK/cluster.key" --id "bench-node$i" \
            >"$WORK/node$i.out" 2>"$WORK/node$i.err" &
        NODE_PIDS+=($!)
    done
    for ((i = 1; i <= NODES; i++)); do
        if ! wait_for 20 grep -q '^qbd-node: ready ' "$WORK/node$i.out"; then
            echo "qbd-node $i not ready; stderr:" >&2
            cat "$WORK/node$i.err" >&2
            exit 1
        fi
        addr=$(sed -n 's/^qbd-node: ready .*tcp=\([^ ]*\).*/\1/p' "$WORK/node$i.out")
        [[ -n $addr ]] || { echo "qbd-node $i: no tcp= in its ready line" >&2; exit 1; }
        QBD_BACKENDS+=(--node "$addr")
    done
    QBD_BACKENDS+=(--cluster-key "$WORK/cluster.key")
else
    for ((i = 1; i <= REPLICAS; i++)); do
        mkdir "$WORK/qbd$i"
        QBD_BACKENDS+=(--dir "$WORK/qbd$i")
    done
fi

# qbd-master: replicate:REPLICAS over those backends, its write-intent log (--state) on tmpfs
# too; the kernel picks its port.
mkdir "$WORK/state"
"${PIN_SERVER[@]}" "$BIN" --volume bench --size "$SIZE" --redundancy "replicate:$REPLICAS" \
    "${QBD_BACKENDS[@]}" --state "$WORK/state" --listen 127.0.0.1:0 \
    >"$WORK/qbd.out" 2>"$WORK/qbd.err" &
QBD_PID=$!
if ! wait_for 20 grep -q '^qbd-master: ready ' "$WORK/qbd.out"; then
    echo "qbd-master not ready; stderr:" >&2
    cat "$WORK/qbd.err" >&2
    exit 1
fi
QBD_ADDR=$(sed -n 's/^qbd-master: ready .*tcp=\([^ ]*\).*/\1/p' "$WORK/qbd.out")
QBD_URI="nbd://$QBD_ADDR/bench"

# nbdkit: file plugin on a tmpfs file of the same size.
truncate -s "$SIZE" "$WORK/nbdkit.img"
"${PIN_SERVER[@]}" nbdkit -f -i 127.0.0.1 -p "$NBDKIT_PORT" -P "$WORK/nbdkit.pid" \
    file "$WORK/nbdkit.img" 2>"$WORK/nbdkit.err" &
NBDKIT_PID=$!
if ! wait_for 20 test -s "$WORK/nbdkit.pid"; then
    echo "nbdkit not ready; stderr:" >&2
    cat "$WORK/nbdkit.err" >&2
    exit 1
fi
NBDKIT_URI="nbd://127.0.0.1:$NBDKIT_PORT/"

fio_run() { # fio_run URI RW QD JSON: one fio job, JSON output to a file
    local uri=$1 rw=$2 qd=$3 json=$4
    shift 4
    "${PIN_CLIENT[@]}" fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k \
        --iodepth="$qd" --size="$SIZE" --time_based --runtime="$RUNTIME" --ramp_time=1 \
        --output-format=json --output="$json" "$@" >/dev/null
}

iops() { # iops JSON RW: the job's IOPS for the read or write side
    python3 -c 'import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
print(round(job["read" if sys.argv[2] == "randread" else "write"]["iops"]))' "$1" "$2"
}

{
    echo "# qbd-master vs nbdkit file plugin, fio ioengine=nbd, 4 KiB, loopback"
    echo "date: $STAMP  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "kernel: $(uname -r)  cpus: $(nproc)  lo mtu: $(cat /sys/class/net/lo/mtu)"
    echo "pinning: servers=${SERVER_CPUS:-none} fio=${CLIENT_CPUS:-none}"
    echo "fio: $(fio --version)  nbdkit: $(nbdkit --version)"
    if ((NODES > 0)); then
        echo "targets: $SIZE on tmpfs each; qbd replicate:$REPLICAS over $NODES qbd-node(s)" \
            "(TCP node protocol on loopback, one tmpfs dir each)"
    else
        echo "targets: $SIZE on tmpfs each; qbd replicate:$REPLICAS over $REPLICAS dir(s)"
    fi
    echo "runtime ${RUNTIME}s per run; $ROUNDS rounds"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} | tee "$REPORT"

echo "pre-filling both targets (sequential 1 MiB writes)..." >&2
for uri in "$QBD_URI" "$NBDKIT_URI"; do
    "${PIN_CLIENT[@]}" fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M \
        --iodepth=8 --size="$SIZE" --output-format=terse >/dev/null
done

RESULTS="$OUT/$NAME.csv"
echo "round,workload,server,iops" >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for workload in "${WORKLOADS[@]}"; do
        read -r rw qd <<<"$workload"
        order=(qbd nbdkit)
        ((round % 2 == 0)) && order=(nbdkit qbd)
        declare -A got=()
        for server in "${order[@]}"; do
            uri=$QBD_URI
            [[ $server == nbdkit ]] && uri=$NBDKIT_URI
            json="$OUT/$NAME-r$round-$rw-qd$qd-$server.json"
            fio_run "$uri" "$rw" "$qd" "$json"
            got[$server]=$(iops "$json" "$rw")
            echo "$round,$rw-qd$qd,$server,${got[$server]}" >>"$RESULTS"
        done
        printf 'round %d  %-14s qbd %8d  nbdkit %8d  ratio %.2f\n' "$round" "$rw-qd$qd" \
            "${got[qbd]}" "${got[nbdkit]}" \
            "$(python3 -c "print(${got[qbd]} / max(${got[nbdkit]}, 1))")" | tee -a "$REPORT"
        unset got
    done
done

echo | tee -a "$REPORT"
python3 - "$RESULTS" <<'PY' | tee -a "$REPORT"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
workloads = list(dict.fromkeys(r["workload"] for r in rows))
def runs(w, s): return [int(r["iops"]) for r in rows if r["workload"] == w and r["server"] == s]
print(f"{'workload':<16}{'qbd median (range)':>26}{'nbdkit median (range)':>28}{'ratio':>8}")
for w in workloads:
    q, n = runs(w, "qbd"), runs(w, "nbdkit")
    cell = lambda v: f"{statistics.median(v):.0f} ({min(v)}-{max(v)})"
    ratio = statistics.median(q) / max(statistics.median(n), 1)
    print(f"{w:<16}{cell(q):>26}{cell(n):>28}{ratio:>8.2f}")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$REPORT"
echo "report: $REPORT" >&2
