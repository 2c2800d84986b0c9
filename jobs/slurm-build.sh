#!/bin/bash
# A bigntk build on a Slurm allocation: Ray's head on the first node, a Ray worker
# node on every other node (one srun step each), then the build, driven from here.
#
#   sbatch jobs/slurm-build.sh configs/cifar_synthetic.yaml
#   tail -f bigntk-<jobid>.out
#   bigntk status kernels/cifar_synthetic.zarr     # from any node, while it runs
#
# An interrupted or timed-out allocation resumes: sbatch the same script again.
#
# FILL IN (lines marked FILL IN): partition, nodes, GPUs per node, time limit, and how
# to enter the Python environment that has bigntk and jax[cuda12] installed. The store
# (output.path) must be on storage every node sees: a shared file system path, or
# s3:// / gs:// with credentials in the environment.
#SBATCH --job-name=bigntk
#SBATCH --output=bigntk-%j.out
#SBATCH --partition=gpu                  # FILL IN
#SBATCH --nodes=3                        # FILL IN
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4                # FILL IN
#SBATCH --cpus-per-task=16               # FILL IN
#SBATCH --time=12:00:00                  # FILL IN
set -euo pipefail

CONFIG=${1:-configs/cifar_synthetic.yaml}
source "${BIGNTK_VENV:-$HOME/bigntk-venv}/bin/activate"   # FILL IN: your environment

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
port=6379
export RAY_USAGE_STATS_ENABLED=0

# the head also runs build workers on its GPUs (the driver, below, is light)
srun --nodes=1 --ntasks=1 -w "$head" \
    ray start --head --node-ip-address="$head_ip" --port=$port \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$SLURM_GPUS_PER_NODE" --block &
sleep 20

for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" \
        ray start --address="$head_ip:$port" --num-cpus="$SLURM_CPUS_PER_TASK" \
        --num-gpus="$SLURM_GPUS_PER_NODE" --block &
done
sleep 20

# one build worker per GPU of the cluster (the default); the driver joins the cluster
status=0
bigntk build "$CONFIG" --no-progress --set ray.address="$head_ip:$port" || status=$?
# the `ray start --block` steps end with the allocation: Slurm stops its job steps
exit $status
