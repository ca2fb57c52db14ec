#!/usr/bin/env bash
# A day's run directory read by the release `leakscope check` and
# `leakscope report`: wall time, CPU (user+sys, from wait4) and peak RSS,
# median and spread of interleaved rounds. The day (345,600 samples at
# 4 Hz) is synthesized from a real one-minute recording by the test
# long_recordings, which also holds its disk and memory bounds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=${ROUNDS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
echo "day-long: recording a real minute and synthesizing a day (cargo test --release)"
LEAKSCOPE_DAY_OUT="$work/day" cargo test --release -q -p leakscope --test long_recordings \
  -- --exact a_real_recording_then_a_day_of_its_samples_stay_within_bounds --nocapture 2>&1 \
  | grep -E "^(real recording|a day at|check --json)" || true
cargo build --release -q -p leakscope
echo "day-long: $(du -sh "$work/day" | cut -f1) on disk; $rounds interleaved rounds of check and report"
python3 - "$root/target/release/leakscope" "$work" "$rounds" <<'PY'
import os, statistics, subprocess, sys, time
exe, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
day = os.path.join(work, "day")
cmds = {
    "check": [exe, "check", "--json", day],
    "report": [exe, "report", "--out", None, day],
}
got = {k: [] for k in cmds}
for r in range(rounds):
    for name, cmd in cmds.items():
        cmd = [os.path.join(work, f"html-{r}") if a is None else a for a in cmd]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 1):
            sys.exit(f"{name} exited {code}")
        got[name].append((wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024))
for name, rows in got.items():
    def show(i, unit, fmt):
        v = [row[i] for row in rows]
        return f"{fmt.format(statistics.median(v))} {unit} ({fmt.format(min(v))}-{fmt.format(max(v))})"
    print(f"{name:7} wall {show(0, 's', '{:.2f}')}, CPU {show(1, 's', '{:.2f}')}, peak RSS {show(2, 'MiB', '{:.0f}')}")
PY
