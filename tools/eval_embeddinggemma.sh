#!/usr/bin/env bash
# Zero-shot EmbeddingGemma-300m (gin/eval/embeddinggemma.gin, exact search, max length 256) at
# Matryoshka widths 768 and 128 on Cranfield test, SciFact test and NFCorpus dev, in that order
# (smallest corpus first). Each corpus is encoded once (768-d shards cached under
# $IRJAX_CACHE_DIR); the 128-d run reuses them, and an interrupted encoding resumes.
#   bash tools/eval_embeddinggemma.sh [OUT_DIR] [DATASET:SPLIT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-workdir/eval_embeddinggemma}
shift || true
PY=${PY:-.venv/bin/python}
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(cranfield:test scifact:test nfcorpus:dev)
for spec in "${SPECS[@]}"; do
  data=${spec%%:*}; split=${spec##*:}
  for dim in 768 128; do
    $PY -m irjax.main --gin_file=gin/eval/embeddinggemma.gin --gin.DATA_DIR="'$data'" \
        --gin.SPLIT="'$split'" --gin.DIM=$dim --gin.WORKDIR="'$OUT/egemma_$dim/$data'"
  done
done
$PY -m irjax.evaluation.report "$OUT"/*/*/metrics.json | tee "$OUT/table.md"
