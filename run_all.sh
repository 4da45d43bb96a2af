#!/usr/bin/env bash
# The whole reproduction, data to results.md.
#
#   bash run_all.sh                       # no BabyLM data: the synthetic experiment (README), ~8-20 min on 2 cores
#   BABYLM_DIR=../shared/data/corpus BABYLM_EVAL_DIR=../shared/data/eval bash run_all.sh   # real data, CPU scale
#   SCALE=paper bash run_all.sh           # the paper's sizes and schedules (a GPU)
#   FORCE=1 bash run_all.sh               # rerun stages whose outputs exist
#   EXTRA=0 bash run_all.sh               # without the objectives beyond the paper
#
# Settings (environment): SCALE = synthetic | tiny | cpu | paper (default: synthetic without BabyLM data,
# else paper on a GPU and cpu otherwise); WORK (out), RESULTS (results.md), JOBS (parallel runs, default 2 on
# the synthetic scales), SEEDS (3 synthetic, 1 otherwise), EXTRA (1), ABLATION (1: the T = 1 rows).
# GPUs: NPROC=N runs every training stage under `torchrun --nproc_per_node N` (default 1: plain python);
# TEACHER2_MICRO=16 (say) bounds gpt2-705m's micro-batch on GPUs with less than ~45 GB.
# TEACHER_CACHE=exact | compact: every distillation run reads the teachers' targets from a cache built once per
# teacher and data set (README "Teacher cache"; fixed windows for every variant, single-step ones still run the
# teachers); default off.
# Data: BABYLM_DIR (2024 layout), BABYLM_2023_DIR (2023 layout), BABYLM_EVAL_DIR (the pipeline's evaluation_data).
set -euo pipefail
cd "$(dirname "$0")"
WORK=${WORK:-out}
RESULTS=${RESULTS:-results.md}
FORCE=${FORCE:-0}
mkdir -p "$WORK"
T_START=$(date +%s)

# ---- which data, which scale ------------------------------------------------------------------------------
DATASETS=()
for d in 2024 2023; do
  if python -c "import data; data.corpus_files('$d', data.default_data_dir('$d'))" 2>/dev/null; then DATASETS+=("$d"); fi
done
if [ -z "${SCALE:-}" ]; then
  if [ ${#DATASETS[@]} -eq 0 ]; then SCALE=synthetic
  elif python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then SCALE=paper; else SCALE=cpu; fi
fi
case "$SCALE" in synthetic|tiny) SYN=1 ;; cpu|paper) SYN=0 ;;
  *) echo "run_all.sh: unknown SCALE=$SCALE (use synthetic, tiny, cpu or paper)" >&2; exit 2 ;; esac
if [ "$SYN" = 0 ] && [ ${#DATASETS[@]} -eq 0 ]; then
  echo "run_all.sh: SCALE=$SCALE needs BabyLM data: set BABYLM_DIR (2024 layout, https://osf.io/ad7qg/) or unset SCALE" >&2
  exit 2
fi
JOBS=${JOBS:-$([ "$SYN" = 1 ] && echo 2 || echo 1)}
SEEDS=${SEEDS:-$([ "$SCALE" = synthetic ] && echo 3 || echo 1)}
EXTRA=${EXTRA:-$([ "$SCALE" = tiny ] && echo 0 || echo 1)}
ABLATION=${ABLATION:-$([ "$SCALE" = synthetic ] && echo 1 || echo 0)}
THREADS=$(( $(python -c "import os; print(os.cpu_count() or 1)") / JOBS )); [ "$THREADS" -ge 1 ] || THREADS=1
NPROC=${NPROC:-1}
TEACHER_CACHE=${TEACHER_CACHE:-off}
case "$TEACHER_CACHE" in off|exact|compact) ;;
  *) echo "run_all.sh: unknown TEACHER_CACHE=$TEACHER_CACHE (use off, exact or compact)" >&2; exit 2 ;; esac
if [ "$NPROC" -gt 1 ]; then TRAIN=(torchrun --standalone --nproc_per_node "$NPROC"); else TRAIN=(python); fi
TIMES="$WORK/stage_times.tsv"

