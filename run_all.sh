#!/usr/bin/env bash
# The whole reproduction, data to results.
#
#   bash run_all.sh                       # no BabyLM data: the synthetic experiment's answer (lab/README.md), ~15 min
#   SCALE=full bash run_all.sh            # the whole synthetic study: every variant, rung, size and budget (hours)
#   BABYLM_DIR=/path/to/babylm BABYLM_EVAL_DIR=/path/to/evaluation_data bash run_all.sh   # real data, CPU scale
#   SCALE=paper bash run_all.sh           # the paper's sizes and schedules (a GPU)
#   DRY_RUN=1 bash run_all.sh             # the stages it would run, nothing run or written
#
# Settings (environment): SCALE = synthetic | full | tiny | cpu | paper (default: synthetic without BabyLM data,
# else paper on a GPU and cpu otherwise); WORK (out), RESULTS (results/<scale>.md), JOBS (runs at a time,
# default 2 on the synthetic scales), SEEDS (8 synthetic, 10 full, 2 tiny, 1 otherwise), EXTRA (real data: 4 beyond
# the paper, default 1), TEACHER_CACHE (real data: off, exact or compact; the synthetic scales share one exact
# cache), FORCE (1: rerun finished stages), DRY_RUN (1: list the stages). GPUs: NPROC=N runs every training stage
# under `torchrun --nproc_per_node N`; TEACHER2_MICRO=16 (say) bounds gpt2-705m's micro-batch under ~45 GB.
# Data: BABYLM_DIR (2024 layout), BABYLM_2023_DIR (2023 layout), BABYLM_EVAL_DIR (the pipeline's evaluation_data).
set -euo pipefail
cd "$(dirname "$0")"
WORK=${WORK:-out}
FORCE=${FORCE:-0}
DRY_RUN=${DRY_RUN:-0}
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
case "$SCALE" in synthetic|full|tiny) SYN=1 ;; cpu|paper) SYN=0 ;;
  *) echo "run_all.sh: unknown SCALE=$SCALE (use synthetic, full, tiny, cpu or paper)" >&2; exit 2 ;; esac
if [ "$SYN" = 0 ] && [ ${#DATASETS[@]} -eq 0 ]; then
  echo "run_all.sh: SCALE=$SCALE needs BabyLM data: set BABYLM_DIR (2024 layout, https://osf.io/ad7qg/) or unset SCALE" >&2
  exit 2
fi
RESULTS=${RESULTS:-results/$SCALE.md}
JOBS=${JOBS:-$([ "$SYN" = 1 ] && echo 2 || echo 1)}
case "$SCALE" in tiny) DEFAULT_SEEDS=2 ;; synthetic) DEFAULT_SEEDS=8 ;; full) DEFAULT_SEEDS=10 ;; *) DEFAULT_SEEDS=1 ;; esac
SEEDS=${SEEDS:-$DEFAULT_SEEDS}
EXTRA=${EXTRA:-1}
NPROC=${NPROC:-1}
TEACHER_CACHE=${TEACHER_CACHE:-off}
# every setting checked before anything is written: one line naming it, what it accepts, exit 2
check() {  # check NAME VALUE REGEX ACCEPTS
  [[ "$2" =~ ^($3)$ ]] || { echo "run_all.sh: bad $1=$2 (use $4)" >&2; exit 2; }
}
for v in SEEDS JOBS NPROC; do check "$v" "${!v}" '[1-9][0-9]*' "a whole number, 1 or more"; done
for v in EXTRA FORCE DRY_RUN; do check "$v" "${!v}" '0|1' "0 or 1"; done
check TEACHER_CACHE "$TEACHER_CACHE" 'off|exact|compact' "off, exact or compact"
check TEACHER2_MICRO "${TEACHER2_MICRO:-}" '|[1-9][0-9]*' "a whole number, 1 or more, or leave it unset"
[ "$SYN" = 0 ] || [ "$SEEDS" -ge 2 ] || { echo "run_all.sh: bad SEEDS=$SEEDS (use 2 or more: an interval needs seeds)" >&2; exit 2; }
if [ -e "$WORK" ] && { [ ! -d "$WORK" ] || [ ! -w "$WORK" ]; }; then
  echo "run_all.sh: bad WORK=$WORK (use a writable folder, or a path that does not exist yet)" >&2; exit 2
fi
if [ -d "$RESULTS" ] || [ ! -d "$(dirname "$RESULTS")" ] || [ ! -w "$(dirname "$RESULTS")" ]; then
  echo "run_all.sh: bad RESULTS=$RESULTS (use a file path in an existing, writable folder)" >&2; exit 2
