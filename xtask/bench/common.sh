# Shared set-up of the wrk benchmarks: sourced, not run. Sets BIN (the
# release download server, or $DS), WORK (a temp directory, removed at
# exit, with root/4k.bin) and stops the servers listed in PIDS at exit.
BIN=${DS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/download-server}
command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p download-server" >&2; exit 2; }
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2> /dev/null; [ -n "${KEEP:-}" ] && cp "$WORK"/*.pb.gz "$KEEP"/ 2> /dev/null; rm -rf "$WORK"' EXIT
mkdir "$WORK/root"
head -c 4096 /dev/urandom > "$WORK/root/4k.bin"