stage() {  # stage NAME OUTPUT command...: skipped when it finished before and OUTPUT exists (FORCE=1 reruns).
  # "Finished" is a marker written after success, so a run killed half-way is redone, not mistaken for done.
  local name=$1 output=$2; shift 2
  local marker="$WORK/.done/${name// /_}"
  if [ -e "$marker" ] && [ -e "$output" ] && [ "$FORCE" != 1 ]; then echo "== $name: done before, skipped"; return 0; fi
  echo "== $name: $*"
  local t0; t0=$(date +%s)
  if ! "$@" > "$WORK/logs/${name// /_}.log" 2>&1; then
    echo "run_all.sh: stage '$name' failed; its output: $WORK/logs/${name// /_}.log" >&2; tail -5 "$WORK/logs/${name// /_}.log" >&2
    return 1
  fi
  mkdir -p "$WORK/.done" && touch "$marker"
  printf '%s\t%s\n' "$name" $(( $(date +%s) - t0 )) >> "$TIMES"
}
mkdir -p "$WORK/logs"

pool() {  # pool NAME OUTPUT command...: a stage in the background, at most JOBS at once
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || { echo "run_all.sh: a stage failed" >&2; exit 1; }; done
  OMP_NUM_THREADS=$THREADS stage "$@" &
}
drain() {  # wait for every pooled stage; the first failure stops the run
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || { echo "run_all.sh: a stage failed" >&2; exit 1; }; done
  wait || { echo "run_all.sh: a stage failed" >&2; exit 1; }
}

# ---- scale: models, step caps, seeds ---------------------------------------------------------------------
if [ "$SYN" = 1 ]; then
  DATASETS=(synthetic); DATA_DIR="$WORK/babylm_synthetic"; EVAL_DIR="$DATA_DIR/evaluation_data"
  STUDENT=baby-llama-syn; T1=llama-syn; T2=gpt2-syn
  COMMON=(--data-dir "$DATA_DIR" --vocab-size 512 --separator both --seq-len 64 --batch-size 32 --micro-batch $((32 / NPROC))
          --device cpu --precision fp32 --eval-max-seqs 256)
  if [ "$SCALE" = synthetic ]; then
    # sized for 20 minutes on a 2-core AVX2-only CPU: 300 teacher steps reach within ~0.03 nats/token of the
    # true entropy; the single-step term samples the last 16 of 64 tokens (about two sentences)
    N_TRAIN=120000; TEACHER_FLAGS=(--max-steps 300 --warmup 30 --lr 3e-3 --eval-every 100)
    DISTILL_FLAGS=(--max-steps 200 --warmup 20 --lr 1e-2 --eval-every 50 --keep-every 50 --prompt-len 48); SAMPLES=1000
  else  # tiny: the pipeline end to end in well under a minute (tests/test_run_all.py)
    N_TRAIN=3000; TEACHER_FLAGS=(--max-steps 6 --warmup 2 --lr 3e-3 --eval-every 3)
    DISTILL_FLAGS=(--max-steps 4 --warmup 1 --lr 1e-2 --eval-every 2 --keep-every 2 --prompt-len 48); SAMPLES=50
  fi
else
  EVAL_DIR=${BABYLM_EVAL_DIR:-data/evaluation_data}; COMMON=()
  if [ ! -d "$EVAL_DIR" ]; then
    echo "run_all.sh: evaluation data not found at $EVAL_DIR: set BABYLM_EVAL_DIR (https://osf.io/ad7qg/)" >&2; exit 2
  fi
  if [ "$SCALE" = paper ]; then
    STUDENT=baby-llama-58m; T1=llama-360m; T2=gpt2-705m; TEACHER_FLAGS=(); DISTILL_FLAGS=(); GLUE_FLAGS=()
  else  # 2 CPU cores: small models of the same architectures, step caps (the schedules still run their course)
    STUDENT=baby-llama-small; T1=llama-small; T2=gpt2-small
    TEACHER_FLAGS=(--max-steps 160 --batch-size 32 --warmup 16 --eval-every 80 --eval-max-seqs 512)
    DISTILL_FLAGS=(--max-steps 80 --batch-size 16 --micro-batch 16 --warmup 8 --eval-every 40 --eval-max-seqs 512 --lr 1e-3)
    GLUE_FLAGS=(--max-train-examples 500 --max-epochs 2)
  fi
