#!/usr/bin/env bash
# The whole reproduction, data to results.md.
#
#   bash run_all.sh                       # no BabyLM data: the synthetic experiment (README), ~38 min on 2 cores
#   SCALE=capacity bash run_all.sh        # the synthetic experiment plus students of five widths, ~52 min
#   BABYLM_DIR=../shared/data/corpus BABYLM_EVAL_DIR=../shared/data/eval bash run_all.sh   # real data, CPU scale
#   SCALE=paper bash run_all.sh           # the paper's sizes and schedules (a GPU)
#   FORCE=1 bash run_all.sh               # rerun stages whose outputs exist
#   EXTRA=0 bash run_all.sh               # without the objectives beyond the paper
#
# Settings (environment): SCALE = synthetic | capacity | tiny | cpu | paper (default: synthetic without BabyLM data,
# else paper on a GPU and cpu otherwise); WORK (out), RESULTS (results.md), JOBS (parallel runs, default 2 on
# the synthetic scales), SEEDS (3 synthetic, 1 otherwise), EXTRA (1), ABLATION (1: the T = 1 rows).
# GPUs: NPROC=N runs every training stage under `torchrun --nproc_per_node N` (default 1: plain python);
# TEACHER2_MICRO=16 (say) bounds gpt2-705m's micro-batch on GPUs with less than ~45 GB.
# TEACHER_CACHE=exact | compact: every distillation run reads the teachers' targets from a cache built once per
# teacher, data set and seed (README "Teacher cache"; fixed windows: each epoch reads the first epoch's, at the
# offset the seed draws; single-step variants still run the teachers); default exact on the synthetic scales
# (where a run of the budget sees under one epoch: the windows of random offsets), off otherwise.
# WINDOWS_CHECK=1 (synthetic): fw-1 and rv-1+ at 4 times the budget (2.6 epochs) also with a fresh random offset
# per epoch (one cache per epoch's offset), against the fixed windows at that budget.
# LONG=1 (synthetic): fw-1 and rv-1+ also at 2, 4 and 8 times the budget (every seed): where the verdict leads.
# Data: BABYLM_DIR (2024 layout), BABYLM_2023_DIR (2023 layout), BABYLM_EVAL_DIR (the pipeline's evaluation_data).
set -euo pipefail
cd "$(dirname "$0")"
WORK=${WORK:-out}
RESULTS=${RESULTS:-results.md}
FORCE=${FORCE:-0}
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
case "$SCALE" in synthetic|capacity|tiny) SYN=1 ;; cpu|paper) SYN=0 ;;
  *) echo "run_all.sh: unknown SCALE=$SCALE (use synthetic, capacity, tiny, cpu or paper)" >&2; exit 2 ;; esac
if [ "$SYN" = 0 ] && [ ${#DATASETS[@]} -eq 0 ]; then
  echo "run_all.sh: SCALE=$SCALE needs BabyLM data: set BABYLM_DIR (2024 layout, https://osf.io/ad7qg/) or unset SCALE" >&2
  exit 2
fi
JOBS=${JOBS:-$([ "$SYN" = 1 ] && echo 2 || echo 1)}
SEEDS=${SEEDS:-$([ "$SYN" = 1 ] && [ "$SCALE" != tiny ] && echo 3 || echo 1)}
EXTRA=${EXTRA:-$([ "$SYN" = 1 ] && echo 0 || echo 1)}
ABLATION=${ABLATION:-0}
NPROC=${NPROC:-1}
TEACHER_CACHE=${TEACHER_CACHE:-$([ "$SYN" = 1 ] && echo exact || echo off)}
case "$TEACHER_CACHE" in off|exact|compact) ;;
  *) echo "run_all.sh: unknown TEACHER_CACHE=$TEACHER_CACHE (use off, exact or compact)" >&2; exit 2 ;; esac
# every setting checked before anything is written: one line naming it, what it accepts, exit 2
check() {  # check NAME VALUE REGEX ACCEPTS
  [[ "$2" =~ ^($3)$ ]] || { echo "run_all.sh: bad $1=$2 (use $4)" >&2; exit 2; }
}
for v in SEEDS JOBS NPROC; do check "$v" "${!v}" '[1-9][0-9]*' "a whole number, 1 or more"; done
WINDOWS_CHECK=${WINDOWS_CHECK:-0}
LONG=${LONG:-0}
for v in EXTRA ABLATION FORCE WINDOWS_CHECK LONG; do check "$v" "${!v}" '0|1' "0 or 1"; done
check TEACHER2_MICRO "${TEACHER2_MICRO:-}" '|[1-9][0-9]*' "a whole number, 1 or more, or leave it unset"
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

