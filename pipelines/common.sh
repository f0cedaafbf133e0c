# common.sh: what the pipeline scripts share (sourced, not run).
# BIN: where the doppel executables are (default: the checkout's bin/).
BIN="${BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin}"
PIDS=()
# the stages run side by side: OpenMP threads that spin while they wait would starve each other
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# a free TCP port on 127.0.0.1 (asks the kernel; falls back to a random high port)
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

# starts a background stage and remembers it, so a failure or Ctrl-C stops them all
bg() { "$@" & PIDS+=($!); }
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

need_bins() {
    for b in "$@"; do
        [ -x "$BIN/doppel-$b" ] || die "$BIN/doppel-$b is missing: run 'make' first (or set BIN=...)"
    done
}