fi

# ---- what it will do, and about how long ------------------------------------------------------------------
N_RUNS=$(( 6 * SEEDS * ${#DATASETS[@]} + (EXTRA == 1 ? 4 : 0) + (ABLATION == 1 ? 2 : 0) ))
PROBE=$(python -c "
import time, torch
torch.set_num_threads($THREADS); a = torch.randn(256, 256); t = time.perf_counter(); n = 0
while time.perf_counter() - t < 0.3: a @ a; n += 1
print(round(2 * 256 ** 3 * n / (time.perf_counter() - t) / 1e9))")
case "$SCALE" in  # minutes measured on the README's machines, scaled by this CPU's fp32 matmul rate (a 0.3 s probe)
  synthetic) MINUTES=$(python -c "print(round(8.8 * 181 / max($PROBE, 1), 1))") ;;  # 8.8 min at 181 on the AMX machine
  tiny) MINUTES=0.5 ;; cpu) MINUTES="40 or more" ;; paper) MINUTES="days on one GPU" ;;
esac
echo "run_all.sh: SCALE=$SCALE on ${DATASETS[*]}: teachers $T1 and $T2, student $STUDENT; $N_RUNS distillation runs"\
     "(the paper's six variants x $SEEDS seed(s) per data set$([ "$EXTRA" = 1 ] && echo ", 4 objectives beyond the paper")$([ "$ABLATION" = 1 ] && echo ", 2 at T = 1")),"\
     "$JOBS at a time$([ "$TEACHER_CACHE" != off ] && echo ", teacher cache $TEACHER_CACHE"); then"\
     "$([ "$SYN" = 1 ] && echo "the mode-seeking measures, a positive control," || echo "evaluation,") and $RESULTS."
echo "run_all.sh: about $MINUTES minutes here (fp32 probe $PROBE GFLOP/s at $THREADS thread(s) per job). Stage logs: $WORK/logs/"

# ---- stage 1: data, tokenizer and token caches --------------------------------------------------------------
for d in "${DATASETS[@]}"; do
  if [ "$SYN" = 1 ]; then
    stage "data $d" "$WORK/data-$d" python -c "import data; data.write_synthetic('$DATA_DIR', n_train=$N_TRAIN); \
data.main(['prepare', '--data', 'synthetic', '--data-dir', '$DATA_DIR', '--work-dir', '$WORK', '--vocab-size', '512', \
'--separator', 'both'])"
  else
    stage "data $d" "$WORK/data-$d" python data.py prepare --data "$d" --work-dir "$WORK"
  fi
done

# ---- stage 2: teachers -----------------------------------------------------------------------------------------
for d in "${DATASETS[@]}"; do
  for t in "$T1" "$T2"; do
    micro=(); [ "$t" = gpt2-705m ] && [ -n "${TEACHER2_MICRO:-}" ] && micro=(--micro-batch "$TEACHER2_MICRO")
    pool "teacher $t $d" "$WORK/teacher-$t-$d/ckpt_best.pt" \
      "${TRAIN[@]}" train_teacher.py --preset "$t" --data "$d" --work-dir "$WORK" "${COMMON[@]}" "${TEACHER_FLAGS[@]}" \
      "${micro[@]}"
  done
done
drain