# ---- scale: models, step caps, seeds ---------------------------------------------------------------------
if [ "$SYN" = 1 ]; then
  DATASETS=(synthetic); DATA_DIR="$WORK/babylm_synthetic"; EVAL_DIR="$DATA_DIR/evaluation_data"
  STUDENT=baby-llama-syn-d8; T1=llama-syn; T2=gpt2-syn
  COMMON=(--data-dir "$DATA_DIR" --vocab-size 512 --separator both --seq-len 64 --batch-size 32 --micro-batch $((32 / NPROC))
          --device cpu --precision fp32 --eval-max-seqs 256)
  # Students: baby-llama-syn-<size>, one layer of width 4 to 64 (d32 is baby-llama-syn); MAIN is the
  # capacity-limited size of the ladder and the paper's variants. BUDGET: steps of a full run (each run is a
  # whole schedule); B/2 runs show convergence, B/8 runs the verdicts early on. LRS: the sweep per objective.
  MAIN=d8
  if [ "$SCALE" = tiny ]; then  # the pipeline end to end in about a minute (tests/test_run_all.py)
    N_TRAIN=3000; TEACHER_FLAGS=(--max-steps 6 --warmup 2 --lr 3e-3 --eval-every 3)
    BUDGET=8; LRS="3e-2"; SIZES="d4 d8"; SAMPLES=50; LADDER_CELLS="ap-rv ap-fw"
  else
    # 600 teacher steps bring teacher 1 within 0.01 nats/token of the true entropy; 360k sentences (about
    # 3.2M tokens, 1,553 steps an epoch) are more than one epoch of a run of the budget, so fixed windows (the
    # teacher cache) and random offsets read the same windows there
    N_TRAIN=360000; TEACHER_FLAGS=(--max-steps 600 --warmup 60 --lr 3e-3 --eval-every 200)
    BUDGET=1000; LRS="1e-2 3e-2 1e-1 3e-1"; SAMPLES=1000; LADDER_CELLS="ap-rv ap-fw a-fw a-rv b-fw b-rv c-rv d-fw d-rv"
    SIZES=$([ "$SCALE" = capacity ] && echo "d4 d8 d16 d32 d64" || echo "d8")
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
if [ "$SYN" = 1 ]; then  # the sweep; the paper's six at 3 budgets; 9 more ladder cells and 2 per other size at 2
  N_SIZES=$(wc -w <<< "$SIZES"); N_LRS=$(wc -w <<< "$LRS")
  N_RUNS=$(( 2 * N_LRS + 18 * SEEDS + 2 * $(wc -w <<< "$LADDER_CELLS") * SEEDS + 4 * SEEDS * (N_SIZES - 1)
            + 2 * SEEDS * WINDOWS_CHECK * (2 - LONG) + 6 * SEEDS * LONG ))
else
  N_RUNS=$(( 6 * SEEDS * ${#DATASETS[@]} + (EXTRA == 1 ? 4 : 0) + (ABLATION == 1 ? 2 : 0) ))
fi
PROBE=$(python -c "
import time, torch
torch.set_num_threads($THREADS); a = torch.randn(256, 256); t = time.perf_counter(); n = 0
while time.perf_counter() - t < 0.3: a @ a; n += 1
print(round(2 * 256 ** 3 * n / (time.perf_counter() - t) / 1e9))")
case "$SCALE" in  # minutes measured on the README's machines, scaled by this CPU's fp32 matmul rate (a 0.3 s probe)
  # measured on the AMX machine at a probe of 189, 2026-12-03: synthetic 38.3 min; the other sizes, LONG=1 and
  # WINDOWS_CHECK=1 together added 38.4 (apportioned 10.6, 18.0 and 10 as their stage times; 15 for
  # WINDOWS_CHECK without LONG's fixed runs)
  synthetic|capacity) MINUTES=$(python -c "print(round((38.3 + 10.6 * ('$SCALE' == 'capacity') + 18.0 * $LONG
                                                        + (15 - 5 * $LONG) * $WINDOWS_CHECK) * 189 / max($PROBE, 1), 1))") ;;
  tiny) MINUTES=$([ "$LONG" = 1 ] && echo 2 || echo 1.5) ;; cpu) MINUTES="40 or more" ;; paper) MINUTES="days on one GPU" ;;
