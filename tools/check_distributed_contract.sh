#!/usr/bin/env bash
# The distributed-evaluation contract on a real collection: each config as one process and as
# 2 processes x 4 simulated devices (launch/local_multiprocess.py), each with a fresh embedding
# cache (so both encode the corpus); prints whether run.trec is byte-identical and which
# metrics.json keys differ (only `seconds` and `timings` should). MiniLM exact and ScaNN, BM25.
#
#   IRJAX_DATA_DIR=../shared/data tools/check_distributed_contract.sh [DATASET] [SPLIT]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATASET=${1:-scifact}
SPLIT=${2:-test}
W=${W:-workdir/contract}
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
mkdir -p "$W"
for name in minilm_exact minilm_scann bm25; do
  cfg=${name%%_*}; extra=""
  [ $name = minilm_exact ] && extra="--gin.INDEX='exact'"
  rm -rf $W/${name}_1p $W/${name}_2x4
  SECONDS=0
  IRJAX_CACHE_DIR=$CACHE/1p $PY -m irjax.main --gin_file=gin/eval/$cfg.gin --gin.DATA_DIR="'$DATASET'" --gin.SPLIT="'$SPLIT'" $extra --gin.WORKDIR="'$W/${name}_1p'" > $W/${name}_1p.log 2>&1
  echo "$name 1p rc=$? ${SECONDS} s"
  SECONDS=0
  IRJAX_CACHE_DIR=$CACHE/2p $PY launch/local_multiprocess.py --num_processes 2 --devices_per_process 4 -- $PY -m irjax.main --gin_file=gin/eval/$cfg.gin --gin.DATA_DIR="'$DATASET'" --gin.SPLIT="'$SPLIT'" $extra --gin.WORKDIR="'$W/${name}_2x4'" > $W/${name}_2x4.log 2>&1
  echo "$name 2x4 rc=$? ${SECONDS} s"
  cmp $W/${name}_1p/run.trec $W/${name}_2x4/run.trec && echo "$name run.trec identical ($(wc -l < $W/${name}_1p/run.trec) lines)"
  $PY - <<PYEOF
import json
a=json.load(open("$W/${name}_1p/metrics.json")); b=json.load(open("$W/${name}_2x4/metrics.json"))
diff=[k for k in a if a[k]!=b.get(k)]
print("$name keys that differ:", diff, "| metrics", a["metrics"], "| 2x4 timings", b["timings"])
PYEOF
done
for f in "$CACHE"/1p/embeddings/*/shard-*.npy; do
  cmp -s "$f" "$CACHE/2p/embeddings/$(basename "$(dirname "$f")")/$(basename "$f")" \
    && echo "$(basename "$f"): identical in both caches" || echo "$(basename "$f"): DIFFERS"
done
