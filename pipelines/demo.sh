#!/usr/bin/env bash
# demo.sh: doppel end to end, as a new user would run it, each stage its own process:
#   data     the built-in walking-radar simulator writes 31 people's spectrograms as PNG folders
#            (or --data DIR: your own ID_<n>/ folders)
#   train    pipelines/train.sh: VAE (doppel-encoder), latents, user-conditioned UNet (doppel-diffuser)
#   generate pipelines/generate.sh: new spectrograms for every person -> RUN/generated/ID_<n>/*.png
#   validate pipelines/validate.sh: a judge (user classifier) on the real train split, then
#            doppel-validator score: identity, realism, radar statistics, diversity of the generated
#            set next to the held-out real split -> RUN/report/score.md and score.json
# The defaults finish in about 15 minutes on 2 CPU cores (tiny preset, 32x32); a GPU takes the
# same commands (the stages pick it up with --device auto).
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'USAGE'
usage: pipelines/demo.sh [options]

examples:
  pipelines/demo.sh                                    # simulated data, ~15 min on 2 cores
  pipelines/demo.sh --data ../shared/data/gait10 --out runs/demo-gait10 --preset small --resolution 64 \
      --vae-steps 2000 --unet-steps 3000 --judge-steps 1500

  --data DIR            your spectrograms (ID_<n>/*.png|jpg); default: simulate --users x --per-user
  --users N --per-user M  simulated people and spectrograms per person (31, 100)
  --out RUN             where everything goes (runs/demo)
  --preset tiny|small   model sizes (tiny)         --resolution R   image side (32)
  --vae-steps N (800)   --unet-steps N (1200)      --judge-steps N (600)
  --tstr-steps N        also train on generated, test on real (doppel-validator score; 0: off)
  --gen-per-user N      generated spectrograms per person (8)    --guidance G (4)
USAGE
}

DATA="" USERS=31 PER=100 OUT=runs/demo PRESET=tiny RES=32 VAE_STEPS=800 UNET_STEPS=1200 JUDGE_STEPS=600 GEN=8 G=4 TSTR=0
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --per-user) PER="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --preset) PRESET="$2"; shift 2 ;;
        --resolution) RES="$2"; shift 2 ;;
        --vae-steps) VAE_STEPS="$2"; shift 2 ;;
        --unet-steps) UNET_STEPS="$2"; shift 2 ;;
        --judge-steps) JUDGE_STEPS="$2"; shift 2 ;;
        --gen-per-user) GEN="$2"; shift 2 ;;
        --guidance) G="$2"; shift 2 ;;
        --tstr-steps) TSTR="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
need_bins loader encoder diffuser decoder validator
mkdir -p "$OUT"
start=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "$DATA" ]; then
    DATA="$OUT/data"
    if [ ! -d "$DATA" ]; then
        say "data: simulating $USERS people x $PER spectrograms -> $DATA"
        "$BIN/doppel-loader" --synthetic --users "$USERS" --per-user "$PER" --resolution "$RES" --seed 1 \
            --write "$DATA" --write-colormap jet
    fi
fi

"$here/train.sh" --data "$DATA" --out "$OUT" --preset "$PRESET" --resolution "$RES" --vae-steps "$VAE_STEPS" \
    --unet-steps "$UNET_STEPS" --vae-args "--lr 1e-3 --warmup 50" --unet-args "--lr 1e-3 --warmup 100 --sample-every 0"

"$here/generate.sh" --run "$OUT" --per-user "$GEN" --guidance "$G" --seed 7

"$here/validate.sh" --data "$DATA" --generated "$OUT/generated" --resolution "$RES" --judge-steps "$JUDGE_STEPS" \
    --tstr-steps "$TSTR" --out "$OUT" | tee "$OUT/report.txt"
say "done in $(( $(date +%s) - start )) s: the report is $OUT/report/score.md (every figure in score.json);"
say "generated spectrograms in $OUT/generated/ID_<n>/, sample grids of training in $OUT/unet/samples/"
