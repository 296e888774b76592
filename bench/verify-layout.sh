#!/bin/sh
# Times `qbd verify` on big layouts built without a master
# (tools/examples/verify_layout.rs):
#  1. fast: a 1 TiB volume, 262144 chunks of 4 MiB, replicate:3 over three
#     directory backends (786432 sparse part files): three runs, wall time
#     each (the issue's bar: under 2 s);
#  2. deep: FILLED_CHUNKS chunks with every block written (replicate:3),
#     `qbd verify --deep` against `cat` of the same part files to
#     /dev/null, in the same run (page cache warm for both: cat runs
#     first, then verify, then cat again); then the same files served by
#     three qbd-nodes on 127.0.0.1 (--insecure), which scan them
#     themselves: `qbd verify --deep --node ...`.
# Usage: bench/verify-layout.sh [ROOT] (default /tmp/qbd-verify-bench,
# removed at the end; needs ~3.5 GiB there for the deep layout).
set -eu
ROOT=${1:-/tmp/qbd-verify-bench}
CHUNKS=${CHUNKS:-262144}
FILLED_CHUNKS=${FILLED_CHUNKS:-256}
cd "$(dirname "$0")/.."
cargo build --quiet --release -p qbd-tools --bin qbd --example verify_layout
cargo build --quiet --release -p qbd-node --bin qbd-node
BIN=${CARGO_TARGET_DIR:-target}/release
rm -rf "$ROOT"
mkdir -p "$ROOT"
trap 'rm -rf "$ROOT"' EXIT

secs() { # runs "$@", prints wall seconds; exit status 0 or 1 is fine
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || [ $? -eq 1 ]
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

echo "building the fast layout: $CHUNKS chunks x 3 parts (sparse)"
$BIN/examples/verify_layout "$ROOT/fast" 3 replicate:3 "$CHUNKS" 4M 0 2>/dev/null
FAST="--volume bench --dir $ROOT/fast/b0 --dir $ROOT/fast/b1 --dir $ROOT/fast/b2"
$BIN/qbd verify $FAST | head -4
for i in 1 2 3; do
    echo "fast verify run $i: $(secs $BIN/qbd verify $FAST) s"
done
rm -rf "$ROOT/fast"

echo "building the deep layout: $FILLED_CHUNKS chunks x 3 parts, every block written"
$BIN/examples/verify_layout "$ROOT/deep" 3 replicate:3 "$FILLED_CHUNKS" 4M "$FILLED_CHUNKS" 2>/dev/null
DEEP="--volume bench --dir $ROOT/deep/b0 --dir $ROOT/deep/b1 --dir $ROOT/deep/b2"
BYTES=$(du -cb "$ROOT"/deep/b*/1/*/* | tail -1 | cut -f1)
cat_secs() { secs sh -c "cat $ROOT/deep/b*/1/*/* > /dev/null"; }
c1=$(cat_secs)
d=$(secs $BIN/qbd verify --deep $DEEP)
c2=$(cat_secs)
$BIN/qbd verify --deep $DEEP | head -4
mib() { echo "scale=1; $BYTES / 1048576 / $1" | bc; }
echo "deep verify: $BYTES bytes of part files in $d s = $(mib "$d") MiB/s"
echo "cat > /dev/null: $c1 s = $(mib "$c1") MiB/s before, $c2 s = $(mib "$c2") MiB/s after"

echo "the same files behind three qbd-nodes (each scans its own)"
PIDS=""
NODES=""
for i in 0 1 2; do
    $BIN/qbd-node --data "$ROOT/deep/b$i" --listen 127.0.0.1:0 --id "b$i" --insecure \
        >"$ROOT/node$i.out" 2>/dev/null &
    PIDS="$PIDS $!"
    tries=0
    until grep -q "tcp=" "$ROOT/node$i.out" 2>/dev/null; do
        tries=$((tries + 1)); [ $tries -lt 100 ] || { echo "node $i did not start"; exit 1; }
        sleep 0.1
    done
    NODES="$NODES --node $(sed -n 's/.*tcp=\([^ ]*\).*/\1/p' "$ROOT/node$i.out")"
done
n=$(secs $BIN/qbd verify --deep --volume bench --insecure $NODES)
$BIN/qbd verify --deep --volume bench --insecure $NODES | head -2 | tail -1
kill $PIDS
wait 2>/dev/null || true
echo "deep verify over nodes: $n s = $(mib "$n") MiB/s"