# ---- stage 3: distillation: the paper's six variants per data set, seeds, beyond-the-paper objectives, T = 1 ------
RUNS=()
distill_run() {  # distill_run TAG VARIANT SEED [flags...]: e.g. 24 rv-1+ 0 -> ChooBaCa-rv-1-24+ (seed 0)
  local tag=$1 v=$2 seed=$3; shift 3
  local name="ChooBaCa-${v%+}-$tag${v//[^+]/}"
  local dir="$WORK/$name"
  [ "$seed" = 0 ] || dir="$dir-s$seed"
  [ $# -eq 0 ] || dir="$dir-T1"
  RUNS+=("$dir")
  pool "distill ${dir#"$WORK"/}" "$dir/ckpt_best.pt" \
    "${TRAIN[@]}" distill.py --variant "$name" --preset "$STUDENT" --teacher1-preset "$T1" --teacher2-preset "$T2" \
      --work-dir "$WORK" --out-dir "$dir" --seed "$seed" --teacher-cache "$TEACHER_CACHE" "${COMMON[@]}" \
      "${DISTILL_FLAGS[@]}" "$@"
}
for d in "${DATASETS[@]}"; do
  tag=$(python -c "import distill; print(distill.DATA_TAG['$d'])")
  for seed in $(seq 0 $((SEEDS - 1))); do
    for v in rv-2 rv-1 fw-2 fw-1 rv-2+ rv-1+; do distill_run "$tag" "$v" "$seed"; done  # single-step ones first
  done
  if [ "$ABLATION" = 1 ]; then
    for v in fw-1 rv-1+; do distill_run "$tag" "$v" 0 --temperature 1; done  # one row per objective
  fi
done
if [ "$EXTRA" = 1 ]; then
  tag=$(python -c "import distill; print(distill.DATA_TAG['${DATASETS[0]}'])")
  for v in hybrid-1+ alternate-1 srkl-1+ rvavg-2+; do distill_run "$tag" "$v" 0; done
fi
drain

# ---- stage 4: evaluation (real data) or the mode-seeking measures (synthetic) --------------------------------------
if [ "$SYN" = 1 ]; then
  pool "measures teacher" "$WORK/teacher-$T1-synthetic/eval/measures.json" \
    python measures.py "$WORK/teacher-$T1-synthetic" --sequences --eval-dir "$EVAL_DIR" --samples "$SAMPLES" --device cpu
  for dir in "${RUNS[@]}"; do
    pool "measures ${dir#"$WORK"/}" "$dir/eval/measures.json" \
      python measures.py "$dir" --sequences --eval-dir "$EVAL_DIR" --samples "$SAMPLES" --device cpu
  done
  pool "positive control" "$WORK/positive_control.json" python measures.py "$WORK/positive_control.json" --control
else
  for dir in "${RUNS[@]}"; do
    pool "evaluate ${dir#"$WORK"/}" "$dir/eval/results.json" \
      python evaluate.py "$dir/ckpt_best.pt" --eval-dir "$EVAL_DIR" --tasks blimp,supplement,ewok,glue "${GLUE_FLAGS[@]}"
    pool "diagnostics ${dir#"$WORK"/}" "$dir/eval/measures.json" python measures.py "$dir/ckpt_best.pt"
  done
fi
drain

# ---- stage 5: report ------------------------------------------------------------------------------------------
{
  echo "# Results ($SCALE scale)"
  echo
  echo "Produced by \`SCALE=$SCALE$([ "$TEACHER_CACHE" != off ] && echo " TEACHER_CACHE=$TEACHER_CACHE") bash run_all.sh\` on $(date -u +%Y-%m-%d) in $(( $(date +%s) - T_START )) s,"\
       "$(python -c "import bench; print(bench.machine_summary())"), $JOBS job(s) at a time; data: ${DATASETS[*]}."
  echo "Models: student $STUDENT, teachers $T1 and $T2. Stage wall times, added up by kind (the pool runs $JOBS at once):"
  echo
  echo "| stage | runs | seconds |"; echo "|---|---|---|"
  awk -F'\t' '{split($1, w, " "); n[w[1]]++; s[w[1]] += $2} END {for (k in n) printf "| %s | %d | %d |\n", k, n[k], s[k]}' \
    "$TIMES" | sort
  echo
} > "$WORK/report_header.md"
python report.py --work-dir "$WORK" --out "$RESULTS" --header-file "$WORK/report_header.md"
echo "== done in $(( $(date +%s) - T_START ))s: $RESULTS"