esac
if [ "$SYN" = 1 ]; then
  echo "run_all.sh: SCALE=$SCALE on synthetic: teachers $T1 and $T2, students of size(s) $SIZES (main $MAIN);"\
       "$N_RUNS distillation runs (a learning-rate sweep, then the paper's six variants and the ablation ladder x"\
       "$SEEDS seed(s) at $BUDGET, $((BUDGET / 2)) and $((BUDGET / 8)) steps$([ "$N_SIZES" -gt 1 ] && echo \
       ", fw-1 and rv-1+ at every size")$([ "$LONG" = 1 ] && echo \
       "; fw-1 and rv-1+ also at $((2 * BUDGET)), $((4 * BUDGET)) and $((8 * BUDGET)) steps")), $JOBS at a time, teacher"\
       "cache $TEACHER_CACHE; then the mode-seeking"\
       "measures, a positive control, and $RESULTS."
else
echo "run_all.sh: SCALE=$SCALE on ${DATASETS[*]}: teachers $T1 and $T2, student $STUDENT; $N_RUNS distillation runs"\
     "(the paper's six variants x $SEEDS seed(s) per data set$([ "$EXTRA" = 1 ] && echo ", 4 objectives beyond the paper")$([ "$ABLATION" = 1 ] && echo ", 2 at T = 1")),"\
     "$JOBS at a time$([ "$TEACHER_CACHE" != off ] && echo ", teacher cache $TEACHER_CACHE"); then"\
     "evaluation, and $RESULTS."
fi
echo "run_all.sh: about $MINUTES minutes here (fp32 probe $PROBE GFLOP/s at $THREADS thread(s) per job). Stage logs: $WORK/logs/"

mkdir -p "$WORK/logs"  # the first write, after every check

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

