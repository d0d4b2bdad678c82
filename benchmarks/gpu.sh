#!/usr/bin/env bash
# The GPU checks of issues 8-11 in one prepared run, for a session that is lent a device machine
# (see the device tool: one script, one call). Writes everything under ${OUT:-gpu-results}/.
#   bash benchmarks/gpu.sh            # after: python3 -m pip install torch==2.13.0 && pip install -e '.[dev]'
# Each step is independent; a failing step is reported and the next one runs.
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.csv" 2>&1
step() { local name=$1; shift; echo "== $name: $*"; timeout "${STEP_TIMEOUT:-300}" "$@" > "$out/$name.log" 2>&1; echo "   exit $?"; }

# Correctness first: the bf16 kernel tests and the fused reversible step on the GPU (the CPU interpreter cannot check bf16).
step kernel-tests python -m pytest -q -p no:cacheprovider -m gpu tests/kernels tests/training
# Issue 9: seam kernels against eager torch and torch.compile, bandwidth against copy bandwidth.
step kernels python benchmarks/kernels.py --dtype bf16 --stream-dtype fp32 --json "$out/kernels.json" --plot "$out/kernels.png" --force
# The reversible step with bwsk's Triton seams (stream update + the next half's norm fused) beside eager torch seams,
# same model, same rounds: peak memory, step time (both as ratios to conventional), gradients against one reference.
step seams-2x512 python benchmarks/memory.py --model pythia-410m --device cuda --dtype bf16 --mode reversible \
    --kernels torch,triton --batch 2 --seq 512 --json "$out/seams-2x512.json" --force
step seams-1x4096 python benchmarks/memory.py --model pythia-410m --device cuda --dtype bf16 --mode reversible \
    --kernels torch,triton --batch 1 --seq 4096 --json "$out/seams-1x4096.json" --force
# Issue 8: Pythia-410M, every mode, bf16 autocast, peak memory and step time (targets: reversible >= 50% below
# conventional peak at 1 x 4096, step time <= 1.3x).
step memory-2x512 python benchmarks/memory.py --model pythia-410m --device cuda --dtype bf16 --mode all \
    --batch 2 --seq 512 --json "$out/memory-2x512.json" --force
step memory-1x4096 python benchmarks/memory.py --model pythia-410m --device cuda --dtype bf16 --mode all \
    --batch 1 --seq 4096 --json "$out/memory-1x4096.json" --force
# Issue 11: DDP and FSDP2 over NCCL on one GPU is not a multi-GPU check; the runtime tests still run on the device.
step distributed-tests python -m pytest -q -p no:cacheprovider tests/training/test_distributed.py tests/training/test_train_distributed.py
echo "results in $out"
