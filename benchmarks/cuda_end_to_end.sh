#!/usr/bin/env bash
# The CUDA end-to-end check: the `pixdiff` program on one GPU, as a user runs it.
#
#   OUT=results/ bash benchmarks/cuda_end_to_end.sh [SECONDS_FOR_gpu_throughput]
#
# 1. benchmarks/gpu_throughput.py (MFU of adm-64 / sid2-s, pixdiff vs diffusers, train -> sample),
#    recorded into a copy of docs/benchmarks.md under $OUT;
# 2. `pixdiff train` on the digits with bf16 autocast, then with --compile; `pixdiff sample` and
#    `pixdiff eval` (Fréchet distance in the digits-classifier features, class accuracy) on CUDA;
# 3. torchrun (one process, NCCL): DDP training, --resume, FSDP2 training, sharded sampling;
# 4. pixdiff.load on CUDA vs CPU: the same seeds give the same images (fp32; counts of differing
#    uint8 values are printed, since CUDA and CPU kernels round differently).
# Every command prints its exit code and wall time; nothing stops the script early.
set -u
OUT=${OUT:-/tmp/pixdiff-cuda}
BUDGET=${1:-270}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
W=$(mktemp -d)
step() {
  echo "== $*"
  local t0=$SECONDS
  timeout 240 "$@"
  echo "-- rc=$? $((SECONDS - t0)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cuda', torch.version.cuda)"

cp docs/benchmarks.md "$OUT/benchmarks.md"
step python3 benchmarks/gpu_throughput.py --budget "$BUDGET" --record "$OUT/benchmarks.md"

D="--data digits --images 400000 --batch 256 --device cuda --precision bf16 --log-every 100000"
step python3 -m pixdiff train $D --out "$W/run"
step python3 -m pixdiff sample --ckpt "$W/run" --n 2000 --batch 1000 --out "$W/s.npz" --device cuda
step python3 -m pixdiff sample --ckpt "$W/run" --n 100 --classes 0,1,2,3,4,5,6,7,8,9 --out "$OUT/digits_cuda.png"
step python3 -m pixdiff eval --images "$W/s.npz" --metrics fd,pr,acc --device cuda --json "$OUT/eval.json"
step python3 -m pixdiff train $D --images 200000 --compile --out "$W/runc"

T="torchrun --standalone --nproc_per_node=1 -m pixdiff"
step $T train --data digits --images 100000 --batch 256 --precision bf16 --out "$W/ddp"
step $T train --data digits --images 150000 --batch 256 --precision bf16 --out "$W/ddp" --resume
step $T train --data digits --images 100000 --batch 256 --precision bf16 --fsdp --out "$W/fsdp"
step $T sample --ckpt "$W/fsdp" --num-images 512 --out "$W/fsdp.npz"

step python3 - "$W/run" <<'EOF'
import sys, numpy as np, torch, pixdiff
run = sys.argv[1]
a, _ = pixdiff.load(run, device="cuda").sample(256, sampler="ddim", steps=20, seed=7)
b, _ = pixdiff.load(run, device="cpu").sample(256, sampler="ddim", steps=20, seed=7)
d = np.abs(a.astype(int) - b.astype(int))
print(f"cuda vs cpu, 256 images, ddim 20 steps: max |Δ| {d.max()} (uint8), values differing {(d > 0).mean():.2e}, "
      f"differing by > 2: {(d > 2).mean():.2e}")
assert (d > 2).mean() < 1e-3, "CUDA and CPU samples differ beyond rounding"
EOF
cp "$W"/run/log.jsonl "$OUT/train_log.jsonl" 2>/dev/null
echo "done"
