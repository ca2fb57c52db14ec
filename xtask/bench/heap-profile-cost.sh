#!/bin/bash
# What a heap profile costs and what it reads like: the release download
# server's leaky session map, a profile before load and after, each dump
# timed, the heap read before and after the dumps (symbolizing must leave
# nothing behind), and the last profile through `go tool pprof -top` and
# `-base`. Needs wrk (apt-get install wrk); go (apt-get install golang-go)
# for the pprof part.
#
#   cargo build --release -p download-server
#   xtask/bench/heap-profile-cost.sh   # DUMPS=5 SECONDS_PER_LOAD=5; KEEP=DIR keeps the profiles
set -u
DUMPS=${DUMPS:-5}
SECS=${SECONDS_PER_LOAD:-5}
. "$(dirname "$0")/common.sh"
"$BIN" --root "$WORK/root" --listen 127.0.0.1:19031 --debug-listen 127.0.0.1:19131 \
  --variant leaky > /dev/null 2>&1 & PIDS+=($!)
sleep 1
D=127.0.0.1:19131
allocated() { curl -s $D/debug/heap/stats | tr -d ' \n' | grep -o '"allocated":[0-9]*' | cut -d: -f2; }
curl -s -o "$WORK/first.pb.gz" $D/debug/pprof/heap
wrk -t2 -c32 -d"${SECS}s" http://127.0.0.1:19031/s/unbounded-session-map/4k.bin | grep -E 'requests in|Requests/sec'
echo "heap allocated after the load: $(allocated) B"
for i in $(seq "$DUMPS"); do
  t=$(curl -s -o "$WORK/last.pb.gz" -w '%{time_total}' $D/debug/pprof/heap)
  echo "dump $i: ${t}s, $(stat -c %s "$WORK/last.pb.gz") B gzipped; heap allocated after: $(allocated) B"
done
if command -v go > /dev/null; then
  go tool pprof -comments "$WORK/last.pb.gz" 2> /dev/null
  go tool pprof -top -nodecount=8 "$WORK/last.pb.gz" 2> /dev/null | sed -n '/flat%/,$p'
  echo "--- -base first.pb.gz (what grew under load)"
  go tool pprof -top -nodecount=5 -base "$WORK/first.pb.gz" "$WORK/last.pb.gz" 2> /dev/null | sed -n '/flat%/,$p'
else
  echo "go not installed: skipping go tool pprof (apt-get install golang-go)"
fi
