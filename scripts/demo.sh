#!/usr/bin/env bash
# `make demo`: fetch the optional real Debian clips (never fails), then run the whole demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
bash scripts/fetch_demo_clips.sh data/debian_clips || true
OUT="${DEMO_OUT:-runs/demo}"
if [ -e "$OUT" ]; then
  echo "demo: moving the previous $OUT to $OUT.prev-$(date +%Y%m%d-%H%M%S)"
  mv "$OUT" "$OUT.prev-$(date +%Y%m%d-%H%M%S)"
fi
# DEMO_FINISH_BY (from the Makefile: 15 minutes after `make demo` started): each training stage gets what fits before it
exec "$PY" -m scripts.demo --out "$OUT" --minutes "${DEMO_MINUTES:-10.5}" --debian-clips data/debian_clips \
  --tokenizer "${DEMO_TOKENIZER:-fsq}" ${DEMO_FINISH_BY:+--finish-by "$DEMO_FINISH_BY"}
