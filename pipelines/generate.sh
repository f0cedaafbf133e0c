#!/usr/bin/env bash
# generate.sh: doppel-diffuser sample -> doppel-decoder -> PNG folders in the dataset layout
# (OUT/ID_<n>/<seed>.png, each PNG with its generation settings in an iTXt chunk).
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'USAGE'
usage: pipelines/generate.sh --run RUN [options]   (RUN holds vae/ and unet/, as train.sh leaves it)

examples:
  pipelines/generate.sh --run runs/sim --per-user 16
  pipelines/generate.sh --run runs/gait10 --users ID_3,ID_7 --per-user 50 --guidance 4 --sampler ddim --steps 50

  --run RUN            the run folder (or --vae DIR --unet DIR)
  --out DIR            where the PNGs go (RUN/generated)
  --users all|LIST     names or label indices (all)      --per-user N (8)
  --sampler ddpm|ddim|dpmpp2m (dpmpp2m)   --steps S (20)   --guidance G (4)   --seed S (0)
  --decoders K         decoder processes sharing the stream (1)
USAGE
}

RUN="" VAE="" UNET="" OUT="" USERS=all PER=8 SAMPLER=dpmpp2m STEPS=20 G=4 SEED=0 K=1
while [ $# -gt 0 ]; do
    case "$1" in
        --run) RUN="$2"; shift 2 ;;
        --vae) VAE="$2"; shift 2 ;;
        --unet) UNET="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --per-user) PER="$2"; shift 2 ;;
        --sampler) SAMPLER="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --guidance) G="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --decoders) K="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
VAE="${VAE:-${RUN:+$RUN/vae}}" UNET="${UNET:-${RUN:+$RUN/unet}}" OUT="${OUT:-${RUN:-runs}/generated}"
[ -n "$VAE" ] && [ -n "$UNET" ] || { usage >&2; die "give --run RUN (or --vae DIR --unet DIR)"; }
need_bins diffuser decoder

P=$(free_port)
say "generating $PER per user ($USERS) with $SAMPLER, $STEPS steps, guidance $G -> $OUT"
TIMEOUT=()
[ "$K" -gt 1 ] && TIMEOUT=(--timeout 30)   # several decoders: the end frame reaches only one
for _ in $(seq "$K"); do
    bg "$BIN/doppel-decoder" --vae "$VAE" --in ">tcp://127.0.0.1:$P" --png "$OUT" "${TIMEOUT[@]}"
done
"$BIN/doppel-diffuser" sample --unet "$UNET" --vae "$VAE" --users "$USERS" --per-user "$PER" --sampler "$SAMPLER" \
    --steps "$STEPS" --guidance "$G" --seed "$SEED" --out "@tcp://127.0.0.1:$P"
for p in "${PIDS[@]}"; do wait "$p" || die "a decoder failed"; done
PIDS=()
say "done: $(find "$OUT" -name '*.png' | wc -l) PNGs in $OUT"