fi
THREADS=$(( $(python -c "import os; print(os.cpu_count() or 1)") / JOBS )); [ "$THREADS" -ge 1 ] || THREADS=1
if [ "$NPROC" -gt 1 ]; then TRAIN=(torchrun --standalone --nproc_per_node "$NPROC"); else TRAIN=(python); fi
TIMES="$WORK/stage_times.tsv"

stage() {  # stage NAME OUTPUT command...: skipped when it finished before and OUTPUT exists (FORCE=1 reruns).
  # "Finished" is a marker written after success, so a run killed half-way is redone, not mistaken for done.
  local name=$1 output=$2; shift 2
  local marker="$WORK/.done/${name//[ \/]/_}" log="$WORK/logs/${name//[ \/]/_}.log"
  if [ "$DRY_RUN" = 1 ]; then echo "== $name: $*"; return 0; fi
  if [ -e "$marker" ] && [ -e "$output" ] && [ "$FORCE" != 1 ]; then echo "== $name: done before, skipped"; return 0; fi
  echo "== $name: $*"
  local t0; t0=$(date +%s)
  if ! "$@" > "$log" 2>&1; then
    echo "run_all.sh: stage '$name' failed; its output: $log" >&2; tail -5 "$log" >&2
    return 1
  fi
  mkdir -p "$WORK/.done" && touch "$marker"
  printf '%s\t%s\n' "$name" $(( $(date +%s) - t0 )) >> "$TIMES"
}

pool() {  # pool NAME OUTPUT command...: a stage in the background, at most JOBS at once
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || { echo "run_all.sh: a stage failed" >&2; exit 1; }; done
  OMP_NUM_THREADS=$THREADS stage "$@" &
}
drain() {  # wait for every pooled stage; the first failure stops the run
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || { echo "run_all.sh: a stage failed" >&2; exit 1; }; done
  wait || { echo "run_all.sh: a stage failed" >&2; exit 1; }
}

