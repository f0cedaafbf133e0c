#!/usr/bin/env bash
# train.sh: the whole training chain on one machine, each stage its own process over ZeroMQ:
#   doppel-loader (train split, shuffled, augmented, endless) -> doppel-encoder train   (the VAE)
#   doppel-loader (train split, one pass)  -> doppel-encoder encode --cache             (latents)
#   doppel-diffuser train --cache --vae                                                 (the UNet)
# Results: RUN/vae, RUN/latents.safetensors, RUN/unet (with RUN/unet/samples/*.png grids).
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'USAGE'
usage: pipelines/train.sh (--data DIR | --synthetic) [options]

examples:
  pipelines/train.sh --synthetic --users 31 --out runs/sim           # simulated walkers
  pipelines/train.sh --data ../shared/data/gait10 --out runs/gait10 --vae-steps 3000 --unet-steps 3000

  --data DIR | --synthetic   real spectrograms (ID_<n>/ folders) or the built-in simulator
  --users N --per-user M     simulated users and spectrograms per user (31, 200)
  --out RUN                  run folder (runs/train)
  --preset tiny|small|seed   model sizes (small)
  --resolution R             image side (64)
  --vae-steps N              VAE optimizer steps (2000); 0 keeps RUN/vae as it is
  --unet-steps N             UNet optimizer steps (3000)
  --vae-args "..."           extra doppel-encoder train options (e.g. "--lr 5e-4 --disc-weight 0.1")
  --unet-args "..."          extra doppel-diffuser train options (e.g. "--lr 2e-4 --snr-gamma 5")
  --resume                   continue both trainings where RUN's checkpoints stopped
USAGE
}

SRC=() OUT=runs/train PRESET=small RES=64 VAE_STEPS=2000 UNET_STEPS=3000 VAE_ARGS="" UNET_ARGS="" RESUME=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data) SRC=(--data "$2"); shift 2 ;;
        --synthetic) SRC=(--synthetic); shift ;;
        --users|--per-user) SRC+=("$1" "$2"); shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --preset) PRESET="$2"; shift 2 ;;
        --resolution) RES="$2"; shift 2 ;;
        --vae-steps) VAE_STEPS="$2"; shift 2 ;;
        --unet-steps) UNET_STEPS="$2"; shift 2 ;;
        --vae-args) VAE_ARGS="$2"; shift 2 ;;
        --unet-args) UNET_ARGS="$2"; shift 2 ;;
        --resume) RESUME=(--resume); shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
[ ${#SRC[@]} -gt 0 ] || { usage >&2; die "give --data DIR or --synthetic"; }
need_bins loader encoder diffuser
mkdir -p "$OUT"

if [ "$VAE_STEPS" -gt 0 ]; then
    say "VAE: $VAE_STEPS steps ($PRESET) -> $OUT/vae"
    P=$(free_port)
    bg "$BIN/doppel-loader" "${SRC[@]}" --resolution "$RES" --split train --shuffle --forever --augment --seed 1 \
        --out "@tcp://127.0.0.1:$P" 2>"$OUT/loader-vae.log"
    # shellcheck disable=SC2086
    "$BIN/doppel-encoder" train --in ">tcp://127.0.0.1:$P" --vae "$OUT/vae" --preset "$PRESET" --steps "$VAE_STEPS" \
        "${RESUME[@]}" $VAE_ARGS
    cleanup; PIDS=()
fi

say "latents: encoding the train split -> $OUT/latents.safetensors"
P=$(free_port)
bg "$BIN/doppel-loader" "${SRC[@]}" --resolution "$RES" --split train --out "@tcp://127.0.0.1:$P" 2>"$OUT/loader-encode.log"
"$BIN/doppel-encoder" encode --vae "$OUT/vae" --in ">tcp://127.0.0.1:$P" --cache "$OUT/latents.safetensors"
cleanup; PIDS=()

say "UNet: $UNET_STEPS steps ($PRESET) -> $OUT/unet"
# shellcheck disable=SC2086
"$BIN/doppel-diffuser" train --cache "$OUT/latents.safetensors" --unet "$OUT/unet" --preset "$PRESET" \
    --steps "$UNET_STEPS" --vae "$OUT/vae" --augment "${RESUME[@]}" $UNET_ARGS
say "done: $OUT/vae, $OUT/unet (sample grids in $OUT/unet/samples/); next: pipelines/generate.sh --run $OUT"
