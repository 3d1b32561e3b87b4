#!/usr/bin/env bash
# Runs an irjax gin config on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_vm.sh create  NAME ZONE ACCELERATOR [VERSION]   # e.g. v4-32 tpu-ubuntu2204-base
#   launch/tpu_vm.sh setup   NAME ZONE                          # copy this checkout, make setup, on all workers
#   launch/tpu_vm.sh run     NAME ZONE -- --gin_file=gin/encode/minilm.gin \
#       --gin.DATA_DIR="'gs://bucket/data/scifact'" --gin.WORKDIR="'gs://bucket/encode_scifact'"
#   launch/tpu_vm.sh delete  NAME ZONE
#
# Every worker runs the same command; IRJAX_DISTRIBUTED=auto makes irjax.main call
# jax.distributed.initialize() with no arguments, which discovers the slice's hosts. Each host then
# reads only its shard of the input, and only process 0 writes logs. Data: copy the collections to
# each worker (setup does, from IRJAX_DATA_DIR when set locally) or point DATA_DIR at a gs:// folder
# (needs gcsfs on the workers; README "Remote paths"). Training WORKDIRs must be local or mounted.
# jax on TPU needs `pip install "jax[tpu]==0.10.2"` in place of the CPU jaxlib; setup does this.
set -euo pipefail
cmd=${1:?usage: launch/tpu_vm.sh create|setup|run|delete NAME ZONE ...}
name=${2:?TPU name}
zone=${3:?zone}
shift 3
ssh_all() { gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"; }
case "$cmd" in
  create)
    accel=${1:?accelerator type, e.g. v4-32}
    version=${2:-tpu-ubuntu2204-base}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accel" --version="$version"
    ;;
  setup)
    root=$(cd "$(dirname "$0")/.." && pwd)
    tar czf /tmp/irjax.tgz -C "$root" --exclude=.venv --exclude=workdir --exclude=.cache .
    gcloud compute tpus tpu-vm scp /tmp/irjax.tgz "$name":~/irjax.tgz --zone="$zone" --worker=all
    if [ -n "${IRJAX_DATA_DIR:-}" ]; then
      tar czf /tmp/irjax-data.tgz -C "$IRJAX_DATA_DIR" .
      gcloud compute tpus tpu-vm scp /tmp/irjax-data.tgz "$name":~/irjax-data.tgz --zone="$zone" --worker=all
      ssh_all "mkdir -p ~/data && tar xzf ~/irjax-data.tgz -C ~/data"
    fi
    ssh_all "mkdir -p ~/irjax && tar xzf ~/irjax.tgz -C ~/irjax && cd ~/irjax && make setup && \
             .venv/bin/pip install -q 'jax[tpu]==0.10.2'"
    ;;
  run)
    [ "${1:-}" = "--" ] && shift
    args=$(printf "%q " "$@")
    ssh_all "cd ~/irjax && IRJAX_DISTRIBUTED=auto IRJAX_DATA_DIR=\$HOME/data .venv/bin/python -m irjax.main $args"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
    ;;
  *)
    echo "unknown command $cmd (create|setup|run|delete)" >&2; exit 2 ;;
esac
