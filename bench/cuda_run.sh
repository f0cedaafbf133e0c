#!/usr/bin/env bash
# make bench-cuda: doppel's GPU timings next to diffusers' UNet2DModel on the same GPU, in one run.
# Env: REPS (default 20), PRESETS (small|seed|all, default all), PYTHON (default python3).
# doppel runs fp32 and TF32 GEMMs; PyTorch runs fp32 (TF32 off) and bf16 autocast. The speed-up
# column compares like with like: doppel fp32 against torch fp32.
set -u
bin=$1
cd "$(dirname "$0")/.." || exit 2
reps=${REPS:-20}
presets=${PRESETS:-all}
py=${PYTHON:-python3}
out=$(mktemp)
"$bin" "$reps" "$presets" | tee -a "$out" | grep '^#'
if "$py" -c "import torch, diffusers; assert torch.cuda.is_available()" 2>/dev/null; then
  PYTHONUNBUFFERED=1 "$py" bench/torch_gpu_bench.py "$reps" "$presets" 2>/dev/null | tee -a "$out" | grep '^#'
else
  echo "# PyTorch + diffusers with CUDA not found ($py): doppel timings only"
fi
awk '
  /^(doppel|torch) / {
    split($2, parts, "-"); prec = parts[3]; model = parts[1] "-" parts[2]; key = model " " $3
    t[$1, prec, key] = $4
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
  }
  function f(x) { return x == "" ? "-" : sprintf("%.2f", x) }
  END {
    printf "%-40s %10s %10s %10s %10s %9s %9s\n", "model / what (ms, median)", "doppel32", "doppelTF32", "torch32", "torchBF16", "fp32 x", "best x"
    for (i = 0; i < n; i++) {
      k = order[i]; d = t["doppel", "fp32", k]; dt = t["doppel", "tf32", k]; p = t["torch", "fp32", k]; pb = t["torch", "bf16", k]
      r = (d != "" && p != "") ? sprintf("%.2fx", p / d) : "-"
      bd = (dt != "" && (d == "" || dt < d)) ? dt : d; bt = (pb != "" && (p == "" || pb < p)) ? pb : p
      rb = (bd != "" && bt != "") ? sprintf("%.2fx", bt / bd) : "-"
      printf "%-40s %10s %10s %10s %10s %9s %9s\n", k, f(d), f(dt), f(p), f(pb), r, rb
    }
  }' "$out"
rm -f "$out"
