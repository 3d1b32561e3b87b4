#!/usr/bin/env bash
# Evaluates BM25 and zero-shot MiniLM (exact, ScaNN, faiss) on SciFact test, NFCorpus dev and
# Cranfield test through the stable gin contracts, then prints one table.
#   bash tools/eval_all.sh [OUT_DIR]      (or: make eval-all)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-workdir/eval_all}
PY=${PY:-.venv/bin/python}
for spec in scifact:test nfcorpus:dev cranfield:test; do
  data=${spec%%:*}; split=${spec##*:}
  $PY -m irjax.main --gin_file=gin/eval/bm25.gin --gin.DATA_DIR="'$data'" --gin.SPLIT="'$split'" \
      --gin.WORKDIR="'$OUT/bm25/$data'"
  for index in exact scann faiss; do
    $PY -m irjax.main --gin_file=gin/eval/minilm.gin --gin.DATA_DIR="'$data'" --gin.SPLIT="'$split'" \
        --gin.INDEX="'$index'" --gin.WORKDIR="'$OUT/minilm_$index/$data'"
  done
done
$PY -m irjax.evaluation.report "$OUT"/*/*/metrics.json | tee "$OUT/table.md"
