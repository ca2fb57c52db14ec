#!/bin/bash
# leakscope-agent feature costs, side by side: the same files and wrk load
# against four servers interleaved in three rounds, so ratios compare like
# with like on a noisy machine. Needs wrk and curl (not on CI machines).
#
#   cargo build --release -p download-server --no-default-features && cp target/release/download-server /tmp/ds-system
#   cargo build --release -p download-server && cp target/release/download-server /tmp/ds-jemalloc
#   head -c 4096 /dev/urandom > root/4k.bin; head -c 1048576 /dev/urandom > root/1m.bin
#   ROOT=$PWD/root DS_SYSTEM=/tmp/ds-system DS_JEMALLOC=/tmp/ds-jemalloc xtask/bench/agent-cost.sh
set -u
cd "$(mktemp -d)"
ROOT=${ROOT:?a directory with 4k.bin and 1m.bin}
${DS_SYSTEM:?build with --no-default-features and set DS_SYSTEM}   --root $ROOT --listen 127.0.0.1:19001 > /dev/null 2>&1 & P1=$!
${DS_JEMALLOC:?set DS_JEMALLOC to the default release build} --root $ROOT --listen 127.0.0.1:19002 --debug-listen 127.0.0.1:19102 > /dev/null 2>&1 & P2=$!
MALLOC_CONF=prof:false ${DS_JEMALLOC:?set DS_JEMALLOC to the default release build} --root $ROOT --listen 127.0.0.1:19003 --debug-listen 127.0.0.1:19103 > /dev/null 2>&1 & P3=$!
${DS_JEMALLOC:?set DS_JEMALLOC to the default release build} --root $ROOT --listen 127.0.0.1:19004 --debug-listen 127.0.0.1:19104 --console 127.0.0.1:19204 > /dev/null 2>&1 & P4=$!
sleep 1
names=([19001]=system [19002]=jemalloc+prof [19003]=jemalloc-noprof [19004]=jemalloc+prof+console)
for round in 1 2 3; do
  for load in "4k.bin" "4k.bin close" "1m.bin"; do
    set -- $load
    f=$1; hdr=()
    [ "${2:-}" = close ] && hdr=(-H "Connection: close")
    for port in 19001 19002 19003 19004; do
      r=$(wrk -t2 -c64 -d5s "${hdr[@]}" http://127.0.0.1:$port/files/$f | grep -E "Requests/sec" | tr -s ' ')
      echo "round $round | $load | ${names[$port]} | $r"
    done
  done
done
echo "--- heap at idle after load (debug /heap/stats)"
for port in 19102 19103 19104; do
  echo "$port $(curl -s 127.0.0.1:$port/debug/heap/stats | tr -d ' \n')"
done
kill $P1 $P2 $P3 $P4
