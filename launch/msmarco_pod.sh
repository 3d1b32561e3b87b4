#!/usr/bin/env bash
# MS MARCO passage dev with zero-shot MiniLM on a Cloud TPU slice: encode -> index -> evaluate,
# every host on its own share (launch/msmarco_pod.md has the expected time and memory per stage).
#
#   launch/msmarco_pod.sh NAME ZONE create v4-32      # the slice (tpu_vm.sh create)
#   launch/msmarco_pod.sh NAME ZONE setup             # this checkout + make setup on every worker
#   launch/msmarco_pod.sh NAME ZONE encode            # stage 1: embedding shards (resumable)
#   launch/msmarco_pod.sh NAME ZONE evaluate          # stage 2: ScaNN per host, merged run + metrics
#   launch/msmarco_pod.sh NAME ZONE delete
#
# ROOT (default /mnt/irjax) must be a filesystem every worker mounts at the same path (Filestore
# NFS, or a gcsfuse mount of a bucket), holding ROOT/data/msmarco in BEIR layout. Both stages can
# be killed and rerun: encoding resumes at the first incomplete shard, evaluation rebuilds the
# indexes from the shards. Nothing is copied between workers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${1:?usage: launch/msmarco_pod.sh NAME ZONE create|setup|encode|evaluate|delete [ACCELERATOR]}
zone=${2:?zone}
stage=${3:?stage}
root=${ROOT:-/mnt/irjax}
data="$root/data/msmarco"
work="$root/msmarco_minilm"
case "$stage" in
  create) "$here/tpu_vm.sh" create "$name" "$zone" "${4:-v4-32}" ;;
  setup) "$here/tpu_vm.sh" setup "$name" "$zone" ;;
  encode)
    "$here/tpu_vm.sh" run "$name" "$zone" -- --gin_file=gin/encode/minilm.gin \
      --gin.DATA_DIR="'$data'" --gin.SPLIT="'dev'" --gin.DTYPE="'float16'" \
      --gin.WORKDIR="'$work/encode'" --gin.encode_corpus.per_device_batch=256 ;;
  evaluate)
    "$here/tpu_vm.sh" run "$name" "$zone" -- --gin_file=gin/pod/msmarco_minilm.gin \
      --gin.DATA_DIR="'$data'" --gin.WORKDIR="'$work/eval'" \
      --gin.EMBEDDINGS="'$work/encode/embeddings'" ;;
  delete) "$here/tpu_vm.sh" delete "$name" "$zone" ;;
  *) echo "unknown stage $stage (create|setup|encode|evaluate|delete)" >&2; exit 2 ;;
esac