# ---- stage 3: distillation ------------------------------------------------------------------------------------
RUNS=()
variant_name() { echo "ChooBaCa-${1%+}-$2${1//[^+]/}"; }  # variant_name rv-2+ 24 -> ChooBaCa-rv-2-24+
if [ "$SYN" = 1 ]; then
  preset_of() { if [ "$1" = d32 ]; then echo baby-llama-syn; else echo "baby-llama-syn-$1"; fi; }
  syn_run() {  # syn_run SIZE CELL STEPS SEED LR flags...: one student in runs/SIZE/CELL/bSTEPS-sSEED
    local size=$1 cell=$2 steps=$3 seed=$4 lr=$5; shift 5
    local dir="$WORK/runs/$size/$cell/b$steps-s$seed"
    case "$cell" in sweep-*) ;; *) RUNS+=("$dir") ;; esac  # the sweep is judged on validation CE only
    pool "distill ${dir#"$WORK"/}" "$dir/ckpt_best.pt" \
      "${TRAIN[@]}" distill.py --data synthetic --preset "$(preset_of "$size")" --teacher1-preset "$T1" \
        --teacher2-preset "$T2" --work-dir "$WORK" --out-dir "$dir" --seed "$seed" --lr "$lr" --max-steps "$steps" \
        --warmup $(( steps >= 10 ? steps / 10 : 1 )) --eval-every $(( steps >= 2 ? steps / 2 : 1 )) \
        --teacher-cache "$TEACHER_CACHE" --prompt-len 48 "${COMMON[@]}" "$@"
  }
  paper_flags() {  # fw-1 -> --variant ChooBaCa-fw-1-syn, rv-2+ -> --variant ChooBaCa-rv-2-syn+
    echo "--variant $(variant_name "$1" syn)"
  }
  ladder_flags() {  # the ablation ladder's rungs beyond the paper's variants (README "The ablation ladder")
    local o=${1#*-} tf="--no-single-step --no-progressive --chunk-size 0 --teachers 1"
    case "${1%-*}" in
      a) echo "--objective $o --alpha 0 --temperature 1 --no-mixing $tf" ;;    # pure KD, T = 1, corpus prefixes
      b) echo "--objective $o --alpha 0 --temperature 2 --no-mixing $tf" ;;    # T = 2
      c) echo "--objective $o --alpha 0.5 --temperature 2 --no-mixing $tf" ;;  # half CE (c-fw is fw-1)
      d) echo "--objective $o --alpha 0.5 --temperature 2 --mixing $tf" ;;     # eq. 2, constant lambda
      ap) echo "--objective $o --alpha 0 --temperature 1 --no-mixing --single-step --sample-from student"\
               "--no-progressive --chunk-size 0 --teachers 1" ;;            # pure KD on the student's own samples
    esac
  }
  lr_of() { case "$1" in *fw*) echo "$LR_FW" ;; *) echo "$LR_RV" ;; esac; }
  # 1. the learning-rate sweep: fw-1 and rv-1+ at the main size, one seed, judged on validation CE
  for lr in $LRS; do
    for v in fw-1 rv-1+; do syn_run "$MAIN" "sweep-$v-lr$lr" "$BUDGET" 0 "$lr" $(paper_flags "$v"); done
  done
  drain
  LR_FW=$(python synthetic_report.py --best-lr "$WORK/runs/$MAIN" fw-1)
  LR_RV=$(python synthetic_report.py --best-lr "$WORK/runs/$MAIN" rv-1+)
  echo "== learning rates (lowest validation CE of the sweep): forward KL $LR_FW, reverse KL $LR_RV"
  # 1b. LONG=1: fw-1 and rv-1+ at 8B, 4B and 2B (the longest runs first, so the pool ends together)
  if [ "$LONG" = 1 ]; then
    for steps in $((8 * BUDGET)) $((4 * BUDGET)) $((2 * BUDGET)); do
      for seed in $(seq 0 $((SEEDS - 1))); do
        for v in fw-1 rv-1+; do syn_run "$MAIN" "$v" "$steps" "$seed" "$(lr_of "$v")" $(paper_flags "$v"); done
      done
    done
  fi
  # 1c. WINDOWS_CHECK=1: fw-1 and rv-1+ at 4B with a fresh random offset per epoch, and fixed (unless LONG ran them)
  if [ "$WINDOWS_CHECK" = 1 ]; then
    for seed in $(seq 0 $((SEEDS - 1))); do
      for v in fw-1 rv-1+; do
        syn_run "$MAIN" "$v-random" $((4 * BUDGET)) "$seed" "$(lr_of "$v")" $(paper_flags "$v") --no-fixed-windows
        [ "$LONG" = 1 ] || syn_run "$MAIN" "$v" $((4 * BUDGET)) "$seed" "$(lr_of "$v")" $(paper_flags "$v")
      done
    done
  fi
  # 2. the paper's six at B, B/2, B/8 and the ladder's other cells at B, B/2, at the main size; single-step first
  for seed in $(seq 0 $((SEEDS - 1))); do
    for steps in "$BUDGET" $((BUDGET / 2)) $((BUDGET / 8 > 0 ? BUDGET / 8 : 1)); do
      for v in rv-2 rv-1 fw-2 fw-1 rv-2+ rv-1+; do syn_run "$MAIN" "$v" "$steps" "$seed" "$(lr_of "$v")" $(paper_flags "$v"); done
    done
    for steps in "$BUDGET" $((BUDGET / 2)); do
      for c in $LADDER_CELLS; do
        syn_run "$MAIN" "$c" "$steps" "$seed" "$(lr_of "$c")" $(ladder_flags "$c")
      done
      # 3. the other capacities: fw-1 and rv-1+
      for size in $SIZES; do
        [ "$size" = "$MAIN" ] && continue
        for v in fw-1 rv-1+; do syn_run "$size" "$v" "$steps" "$seed" "$(lr_of "$v")" $(paper_flags "$v"); done
      done
    done
  done
else
  distill_run() {  # distill_run TAG VARIANT SEED [flags...]: e.g. 24 rv-1+ 0 -> ChooBaCa-rv-1-24+ (seed 0)
    local tag=$1 v=$2 seed=$3; shift 3
    local name; name=$(variant_name "$v" "$tag")
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
  echo "Produced by \`SCALE=$SCALE$([ "$TEACHER_CACHE" != off ] && echo " TEACHER_CACHE=$TEACHER_CACHE")$(
    [ "$WINDOWS_CHECK" = 1 ] && echo " WINDOWS_CHECK=1")$([ "$LONG" = 1 ] && echo " LONG=1") bash run_all.sh\` on $(date -u +%Y-%m-%d) in $(( $(date +%s) - T_START )) s,"\
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
