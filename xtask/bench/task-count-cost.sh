#!/bin/bash
# What counting tasks costs the download server, side by side: the same
# release binary with no task instrumentation, with the agent's task hooks,
# and with console-subscriber, under the same wrk loads, interleaved in
# rounds so the ratios compare like with like on a noisy machine.
# Needs wrk (Debian: apt-get install wrk).
#
#   cargo build --release -p download-server
#   xtask/bench/task-count-cost.sh            # ROUNDS=3 SECONDS=5 by default
set -u
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_LOAD:-5}
. "$(dirname "$0")/common.sh"
# Each server gets its own debug port; the console one also a console port.
LEAKSCOPE_TASK_HOOKS=off "$BIN" --root "$WORK/root" --listen 127.0.0.1:19011 --debug-listen 127.0.0.1:19111 > /dev/null 2>&1 & PIDS+=($!)
"$BIN" --root "$WORK/root" --listen 127.0.0.1:19012 --debug-listen 127.0.0.1:19112 > /dev/null 2>&1 & PIDS+=($!)
LEAKSCOPE_TASK_HOOKS=off "$BIN" --root "$WORK/root" --listen 127.0.0.1:19013 --debug-listen 127.0.0.1:19113 --console 127.0.0.1:19213 > /dev/null 2>&1 & PIDS+=($!)
sleep 1
declare -A name=([19011]=none [19012]=hooks [19013]=console)
declare -A rps
for round in $(seq "$ROUNDS"); do
  for load in keepalive close; do
    hdr=()
    [ "$load" = close ] && hdr=(-H "Connection: close")
    for port in 19011 19012 19013; do
      r=$(wrk -t2 -c64 -d"${SECS}s" "${hdr[@]}" "http://127.0.0.1:$port/files/4k.bin" \
        | awk '/Requests\/sec/ {print $2}')
      rps[$round,$load,$port]=$r
      echo "round $round | 4 KiB $load | ${name[$port]} | $r req/s"
    done
  done
done
echo "--- ratios to 'none' in the same round"
for load in keepalive close; do
  for port in 19012 19013; do
    line="4 KiB $load | ${name[$port]}/none |"
    for round in $(seq "$ROUNDS"); do
      line="$line $(awk -v a="${rps[$round,$load,$port]}" -v b="${rps[$round,$load,19011]}" 'BEGIN {printf "%.2f", a / b}')"
    done
    echo "$line"
  done
done
echo "--- live tasks the hooks count at idle (should be the server's own few)"
curl -s 127.0.0.1:19112/debug/tasks | tr -d ' \n' | grep -o '"hooks":{"live":[0-9]*,"spawned_total":[0-9]*'
echo
echo "--- heap allocated at idle after the load"
for port in 19111 19112 19113; do
  echo "${name[$((port - 100))]}: $(curl -s 127.0.0.1:$port/debug/heap/stats | tr -d ' \n' | grep -o '"allocated":[0-9]*')"
done
