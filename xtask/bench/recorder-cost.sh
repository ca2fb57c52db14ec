#!/bin/bash
# What attaching the recorder at 4 Hz costs its target: the same load with
# and without `leakscope record` (procfs, agent, console and metrics
# sources), interleaved in rounds so ratios compare like with like on a
# noisy machine. Needs only the release binaries:
#
#   cargo build --release -p leakscope -p download-server
#   xtask/bench/recorder-cost.sh
set -eu
BIN=${BIN:-$PWD/target/release}
SECS=${SECS:-8}
ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/root"
head -c 4096 /dev/urandom > "$dir/root/4k.bin"
head -c 1048576 /dev/urandom > "$dir/root/1m.bin"
"$BIN/download-server" --root "$dir/root" --listen 127.0.0.1:0 --debug-listen 127.0.0.1:0 \
  --console 127.0.0.1:0 > "$dir/server.out" 2> /dev/null &
SERVER=$!
until grep -q '^listening on' "$dir/server.out"; do sleep 0.1; done
addr() { grep "^$1" "$dir/server.out" | head -1 | awk '{print $NF}'; }
HTTP=$(addr "listening on"); DEBUG=$(addr "debug listening on"); CONSOLE=$(addr "console listening on")
load() {
  "$BIN/leakscope" load -q --url "http://$HTTP/files/$1" --concurrency 8 --load-duration "${SECS}s" 2> /dev/null \
    | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["requests_per_sec"])'
}
echo "round | file | alone req/s | recorded req/s | ratio | procfs / agent / console / metrics ms per sample"
for round in $(seq "$ROUNDS"); do
  for f in 4k.bin 1m.bin; do
    alone=$(load "$f")
    run="$dir/run-$round-$f"
    "$BIN/leakscope" record -q --pid "$SERVER" --interval 250ms --duration "$((SECS + 1))s" --out "$run" \
      --agent "http://$DEBUG" --console "http://$CONSOLE" --metrics "http://$HTTP/metrics" > /dev/null 2>&1 &
    REC=$!
    sleep 0.5
    recorded=$(load "$f")
    wait $REC
    costs=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["sources"]; print(" / ".join("%.2f" % m[s]["mean_cost_ms"] for s in ["procfs","agent","console","metrics"]))' "$run/meta.json")
    echo "$round | $f | $alone | $recorded | $(python3 -c "print('%.3f' % ($recorded / $alone))") | $costs"
  done
done
