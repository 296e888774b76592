#!/usr/bin/env bash
# ec:4+2 against replicate:3 on the same six qbd-node daemons (TCP, 127.0.0.1), through
# qbd-master and fio's nbd engine: 1 MiB sequential write throughput, 4 KiB random read
# latency at QD1 healthy, then the same reads degraded (one node frozen with SIGSTOP).
#
# Both volumes live on the same six nodes (data on tmpfs, /dev/shm); each round starts the
# master of one volume, runs the workloads, stops it, then the other (alternating which goes
# first), so drift on the shared two cores hits both. After the rounds node 0 is frozen and
# each volume is read again degraded (EC: reconstruction from the other parts, one decode per
# chunk, cached; replicate: another copy). Report: per-round numbers, medians and ranges, and
# the ratios ec/replicate.
#
# Environment (defaults in brackets):
#   RUNTIME [5]   seconds per fio run      ROUNDS [3]   rounds
#   SIZE [512M]   volume size              OUT [bench/out-ec]  report and raw fio JSON
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${RUNTIME:-5}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-512M}
OUT=${OUT:-bench/out-ec}
for tool in fio python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
cargo build --release -p qbd-master -p qbd-node -p qbd-tools
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
WORK=$(mktemp -d /dev/shm/qbd-ec-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/qbd" keygen > "$WORK/key"
NODES=()
NODE_PIDS=()
for i in 0 1 2 3 4 5; do
    mkdir -p "$WORK/n$i"
    "$BIN/qbd-node" --data "$WORK/n$i" --listen 127.0.0.1:0 --cluster-key "$WORK/key" \
        --id "n$i" > "$WORK/n$i.out" 2> "$WORK/n$i.err" &
    PIDS+=($!)
    NODE_PIDS+=($!)
done
for i in 0 1 2 3 4 5; do
    for _ in $(seq 100); do grep -q ready "$WORK/n$i.out" && break; sleep 0.1; done
    addr=$(sed -n 's/.* tcp=\([^ ]*\).*/\1/p' "$WORK/n$i.out")
    [[ -n $addr ]] || { echo "node $i did not start: $(cat "$WORK/n$i.err")" >&2; exit 1; }
    NODES+=(--node "$addr")
done

# start_master VOLUME REDUNDANCY: starts it, sets MASTER_PID and URI.
start_master() {
    local vol=$1 red=$2
    "$BIN/qbd-master" --volume "$vol" --size "$SIZE" --redundancy "$red" --chunk-size 4M \
        --cluster-key "$WORK/key" "${NODES[@]}" --state "$WORK/state" --listen 127.0.0.1:0 \
        > "$WORK/m.out" 2> "$WORK/m-$vol.err" &
    MASTER_PID=$!
    for _ in $(seq 300); do grep -q ready "$WORK/m.out" && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/.* tcp=\([^ ]*\).*/\1/p' "$WORK/m.out")
    [[ -n $addr ]] || { echo "master did not start: $(tail -5 "$WORK/m-$vol.err")" >&2; exit 1; }
    URI="nbd://$addr/$vol"
}

stop_master() {
    kill -TERM "$MASTER_PID"
    wait "$MASTER_PID" || true
}

# fio_run NAME ARGS...: JSON to $OUT/NAME.json
fio_run() {
    local name=$1
    shift
    fio --name="$name" --ioengine=nbd --uri="$URI" --output-format=json \
        --output="$OUT/$name.json" "$@" > /dev/null
}

workloads() {
    local vol=$1 round=$2
    fio_run "$vol-seqwrite-r$round" --rw=write --bs=1M --iodepth=4 --size="$SIZE" \
        --time_based --runtime="$RUNTIME"
    fio_run "$vol-randread-r$round" --rw=randread --bs=4k --iodepth=1 --size="$SIZE" \
        --time_based --runtime="$RUNTIME"
}

for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=("ec ec:4+2" "rep replicate:3"); else order=("rep replicate:3" "ec ec:4+2"); fi
    for entry in "${order[@]}"; do
        set -- $entry
        start_master "$1" "$2"
        workloads "$1" "$round"
        stop_master
    done
done

# Degraded: node 0 frozen (SIGSTOP) while a master serves; a warm-up run lets the master's
# requests to it time out (5 s) and mark it failed, then the measured run reads degraded.
for round in $(seq "$ROUNDS"); do
    for entry in "ec ec:4+2" "rep replicate:3"; do
        set -- $entry
        start_master "$1" "$2"
        kill -STOP "${NODE_PIDS[0]}"
        fio_run "$1-warmup-r$round" --rw=randread --bs=4k --iodepth=1 --size="$SIZE" \
            --time_based --runtime=8
        fio_run "$1-degradedread-r$round" --rw=randread --bs=4k --iodepth=1 --size="$SIZE" \
            --time_based --runtime="$RUNTIME"
        stop_master
        kill -CONT "${NODE_PIDS[0]}"
    done
done

python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/report.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def job(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)["jobs"][0]
def series(vol, kind):
    vals = []
    for r in range(1, rounds + 1):
        j = job(f"{vol}-{kind}-r{r}")
        if kind == "seqwrite":
            vals.append(j["write"]["bw_bytes"] / 2**20)
        else:
            vals.append(j["read"]["clat_ns"]["percentile"]["50.000000"] / 1000)
    return vals
print("ec:4+2 vs replicate:3 on the same six qbd-nodes (TCP, 127.0.0.1, tmpfs), fio nbd engine")
rows = [("seqwrite", "1 MiB sequential write QD4, MiB/s"),
        ("randread", "4 KiB random read QD1 healthy, median latency µs"),
        ("degradedread", "4 KiB random read QD1, node 0 down, median latency µs")]
for kind, label in rows:
    print(label)
    med = {}
    for vol in ("ec", "rep"):
        v = series(vol, kind)
        med[vol] = statistics.median(v)
        print(f"  {vol:4} median {med[vol]:9.1f}  range {min(v):.1f}-{max(v):.1f}  rounds {['%.1f' % x for x in v]}")
    print(f"  ratio ec/replicate: {med['ec'] / med['rep']:.2f}")
ec_h, ec_d = statistics.median(series("ec", "randread")), statistics.median(series("ec", "degradedread"))
print(f"ec:4+2 degraded/healthy 4 KiB read latency: {ec_d / ec_h:.2f}")
EOF
