#!/usr/bin/env bash
# device_check.sh: one run of the GPU checks on a lent machine that has CUDA but none of doppel's
# Debian libraries: binaries built on the workstation, their shared libraries packed by
# `bench/device_check.sh pack` into .devlibs/libs.tar.xz, diffusers wheels in .whl/.
#   here:  make -j2 all && bench/device_check.sh pack
#   there: bench/device_check.sh            (writes logs under $OUT, or /tmp/doppel-gpu)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ "${1:-}" = pack ]; then
  rm -rf .devlibs && mkdir -p .devlibs/lib
  for f in $(ldd bin/doppel-* build/tests/test_cuda build/bench/bench_cuda | awk '{print $3}' | grep / | sort -u); do
    case $(basename "$f") in  # the C/C++ runtimes and CUDA's own libraries are there already
      libc.so*|libm.so*|libstdc++*|libgcc_s*|libresolv*|libpthread*|libdl.so*|librt.so*|libcublas*|libcudart*|libcufft*) continue ;;
    esac
    cp -L "$f" .devlibs/lib/
  done
  (cd .devlibs && tar cJf libs.tar.xz lib && rm -rf lib)
  ls -la .devlibs
  exit 0
fi
out=${OUT:-/tmp/doppel-gpu}
mkdir -p "$out" /tmp/devlibs
tar xJf .devlibs/libs.tar.xz -C /tmp/devlibs
cublas=$(find /usr/local /opt /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -1)
cufft=$(find /usr/local /opt /usr/lib -name 'libcufft.so.12' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=/tmp/devlibs/lib${cublas:+:$(dirname "$cublas")}${cufft:+:$(dirname "$cufft")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
ldd build/tests/test_cuda | grep 'not found' && echo "missing libraries (above)"
echo "== make test-cuda"
for t in build/tests/test_cuda build/tests/test_cuda_*; do
  [ -x "$t" ] || continue
  timeout "${TEST_TIMEOUT:-240}" "$t" 2>&1 | tee "$out/$(basename "$t").log" | grep -v '^PASS\|^  close' | tail -40
done
[ -n "${TESTS_ONLY:-}" ] && exit 0
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
echo "== make bench-cuda"
REPS=${REPS:-10} PRESETS=${PRESETS:-all} PYTHON=python3 timeout "${BENCH_TIMEOUT:-300}" \
  bench/cuda_run.sh build/bench/bench_cuda 2>&1 | tee "$out/bench_cuda.log"
