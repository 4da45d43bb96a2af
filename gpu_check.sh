#!/usr/bin/env bash
# The checks that need GPUs (never yet run: no GPU has been lent to the sessions that wrote this code).
#   bash gpu_check.sh            # on a machine with >= 2 CUDA GPUs (1 GPU: the 2-process checks are skipped)
# 1. the test suite (CPU tests; they must still pass on a GPU machine, e.g. gloo chosen for --device cpu)
# 2. teacher and distillation under torchrun on 2 GPUs, bf16 and fp16 (GradScaler), a resume with another
#    GPU count (RNG streams reseeded, not an IndexError), and a run with --deterministic and the single step
# 3. bench.py at the paper's sizes in bf16 and fp16
set -euo pipefail
cd "$(dirname "$0")"
W=${WORK:-out-gpu}; mkdir -p "$W"
N=$(python -c "import torch; print(torch.cuda.device_count())")
echo "== $(python -c 'import bench; print(bench.machine_summary())'), $N GPU(s)"
python -m pytest -q -x
python data.py prepare --data synthetic --vocab-size 512 --separator both --work-dir "$W"
SYN=(--data synthetic --work-dir "$W" --vocab-size 512 --separator both --seq-len 64 --batch-size 32 --device cuda)
run() { if [ "$N" -ge 2 ]; then torchrun --standalone --nproc_per_node 2 "$@"; else python "$@"; fi; }
for p in bf16 fp16; do
  run train_teacher.py --preset llama-syn "${SYN[@]}" --precision "$p" --max-steps 40 --out-dir "$W/t-$p"
  for v in rv-1 rv-1+ fw-1; do
    run distill.py --variant "ChooBaCa-${v%+}-syn${v//[^+]/}" --preset baby-llama-syn --teacher-ckpt "$W/t-$p/ckpt_best.pt" \
      "${SYN[@]}" --precision "$p" --max-steps 20 --prompt-len 48 --out-dir "$W/d-$p-$v"
  done
done
# resume a 2-GPU run with 1 GPU (and the other way round where 2 exist): reseeded streams, same step count
run distill.py --variant ChooBaCa-rv-1-syn --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 20 --stop-after 10 --prompt-len 48 --out-dir "$W/resume"
python distill.py --variant ChooBaCa-rv-1-syn --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 20 --prompt-len 48 --out-dir "$W/resume" --resume
python distill.py --variant ChooBaCa-rv-1-syn --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 4 --prompt-len 48 --out-dir "$W/det" --deterministic
python bench.py --dtypes bf16,fp16 --batches 8,32 --steps 3
echo "== gpu_check.sh: all passed"