if [ "$SYN" = 1 ]; then
  # ---- the synthetic experiment (lab/README.md) ------------------------------------------------------------
  DATA_DIR="$WORK/babylm_synthetic"; T1=llama-syn; T2=gpt2-syn
  # MAIN: the capacity-limited student size of the answer; B: its budget (each run a full schedule), also run
  # at 2B; LR_*: each cell's learning rate, from SCALE=full's sweep (lab/README.md); CELLS: the question's four
  MAIN=d32; LR_FW=3e-2; LR_RV=3e-2; LR_AFW=3e-2; LR_ARV=1e-2; OTHER_SIZES="d4 d8 d16 d64"
  if [ "$SCALE" = tiny ]; then  # the pipeline end to end in about a minute (tests/test_run_all.py)
    N_TRAIN=3000; TEACHER_FLAGS=(--max-steps 6 --warmup 2 --lr 3e-3 --eval-every 3); B=8; SAMPLES=50
  else  # 600 teacher steps bring teacher 1 close to the true language (lab/README.md); 240k sentences (2.1M
    # tokens, 1,035 steps an epoch) hold a run of B in one epoch
    N_TRAIN=240000; TEACHER_FLAGS=(--max-steps 600 --warmup 60 --lr 3e-3 --eval-every 200); B=1000; SAMPLES=1000
  fi
  lr_of() {  # the learning rate of a cell: pure KD at T = 1 (a, and a' on the student's samples) has its own
    case "$1" in a-fw|ap-fw) echo "$LR_AFW" ;; a-rv|ap-rv) echo "$LR_ARV" ;; *fw*) echo "$LR_FW" ;; *) echo "$LR_RV" ;; esac
  }
  group() {  # group SIZE CELL STEPS SEEDS [--windows random]: one process trains and measures a cell's seeds
    local size=$1 cell=$2 steps=$3 seeds=$4; shift 4
    pool "runs $size/$cell${1:+-random}/b$steps s$seeds" "$WORK/runs/$size" python -m lab.experiment run --work-dir "$WORK" \
      --data-dir "$DATA_DIR" --cell "$cell" --size "$size" --steps "$steps" --seeds "$seeds" --lr "$(lr_of "$cell")" \
      --samples "$SAMPLES" "$@"
  }
  SEED_RANGE="0-$((SEEDS - 1))"
  if [ "$SCALE" = full ]; then
    N_RUNS=$(( 32 + 8 * SEEDS + (SEEDS / 2) * (14 + 4 + 16 + 2) + 3 * 8 ))
    ESTIMATE="2 to 3 hours (measured: 2 h 20 min with 10 seeds on a 2-core Zen 4 EPYC, probe 101 GFLOP/s)"
  else
    N_RUNS=$(( 8 * SEEDS ))
    # measured on this project's 2-core Zen 4 EPYC (probe 101 GFLOP/s): 2.8 min of data, teacher, cache and report,
    # 1.32 min a seed (four cells at B and 2B, two at a time); scaled by this CPU's probe
    PROBE=$(python -c "
import time, torch
torch.set_num_threads($THREADS); a = torch.randn(256, 256); t = time.perf_counter(); n = 0
while time.perf_counter() - t < 0.3: a @ a; n += 1
print(round(2 * 256 ** 3 * n / (time.perf_counter() - t) / 1e9))")
    ESTIMATE="$([ "$SCALE" = tiny ] && echo 1 || python -c "print(round((2.8 + 1.32 * $SEEDS) * 101 / max($PROBE, 1), 1))") minutes"
  fi
  echo "run_all.sh: SCALE=$SCALE on synthetic: teacher $T1$([ "$SCALE" = full ] && echo " and $T2"), students of size"\
       "$MAIN; $N_RUNS distillation runs ($([ "$SCALE" = full ] && echo "a learning-rate sweep; fw-1, rv-1+, a-fw"\
       "and a-rv x $SEEDS seeds and the paper's other variants and the ladder's other rungs x $((SEEDS / 2)) at $B and"\
       "$((2 * B)) steps (single-step ones x 3); fw-1 and rv-1+ at 4 more sizes, and to $((8 * B)) steps; random"\
       "windows; then more seeds where an interval is wide" || echo "fw-1, rv-1+, a-fw"\
       "and a-rv x $SEEDS seeds at $B and $((2 * B)) steps")), $JOBS at a time; then the mode-seeking measures, a"\
       "positive control, and $RESULTS."
  echo "run_all.sh: about $ESTIMATE here. Stage logs: $WORK/logs/"
  [ "$DRY_RUN" = 1 ] || mkdir -p "$WORK/logs"  # the first write, after every check

  stage "data" "$DATA_DIR/train/synthetic.train" bash -c "python -m lab.grammar --write '$DATA_DIR' --sentences $N_TRAIN \
&& python data.py prepare --data synthetic --data-dir '$DATA_DIR' --work-dir '$WORK' --vocab-size 512 --separator both"
  TEACHER_COMMON=(--data synthetic --data-dir "$DATA_DIR" --work-dir "$WORK" --vocab-size 512 --separator both --seq-len 64
                  --batch-size 32 --micro-batch 32 --device cpu --precision fp32 --eval-max-seqs 256)
  # one teacher trains with every thread; SCALE=full's two share them
  if [ "$SCALE" = full ]; then pool_teacher() { pool "$@"; }; else pool_teacher() { stage "$@"; }; fi
  for t in "$T1" $([ "$SCALE" = full ] && echo "$T2"); do
    pool_teacher "teacher $t" "$WORK/teacher-$t-synthetic/ckpt_best.pt" python train_teacher.py --preset "$t" \
      "${TEACHER_COMMON[@]}" "${TEACHER_FLAGS[@]}"
  done
  drain
  # the cache every run reads (windows at offset 0), with all threads; the teacher's own measures beside it
  stage "cache" "$WORK/teacher-cache" python -m lab.experiment cache --work-dir "$WORK" --data-dir "$DATA_DIR" \
    --teachers "$([ "$SCALE" = full ] && echo 2 || echo 1)"
  pool "measures teacher" "$WORK/teacher-$T1-synthetic/eval/measures.json" \
    python -m lab.measures "$WORK/teacher-$T1-synthetic" --sequences --samples "$SAMPLES" --device cpu
  pool "control" "$WORK/positive_control.json" python -m lab.measures "$WORK/positive_control.json" --control
  if [ "$SCALE" = full ]; then
    # 1. the sweep: each cell of the question at four rates, two seeds, judged on validation CE only
    for cell in fw-1 rv-1+ a-fw a-rv; do
      for lr in 3e-3 1e-2 3e-2 1e-1; do
        pool "sweep $MAIN/$cell lr$lr" "$WORK/runs/$MAIN" python -m lab.experiment run --work-dir "$WORK" \
          --data-dir "$DATA_DIR" --cell "$cell" --size "$MAIN" --steps "$B" --seeds 0-1 --lr "$lr" --sweep
      done
    done
    drain
    if [ "$DRY_RUN" = 0 ]; then
      best() { python -m lab.synthetic_report --best-lr "$WORK/runs/$MAIN" "$1"; }
      LR_FW=$(best fw-1); LR_RV=$(best rv-1+); LR_AFW=$(best a-fw); LR_ARV=$(best a-rv)
    fi
    echo "== learning rates (the sweep's lowest validation CE): fw-1 $LR_FW, rv-1+ $LR_RV, a-fw $LR_AFW, a-rv $LR_ARV"
    # 2. the longest first, so the pool ends together: fw-1 and rv-1+ at 8B and 4B at the main size (half the
    # seeds, as everything beyond the question: the round of more seeds below adds them where intervals are wide)
    HALF="0-$((SEEDS / 2 - 1))"
    for steps in $((8 * B)) $((4 * B)); do for cell in fw-1 rv-1+; do group "$MAIN" "$cell" "$steps" "$HALF"; done; done
    # 3. every other size at B and 2B; the windows check at 2B (half the seeds: the teachers run at every step)
    for size in $OTHER_SIZES; do
      for steps in $((2 * B)) "$B"; do for cell in fw-1 rv-1+; do group "$size" "$cell" "$steps" "$HALF"; done; done
    done
    for cell in fw-1 rv-1+; do group "$MAIN" "$cell" $((2 * B)) "$HALF" --windows random; done
    # 4. the paper's other variants and the ladder's other rungs at B and 2B, half the seeds; the single-step
    # cells (93-255 ms a step against 12-13 for the teacher-forced ones) 3 seeds, first: the slowest
    for steps in $((2 * B)) "$B"; do
      for cell in rv-1 rv-2 ap-fw ap-rv; do group "$MAIN" "$cell" "$steps" 0-2; done
      for cell in fw-2 rv-2+ b-fw b-rv c-rv d-fw d-rv; do group "$MAIN" "$cell" "$steps" "$HALF"; done
    done
  fi
  # the question: fw-1, rv-1+, a-fw and a-rv at B and 2B, every seed
  for steps in $((2 * B)) "$B"; do for cell in fw-1 rv-1+ a-fw a-rv; do group "$MAIN" "$cell" "$steps" "$SEED_RANGE"; done; done
  drain
  if [ "$SCALE" = full ]; then  # 5. more seeds where a difference's interval is wider than the answer's targets:
    # the teacher-forced cells of those comparisons get as many seeds again, once: the list is made the first time
    # and a rerun reuses it (a fresh list would double the seeds again)
    MORE="$WORK/more_seeds.tsv"
    if [ ! -f "$MORE" ] && [ "$DRY_RUN" = 0 ]; then
      python -m lab.synthetic_report --work-dir "$WORK" --more-seeds > "$MORE.tmp" && mv "$MORE.tmp" "$MORE" \
        || { echo "run_all.sh: the list of more seeds failed" >&2; exit 1; }
    fi
    if [ -f "$MORE" ]; then
      while read -r size cell steps seeds; do group "$size" "$cell" "$steps" "$seeds"; done < "$MORE"
      drain
    fi
  fi
  [ "$DRY_RUN" = 0 ] || { echo "== report: python -m lab.synthetic_report --work-dir $WORK --out $RESULTS"; exit 0; }
  REPORT=(python -m lab.synthetic_report)
else
  # ---- the paper's pipeline on BabyLM data ----------------------------------------------------------------------
  EVAL_DIR=${BABYLM_EVAL_DIR:-data/evaluation_data}
  if [ ! -d "$EVAL_DIR" ]; then
    echo "run_all.sh: evaluation data not found at $EVAL_DIR: set BABYLM_EVAL_DIR (https://osf.io/ad7qg/)" >&2; exit 2
  fi
  if [ "$SCALE" = paper ]; then
    STUDENT=baby-llama-58m; T1=llama-360m; T2=gpt2-705m; TEACHER_FLAGS=(); DISTILL_FLAGS=(--fused-loss); GLUE_FLAGS=()
  else  # 2 CPU cores: small models of the same architectures, step caps (the schedules still run their course)
    STUDENT=baby-llama-small; T1=llama-small; T2=gpt2-small
    TEACHER_FLAGS=(--max-steps 160 --batch-size 32 --warmup 16 --eval-every 80 --eval-max-seqs 512)
    DISTILL_FLAGS=(--max-steps 80 --batch-size 16 --micro-batch 16 --warmup 8 --eval-every 40 --eval-max-seqs 512 --lr 1e-3
                   --fused-loss)
    GLUE_FLAGS=(--max-train-examples 500 --max-epochs 2)
  fi
  N_RUNS=$(( 6 * SEEDS * ${#DATASETS[@]} + (EXTRA == 1 ? 4 : 0) ))
  echo "run_all.sh: SCALE=$SCALE on ${DATASETS[*]}: teachers $T1 and $T2, student $STUDENT; $N_RUNS distillation runs"\
       "(the paper's six variants x $SEEDS seed(s) per data set$([ "$EXTRA" = 1 ] && echo ", 4 objectives beyond the paper")),"\
       "$JOBS at a time$([ "$TEACHER_CACHE" != off ] && echo ", teacher cache $TEACHER_CACHE"); then evaluation, and $RESULTS."
  echo "run_all.sh: about $([ "$SCALE" = cpu ] && echo "40 or more" || echo "days on one GPU;") minutes. Stage logs: $WORK/logs/"
  [ "$DRY_RUN" = 1 ] || mkdir -p "$WORK/logs"  # the first write, after every check
  for d in "${DATASETS[@]}"; do stage "data $d" "$WORK/data-$d" python data.py prepare --data "$d" --work-dir "$WORK"; done
  for d in "${DATASETS[@]}"; do
    for t in "$T1" "$T2"; do
      micro=(); [ "$t" = gpt2-705m ] && [ -n "${TEACHER2_MICRO:-}" ] && micro=(--micro-batch "$TEACHER2_MICRO")
      pool "teacher $t $d" "$WORK/teacher-$t-$d/ckpt_best.pt" "${TRAIN[@]}" train_teacher.py --preset "$t" --data "$d" \
        --work-dir "$WORK" "${TEACHER_FLAGS[@]}" "${micro[@]}"
    done
  done
  drain
  distill_run() {  # distill_run DATA VARIANT SEED: distill.py names the folder, <work>/ChooBaCa-<v>-<data>[-s<seed>]
    pool "distill $1 $2 s$3" "$WORK/.done" "${TRAIN[@]}" distill.py --variant "$2" --data "$1" --seed "$3" \
      --preset "$STUDENT" --teacher1-preset "$T1" --teacher2-preset "$T2" --work-dir "$WORK" \
      --teacher-cache "$TEACHER_CACHE" "${DISTILL_FLAGS[@]}"
  }
  for d in "${DATASETS[@]}"; do
    for seed in $(seq 0 $((SEEDS - 1))); do
      for v in rv-2 rv-1 fw-2 fw-1 rv-2+ rv-1+; do distill_run "$d" "$v" "$seed"; done  # single-step ones first
    done
  done
  if [ "$EXTRA" = 1 ]; then for v in hybrid-1+ alternate-1 srkl-1+ rvavg-2+; do distill_run "${DATASETS[0]}" "$v" 0; done; fi
  drain
  for dir in "$WORK"/ChooBaCa-*/; do
    [ -e "$dir/config.json" ] || continue
    dir=${dir%/}
    pool "evaluate ${dir#"$WORK"/}" "$dir/eval/results.json" \
      python evaluate.py "$dir/ckpt_best.pt" --eval-dir "$EVAL_DIR" --tasks blimp,supplement,ewok,glue "${GLUE_FLAGS[@]}"
    pool "diagnostics ${dir#"$WORK"/}" "$dir/eval/measures.json" python -m lab.measures "$dir/ckpt_best.pt"
  done
  drain
  [ "$DRY_RUN" = 0 ] || exit 0
  REPORT=(python report.py)
fi

# ---- the report ------------------------------------------------------------------------------------------------
{
  echo "# Results ($SCALE scale)"
  echo
  echo "Produced by \`$([ "$SCALE" != synthetic ] && echo "SCALE=$SCALE ")bash run_all.sh\` on $(date -u +%Y-%m-%d) in"\
       "$(( $(date +%s) - T_START )) s, $(python -m lab.bench --machine), $JOBS job(s) at a time; data:"\
       "$([ "$SYN" = 1 ] && echo synthetic || echo "${DATASETS[*]}"); $(du -sh "$WORK" | cut -f1) under $WORK."
  echo "Stage wall times, added up by kind (the pool runs $JOBS at once):"
  echo
  echo "| stage | runs | seconds |"; echo "|---|---|---|"
  awk -F'\t' '{split($1, w, " "); n[w[1]]++; s[w[1]] += $2} END {for (k in n) printf "| %s | %d | %d |\n", k, n[k], s[k]}' \
    "$TIMES" | sort
  echo
} > "$WORK/report_header.md"
"${REPORT[@]}" --work-dir "$WORK" --out "$RESULTS" --header-file "$WORK/report_header.md"
echo "== done in $(( $(date +%s) - T_START ))s: $RESULTS"
