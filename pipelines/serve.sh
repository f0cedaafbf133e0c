#!/usr/bin/env bash
# serve.sh: a generator for other hosts: doppel-diffuser serve on RUN's UNet (checked against RUN's
# VAE), answering requests until Ctrl-C. Validate it from another host with
#   pipelines/validate.sh --data DIR --generator tcp://THIS-HOST:5560 --vae RUN/vae --judge RUN/judge
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'USAGE'
usage: pipelines/serve.sh --run RUN [options]   (RUN holds vae/ and unet/, as train.sh leaves it)

examples:
  pipelines/serve.sh --run runs/demo                          # on 127.0.0.1:5560
  pipelines/serve.sh --run runs/gait10 --bind '@tcp://*:5560' --device cuda

  --bind EP          where requests come in (@tcp://127.0.0.1:5560; @tcp://*:5560 for other hosts)
  --device D         cpu|cuda|auto (auto)
  --batch B          samples per UNet batch (32)
USAGE
}

RUN="" BIND="@tcp://127.0.0.1:5560" DEVICE=auto BATCH=32
while [ $# -gt 0 ]; do
    case "$1" in
        --run) RUN="$2"; shift 2 ;;
        --bind) BIND="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --batch) BATCH="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
[ -n "$RUN" ] || { usage >&2; die "give --run RUN"; }
need_bins diffuser
say "serving $RUN/unet on $BIND (Ctrl-C stops)"
exec "$BIN/doppel-diffuser" serve --unet "$RUN/unet" --vae "$RUN/vae" --bind "$BIND" --device "$DEVICE" --batch "$BATCH"
