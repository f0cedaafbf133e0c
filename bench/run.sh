#!/usr/bin/env bash
# make bench: doppel's CPU timings next to the same models in PyTorch, in the same invocation.
# Env: REPS (default 5), THREADS (default: all cores), PYTHON (default .venv-ref/bin/python or python3).
set -u
bin=$1
cd "$(dirname "$0")/.." || exit 2
reps=${REPS:-5}
threads=${THREADS:-$(nproc)}
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv-ref/bin/python ]; then py=.venv-ref/bin/python; else py=python3; fi
fi
out=$(mktemp)
echo "doppel bench: $(lscpu | sed -n 's/^Model name: *//p'), $threads threads, median of $reps runs"
OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "$bin" "$reps" | tee -a "$out" | grep '^#'
if "$py" -c "import torch, diffusers" 2>/dev/null; then
  "$py" bench/torch_bench.py "$reps" "$threads" 2>/dev/null >>"$out" || echo "PyTorch run failed"
  echo "PyTorch $("$py" -c 'import torch; print(torch.__version__)'), diffusers $("$py" -c 'import diffusers; print(diffusers.__version__)')"
else
  echo "PyTorch + diffusers not found ($py): doppel timings only (see tests/reference/README.md)"
fi
awk '
  !/^#/ { key = $2 " " $3; t[$1, key] = $4; if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
  END {
    printf "%-34s %12s %12s %10s\n", "model / pass", "doppel ms", "torch ms", "speed-up"
    for (i = 0; i < n; i++) {
      k = order[i]; d = t["doppel", k]; p = t["torch", k]
      if (p != "") printf "%-34s %12.1f %12.1f %9.2fx\n", k, d, p, p / d
      else printf "%-34s %12.1f %12s %10s\n", k, d, "-", "-"
    }
  }' "$out"
rm -f "$out"
