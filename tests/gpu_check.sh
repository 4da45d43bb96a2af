#!/usr/bin/env bash
# The checks that need GPUs (not run on a GPU yet).
#   bash tests/gpu_check.sh      # on a machine with >= 2 CUDA GPUs (1 GPU: the 2-process checks are skipped)
# 1. the test suite (CPU tests; they must still pass on a GPU machine, e.g. gloo chosen for --device cpu)
# 2. teacher and distillation under torchrun on 2 GPUs, bf16 and fp16 (GradScaler), a resume with another
#    GPU count (RNG streams reseeded, not an IndexError), and a run with --deterministic and the single step
# 3. the teacher cache: fw-1 and rv-1+ reading an exact cache (built by 2 processes) against running the teacher
# 4. a paper-sized fw-1 for 300 steps with and without the cache, and bench.py at the paper's sizes in bf16 and
#    fp16, with and without the cache, one and two teachers, the readable and the fused loss (the README's GPU
#    figures)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-out-gpu}; mkdir -p "$W"
N=$(python -c "import torch; print(torch.cuda.device_count())")
echo "== $(python -m lab.bench --machine), $N GPU(s)"
python -m pytest -q -x
python -m lab.grammar --write "$W/babylm_synthetic" --sentences 120000
python data.py prepare --data synthetic --data-dir "$W/babylm_synthetic" --vocab-size 512 --separator both --work-dir "$W"
SYN=(--data synthetic --data-dir "$W/babylm_synthetic" --work-dir "$W" --vocab-size 512 --separator both --seq-len 64
     --batch-size 32 --device cuda)
run() { if [ "$N" -ge 2 ]; then torchrun --standalone --nproc_per_node 2 "$@"; else python "$@"; fi; }
for p in bf16 fp16; do
  run train_teacher.py --preset llama-syn "${SYN[@]}" --precision "$p" --max-steps 40 --out-dir "$W/t-$p"
  for v in rv-1 rv-1+ fw-1; do
    run distill.py --variant "$v" --preset baby-llama-syn --teacher-ckpt "$W/t-$p/ckpt_best.pt" \
      "${SYN[@]}" --precision "$p" --max-steps 20 --prompt-len 48 --out-dir "$W/d-$p-$v"
  done
done
# resume a 2-GPU run with 1 GPU (and the other way round where 2 exist): reseeded streams, same step count
run distill.py --variant rv-1 --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 20 --stop-after 10 --prompt-len 48 --out-dir "$W/resume"
python distill.py --variant rv-1 --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 20 --prompt-len 48 --out-dir "$W/resume" --resume
python distill.py --variant rv-1 --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" "${SYN[@]}" \
  --max-steps 4 --prompt-len 48 --out-dir "$W/det" --deterministic
for v in fw-1 rv-1+; do
  for c in off exact; do
    run distill.py --variant "$v" --preset baby-llama-syn --teacher-ckpt "$W/t-bf16/ckpt_best.pt" \
      "${SYN[@]}" --precision bf16 --max-steps 20 --fixed-windows --teacher-cache "$c" --out-dir "$W/cache-$c-$v"
  done
  python -c "
import json, sys
kd = [[r['kd'] for r in map(json.loads, open(f'$W/cache-{c}-$v/log.jsonl')) if 'kd' in r] for c in ('off', 'exact')]
bad = [(a, b) for a, b in zip(*kd) if abs(a - b) > 1e-3 * abs(a)]
print('teacher cache $v: kd equal to running the teacher' if not bad else f'teacher cache $v: DIFFERENT {bad}')
sys.exit(bool(bad))"
done
# a paper-sized fw-1 (baby-llama-58m from llama-360m, batch 32 x 128, bf16) for 300 steps on the synthetic corpus,
# running the teacher and reading the exact cache: the tokens/s of each in its log.jsonl
P=(--data synthetic --data-dir "$W/babylm_synthetic" --work-dir "$W" --vocab-size 512 --separator both --seq-len 128
   --device cuda --precision bf16)
python train_teacher.py --preset llama-360m "${P[@]}" --max-steps 50 --warmup 10 --out-dir "$W/t360"
for c in off exact; do
  for loss in no-fused-loss fused-loss; do
    python distill.py --variant fw-1 --preset baby-llama-58m --teacher-ckpt "$W/t360/ckpt_best.pt" "${P[@]}" \
      --max-steps 300 --fixed-windows --teacher-cache "$c" --"$loss" --out-dir "$W/paper-fw-1-$c-$loss"
    grep tok_s "$W/paper-fw-1-$c-$loss/log.jsonl" | tail -1
  done
done
python -m lab.bench --dtypes bf16,fp16 --batches 8,32 --steps 3 --caches off,exact,compact --teachers 1,2
echo "== gpu_check.sh: all passed"
