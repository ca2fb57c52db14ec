#!/bin/bash
# CPU per procfs sample on a busy host: a target holding 100 fds, with
# 100,000 TIME_WAIT entries on loopback (owned by no process, as load
# leaves them on any server), read the sock_diag netlink way and the
# /proc/PID/net/tcp way, interleaved in rounds; median and range of each.
# Creating the entries takes a few seconds and they last 60 s, so one run
# is one fill. Raises net.ipv4.tcp_max_tw_buckets for the run if it is too
# low to hold them (as root), and puts it back after.
#
#   xtask/bench/sampler-busy-host.sh        # TIME_WAIT=100000 ROUNDS=7
set -eu
TIME_WAIT=${TIME_WAIT:-100000}
ROUNDS=${ROUNDS:-7}
cd "$(dirname "$0")/../.."
cargo build --release -q -p leakscope --example sampler_busy_host
# The kernel drops TIME_WAIT entries past this (and says so in dmesg).
buckets=$(sysctl -n net.ipv4.tcp_max_tw_buckets)
want=$((TIME_WAIT + TIME_WAIT / 10))
if [ "$buckets" -lt "$want" ]; then
  sysctl -q -w net.ipv4.tcp_max_tw_buckets="$want" \
    || { echo "tcp_max_tw_buckets is $buckets, under $want: run as root" >&2; exit 2; }
  trap 'sysctl -q -w net.ipv4.tcp_max_tw_buckets='"$buckets" EXIT
fi
target/release/examples/sampler_busy_host "$TIME_WAIT" "$ROUNDS"
