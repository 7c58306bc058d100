#!/usr/bin/env bash
# rayrlhf on a SLURM allocation: Ray's head on the first node, a Ray worker on each other node,
# then `rayrlhf COMMAND CONFIG ...` run against that cluster from the head node.
#
#   sbatch launch/slurm.sh launch/configs/gpu_20b.yaml --set run.name=neox
#   COMMAND=pipeline sbatch --nodes=2 launch/slurm.sh launch/configs/gpu_7b.yaml
#   bash launch/slurm.sh --dry-run --nodelist gpu01,gpu02 launch/configs/gpu_20b.yaml
#
# --dry-run prints the resolved allocation and every command instead of running it (no srun,
# no ray): check a launch before it waits in the queue. Outside an allocation it takes the nodes
# from --nodelist (default node1,node2) and --gpus-per-node / --cpus-per-node (default 8 / 96).
#
# Security, as in cluster.yaml: token authentication on every node (RAY_AUTH_MODE=token; the
# token is the shared home's ~/.ray/auth_token, made once with `ray get-auth-token --generate`),
# the dashboard on 127.0.0.1 only (reach it with `ssh -L 8265:127.0.0.1:8265 HEAD`).
# Models, data and runs/ must be on storage every node mounts at the same path.
#
#SBATCH --job-name=rayrlhf
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --output=slurm-%j.out
set -euo pipefail

DRY_RUN=0 NODELIST="" GPUS=${SLURM_GPUS_ON_NODE:-} CPUS=${SLURM_CPUS_ON_NODE:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --nodelist) NODELIST=$2; shift 2 ;;
    --gpus-per-node) GPUS=$2; shift 2 ;;
    --cpus-per-node) CPUS=$2; shift 2 ;;
    -*) echo "launch/slurm.sh: unknown option $1 (before CONFIG: --dry-run, --nodelist, --gpus-per-node, --cpus-per-node)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "launch/slurm.sh: usage: [sbatch] launch/slurm.sh [--dry-run] CONFIG [rayrlhf options]" >&2
  exit 2
fi
CONFIG=$1; shift
if [ ! -f "$CONFIG" ]; then
  echo "launch/slurm.sh: config $CONFIG not found (give a path every node can read)" >&2
  exit 2
fi
COMMAND=${COMMAND:-train}
PORT=${RAY_PORT:-6379}
PYTHON=${PYTHON:-python}
RAY=${RAY:-ray}
GPUS=${GPUS:-8} CPUS=${CPUS:-96}

# The nodes: --nodelist, else the allocation's, else placeholders for a dry run.
if [ -n "$NODELIST" ]; then
  read -r -a NODES <<< "${NODELIST//,/ }"
elif [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
elif [ "$DRY_RUN" = 1 ]; then
  NODES=(node1 node2)
else
  echo "launch/slurm.sh: not inside a SLURM allocation (no SLURM_JOB_NODELIST): run it with sbatch, or --dry-run" >&2
  exit 2
fi
HEAD=${NODES[0]}
WORKERS=("${NODES[@]:1}")

# run CMD...: execute, or print it (shell-quoted) on a dry run. bg CMD...: the same, in the
# background (the `ray start --block` processes that hold each node for the job's lifetime).
run() { if [ "$DRY_RUN" = 1 ]; then echo "+ $(printf '%q ' "$@")"; else "$@"; fi; }
bg() { if [ "$DRY_RUN" = 1 ]; then echo "+ $(printf '%q ' "$@") &"; else "$@" & fi; }

if [ "$DRY_RUN" = 1 ]; then
  HEAD_IP=HEAD_IP
  echo "# launch/slurm.sh --dry-run: nothing below is run"
  echo "# HEAD_IP: what \`srun -w $HEAD hostname --ip-address\` prints in the allocation"
  echo "# nodes: ${NODES[*]} (${#NODES[@]}); head: $HEAD; workers: ${WORKERS[*]:-none}"
  echo "# per node: $GPUS GPUs, $CPUS CPUs; Ray port $PORT"
else
  HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')
fi
export RAY_AUTH_MODE=token
echo "export RAY_AUTH_MODE=token"

bg srun --nodes=1 --ntasks=1 -w "$HEAD" --export=ALL \
  "$RAY" start --head --block --node-ip-address="$HEAD_IP" --port="$PORT" \
  --num-gpus="$GPUS" --num-cpus="$CPUS" --dashboard-host=127.0.0.1
run sleep 20  # the GCS is up before workers dial in
for node in "${WORKERS[@]}"; do
  bg srun --nodes=1 --ntasks=1 -w "$node" --export=ALL \
    "$RAY" start --block --address="$HEAD_IP:$PORT" --num-gpus="$GPUS" --num-cpus="$CPUS"
done
run sleep 20
# The driver runs on the head node (this batch step's node) and connects to the cluster.
status=0
run env RAY_ADDRESS="$HEAD_IP:$PORT" "$PYTHON" -m rayrlhf.cli "$COMMAND" "$CONFIG" "$@" || status=$?
run "$RAY" stop
exit "$status"
