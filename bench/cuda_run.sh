#!/usr/bin/env bash
# make bench-cuda: doppel's GPU timings next to diffusers' UNet2DModel on the same GPU, in one run.
# Env: REPS (default 20), PRESETS (small|seed|all, default all), PYTHON (default python3).
# doppel runs fp32, TF32 and bf16 GEMMs; PyTorch runs fp32 (TF32 off) and bf16 autocast. "fp32 x"
# compares like with like (fp32 against fp32); "best x" each side's fastest precision.
set -u
bin=$1
cd "$(dirname "$0")/.." || exit 2
reps=${REPS:-20}
presets=${PRESETS:-all}
py=${PYTHON:-python3}
out=$(mktemp)
"$bin" "$reps" "$presets" | tee -a "$out"
if "$py" -c "import torch, diffusers; assert torch.cuda.is_available()" 2>/dev/null; then
  PYTHONUNBUFFERED=1 "$py" bench/torch_gpu_bench.py "$reps" "$presets" 2>/dev/null | tee -a "$out"
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
    printf "%-38s %9s %9s %9s %9s %9s %7s %7s\n", "model / what (ms, median)", "doppel32", "doppelTF", "doppelBF", "torch32", "torchBF", "fp32 x", "best x"
    for (i = 0; i < n; i++) {
      k = order[i]; d = t["doppel", "fp32", k]; dt = t["doppel", "tf32", k]; db = t["doppel", "bf16", k]
      p = t["torch", "fp32", k]; pb = t["torch", "bf16", k]
      r = (d != "" && p != "") ? sprintf("%.2fx", p / d) : "-"
      bd = d; if (dt != "" && (bd == "" || dt < bd)) bd = dt; if (db != "" && (bd == "" || db < bd)) bd = db
      bt = (pb != "" && (p == "" || pb < p)) ? pb : p
      rb = (bd != "" && bt != "") ? sprintf("%.2fx", bt / bd) : "-"
      printf "%-38s %9s %9s %9s %9s %9s %7s %7s\n", k, f(d), f(dt), f(db), f(p), f(pb), r, rb
    }
  }' "$out"
rm -f "$out"
