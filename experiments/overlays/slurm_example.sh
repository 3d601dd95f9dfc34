#!/bin/bash
# DenseNet-161 on ImageNet on 2 nodes x 4 GPUs (global batch 128, as in the paper).
#   sbatch experiments/overlays/slurm_example.sh
# Adapt the partition/account lines and the environment activation to your cluster.
#SBATCH --job-name=densenet161
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4          # = trainer.devices: one process per GPU
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8            # data loading workers per process
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90          # Lightning checkpoints and requeues on this signal
#SBATCH --requeue
#SBATCH --open-mode=append           # a requeued job appends to the same log file
#SBATCH --output=slurm-%j.out

set -euo pipefail
cd "${SLURM_SUBMIT_DIR}"
source .venv/bin/activate

# srun starts one task per GPU on every node; Lightning reads the ranks from SLURM.
# --ckpt_path auto: the first time this starts the run in runs/imagenet161/slurm-<job id>;
# the requeued job (same job id, same script) continues it from its newest checkpoint there
# (Lightning's requeue checkpoint, or last.ckpt after a requeue that wrote none).
srun python -m densenet_lit fit \
    --config experiments/imagenet161.yaml \
    --config experiments/overlays/multinode.yaml \
    --trainer.num_nodes "${SLURM_JOB_NUM_NODES}" \
    --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
    --ckpt_path auto
