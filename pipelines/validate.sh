#!/usr/bin/env bash
# validate.sh: score a generator against real data: trains a judge on DIR's train split (unless
# one is given), then doppel-validator score with DIR's train split as the reference, its val split
# as the calibration, and the generated set from a folder or from a remote doppel-diffuser serve.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'USAGE'
usage: pipelines/validate.sh --data DIR (--generated DIR | --generator EP --vae VAE) [options]

examples:
  pipelines/validate.sh --data runs/demo/data --generated runs/demo/generated --resolution 32
  pipelines/validate.sh --data ../shared/data/gait10 --generator tcp://gpu-host:5560 --vae runs/gait10/vae \
      --judge runs/gait10/judge --per-user 64

  --data DIR          real spectrograms (ID_<n>/ folders; the loader's train/val split)
  --generated DIR     a generated set in the ID_<n>/ layout, or:
  --generator EP      a running doppel-diffuser serve (pipelines/serve.sh) with --vae VAE
  --per-user N        samples per user asked of the generator (16)
  --judge DIR         the user classifier (trained here into OUT/judge when absent)
  --judge-steps N     its training steps (600)     --resolution R (64)
  --tstr-steps N      also train on generated, test on real (0: off)
  --out OUT           report folder (runs/validate)
USAGE
}

DATA="" GEN=() VAE="" JUDGE="" JSTEPS=600 RES=64 TSTR=0 OUT=runs/validate PER=16
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --generated) GEN=(--generated "$2"); shift 2 ;;
        --generator) GEN=(--generator "$2"); shift 2 ;;
        --vae) VAE="$2"; shift 2 ;;
        --per-user) PER="$2"; shift 2 ;;
        --judge) JUDGE="$2"; shift 2 ;;
        --judge-steps) JSTEPS="$2"; shift 2 ;;
        --resolution) RES="$2"; shift 2 ;;
        --tstr-steps) TSTR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
[ -n "$DATA" ] && [ ${#GEN[@]} -gt 0 ] || { usage >&2; die "give --data DIR and --generated DIR or --generator EP"; }
[ "${GEN[0]}" != --generator ] || [ -n "$VAE" ] || die "--generator needs --vae VAE"
need_bins loader validator
mkdir -p "$OUT"
JUDGE=${JUDGE:-$OUT/judge}
if [ ! -f "$JUDGE/config.json" ]; then
    say "judge: $JSTEPS steps on the train split of $DATA -> $JUDGE"
    P=$(free_port)
    bg "$BIN/doppel-loader" --data "$DATA" --resolution "$RES" --split train --shuffle --forever --augment --seed 2 \
        --batch 32 --out "@tcp://127.0.0.1:$P" 2>"$OUT/loader-judge.log"
    "$BIN/doppel-validator" train --in ">tcp://127.0.0.1:$P" --judge "$JUDGE" --steps "$JSTEPS" --augment \
        --timeout 120 >/dev/null
    cleanup; PIDS=()
fi
REMOTE=()
[ "${GEN[0]}" = --generator ] && REMOTE=(--vae "$VAE" --per-user "$PER")
say "score -> $OUT/report"
PR=$(free_port) PV=$(free_port)
bg "$BIN/doppel-loader" --data "$DATA" --resolution "$RES" --split train --batch 64 --out "@tcp://127.0.0.1:$PR" \
    2>"$OUT/loader-real.log"
bg "$BIN/doppel-loader" --data "$DATA" --resolution "$RES" --split val --batch 64 --out "@tcp://127.0.0.1:$PV" \
    2>"$OUT/loader-val.log"
"$BIN/doppel-validator" score --judge "$JUDGE" --real ">tcp://127.0.0.1:$PR" --real-val ">tcp://127.0.0.1:$PV" \
    "${GEN[@]}" "${REMOTE[@]}" --report "$OUT/report" --timeout 120 --tstr-steps "$TSTR"
cleanup; PIDS=()
say "the report is $OUT/report/score.md"
