#!/usr/bin/env bash
# Regenerates tests/fixtures/*.safetensors with PyTorch + diffusers (see tests/reference/README.md).
# Usage (from anywhere): tests/reference/make_all.sh    PYTHON=/path/to/python overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv-ref/bin/python}"

if ! "$PY" -c 'import torch, diffusers, safetensors' >/dev/null 2>&1; then
    echo "make_all.sh: '$PY' cannot import torch, diffusers and safetensors." >&2
    echo "Set up the reference environment as described in tests/reference/README.md," >&2
    echo "or point PYTHON at an interpreter that has them (PYTHON=... make fixtures)." >&2
    exit 1
fi
"$PY" -c 'import torch, diffusers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}")'

export PYTHONWARNINGS="ignore::FutureWarning"
for script in ops blocks models optim diffusers_folder disc schedulers metrics; do
    echo "== $script.py"
    "$PY" "tests/reference/$script.py"
done

# every fixture must load back
"$PY" - <<'PYEOF'
import glob, json, os
from safetensors import safe_open
files = sorted(glob.glob("tests/fixtures/*.safetensors"))
total = 0
for f in files:
    with safe_open(f, "pt") as s:
        json.loads(s.metadata()["config"])
        for k in s.keys():
            s.get_tensor(k)
    total += os.path.getsize(f)
print(f"{len(files)} fixtures load back, {total / 1e6:.2f} MB in all")
PYEOF
