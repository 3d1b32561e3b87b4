# Environment for irjax on NVIDIA GPUs, sourced by the GPU launchers (launch/slurm_gpu.sbatch,
# launch/generative_scifact.sh when a GPU is present) and by hand: `source launch/gpu_env.sh`.
#
# XLA flags that MaxText sets for H100s: the latency-hiding scheduler overlaps collectives with
# compute; the highest-priority async stream keeps those collectives from queueing behind compute
# kernels; one CUDA connection keeps the launch order the scheduler chose. Command buffers
# (CUDA graphs) cut the launch overhead of small kernels (optimizer updates, norms).
# Flags already in XLA_FLAGS win (set one to another value to override it); IRJAX_GPU_FLAGS=0
# leaves the environment untouched.
if [[ "${IRJAX_GPU_FLAGS:-1}" != 0 ]]; then
  _irjax_gpu_flags=(
    --xla_gpu_enable_latency_hiding_scheduler=true
    --xla_gpu_enable_highest_priority_async_stream=true
    --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUSTOM_CALL
  )
  for _flag in "${_irjax_gpu_flags[@]}"; do
    [[ " ${XLA_FLAGS:-} " == *" ${_flag%%=*}="* ]] || XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }$_flag"
  done
  export XLA_FLAGS
  export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
  unset _irjax_gpu_flags _flag
fi
