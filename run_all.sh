#!/usr/bin/env bash
# The whole reproduction: data -> tokenizer -> teachers -> the twelve Table 1 variants -> evaluation ->
# results.md with the paper's numbers beside ours.
#
#   BABYLM_DIR=../shared/data/corpus BABYLM_EVAL_DIR=../shared/data/eval bash run_all.sh   # CPU scale, ~30 min
#   SCALE=paper bash run_all.sh           # the paper's sizes and schedules (a GPU)
#   FORCE=1 bash run_all.sh               # rerun stages whose outputs exist
#   EXTRA=1 bash run_all.sh               # also hybrid, alternate, skew and teacher-averaged reverse KL
#
# Data: BABYLM_DIR (2024 layout), BABYLM_2023_DIR (2023 layout), BABYLM_EVAL_DIR (the pipeline's
# evaluation_data). With no BabyLM data at all, the synthetic demo corpus runs instead (not the paper's data).
set -euo pipefail
cd "$(dirname "$0")"
WORK=${WORK:-out}
FORCE=${FORCE:-0}
EXTRA=${EXTRA:-0}
SCALE=${SCALE:-auto}
if [ "$SCALE" = auto ]; then
  if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then SCALE=paper; else SCALE=cpu; fi
fi
mkdir -p "$WORK"
TIMES="$WORK/stage_times.tsv"
T_START=$(date +%s)

stage() {  # stage NAME OUTPUT command...: skipped when it finished before and OUTPUT exists (FORCE=1 reruns);
  # the first failure stops the run. "Finished" is a marker written after success, so a run killed
  # half-way (whose best checkpoint may exist) is redone, not mistaken for done.
  local name=$1 output=$2; shift 2
  local marker="$WORK/.done/${name// /_}"
  if [ -e "$marker" ] && [ -e "$output" ] && [ "$FORCE" != 1 ]; then echo "== $name: done before, skipped"; return 0; fi
  echo "== $name: $*"
  local t0; t0=$(date +%s)
  if ! "$@"; then echo "run_all.sh: stage '$name' failed (command: $*)" >&2; exit 1; fi
  mkdir -p "$WORK/.done" && touch "$marker"
  printf '%s\t%s\n' "$name" $(( $(date +%s) - t0 )) >> "$TIMES"
}

# ---- scale: model sizes and step caps -------------------------------------------------------------------
if [ "$SCALE" = paper ]; then
  STUDENT=baby-llama-58m; T1=llama-360m; T2=gpt2-705m
  TEACHER_FLAGS=(); DISTILL_FLAGS=(); GLUE_FLAGS=()
elif [ "$SCALE" = cpu ]; then
  # 2 CPU cores, about 30 minutes for everything: small models of the same architectures, step caps
  # (the cosine and the progressive lambda still run their whole course), fewer GLUE examples and epochs
  STUDENT=baby-llama-small; T1=llama-small; T2=gpt2-small
  TEACHER_FLAGS=(--max-steps 160 --batch-size 32 --warmup 16 --eval-every 80 --eval-max-seqs 512)
  DISTILL_FLAGS=(--max-steps 80 --batch-size 16 --micro-batch 16 --warmup 8 --eval-every 40 --eval-max-seqs 512 --lr 1e-3)
  GLUE_FLAGS=(--max-train-examples 500 --max-epochs 2)
else
  echo "run_all.sh: unknown SCALE=$SCALE (use paper or cpu)" >&2; exit 2
fi

# ---- stage 1: data sets present, tokenizer and token caches ---------------------------------------------
DATASETS=()
for d in 2024 2023; do
  if python -c "import data; data.corpus_files('$d', data.default_data_dir('$d'))" 2>/dev/null; then
    DATASETS+=("$d")
  else
    echo "notice: no BabyLM $d data ($(python -c "import data; print(data.default_data_dir('$d'))")): its variants are skipped"
  fi
done
EVAL_DIR=${BABYLM_EVAL_DIR:-data/evaluation_data}
TASKS=blimp,supplement,ewok,glue
if [ ${#DATASETS[@]} -eq 0 ]; then
  echo "notice: no BabyLM data at all: running the synthetic demo corpus, which is NOT the paper's data"
  DATASETS=(synthetic); EVAL_DIR=data/babylm_synthetic/evaluation_data; TASKS=blimp
fi
if [ ! -d "$EVAL_DIR" ] && [ "${DATASETS[0]}" != synthetic ]; then
  echo "run_all.sh: evaluation data not found at $EVAL_DIR: set BABYLM_EVAL_DIR (https://osf.io/ad7qg/)" >&2; exit 2
fi
for d in "${DATASETS[@]}"; do
  stage "data $d" "$WORK/data-$d" python data.py prepare --data "$d" --work-dir "$WORK"
done

# ---- stage 2: teachers -------------------------------------------------------------------------------------
for d in "${DATASETS[@]}"; do
  for t in "$T1" "$T2"; do
    stage "teacher $t $d" "$WORK/teacher-$t-$d/ckpt_best.pt" \
      python train_teacher.py --preset "$t" --data "$d" --work-dir "$WORK" "${TEACHER_FLAGS[@]}"
  done
done

# ---- stage 3: the twelve variants (six per data set) -------------------------------------------------------
VARIANTS=()
distill_variant() {  # distill_variant TAG v: e.g. 24 rv-1+ -> ChooBaCa-rv-1-24+
  local name="ChooBaCa-${2%+}-$1${2//[^+]/}"
  VARIANTS+=("$name")
  stage "distill $name" "$WORK/$name/ckpt_best.pt" \
    python distill.py --variant "$name" --preset "$STUDENT" --teacher1-preset "$T1" --teacher2-preset "$T2" \
      --work-dir "$WORK" "${DISTILL_FLAGS[@]}"
}
for d in "${DATASETS[@]}"; do
  tag=$(python -c "import distill; print(distill.DATA_TAG['$d'])")
  for v in fw-2 fw-1 rv-2 rv-1 rv-2+ rv-1+; do distill_variant "$tag" "$v"; done
done

# ---- stage 3b (EXTRA=1): objectives beyond the paper, on the first data set ------------------------------------
if [ "$EXTRA" = 1 ]; then
  tag=$(python -c "import distill; print(distill.DATA_TAG['${DATASETS[0]}'])")
  for v in hybrid-1+ alternate-1 srkl-1+ rvavg-2+; do distill_variant "$tag" "$v"; done
fi

# ---- stage 4: evaluation, and the mode-seeking diagnostics against teacher 1 ----------------------------------
for name in "${VARIANTS[@]}"; do
  stage "evaluate $name" "$WORK/$name/eval/results.json" \
    python evaluate.py "$WORK/$name/ckpt_best.pt" --eval-dir "$EVAL_DIR" --tasks "$TASKS" "${GLUE_FLAGS[@]}"
  stage "diagnostics $name" "$WORK/$name/eval/measures.json" \
    python measures.py "$WORK/$name/ckpt_best.pt"
done

# ---- stage 5: report ----------------------------------------------------------------------------------------
{
  echo "# Results ($SCALE scale)"
  echo
  echo "Produced by \`SCALE=$SCALE bash run_all.sh\` on $(date -u +%Y-%m-%d), $(python -c "import platform, torch; \
print(f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, ' + \
(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'))"); data: ${DATASETS[*]}."
  echo "Models: student $STUDENT, teachers $T1 and $T2. Stage wall times (s):"
  echo
  echo "| stage | seconds |"; echo "|---|---|"
  awk -F'\t' '{printf "| %s | %s |\n", $1, $2}' "$TIMES"
  echo
} > "$WORK/report_header.md"
python report.py --work-dir "$WORK" --out results.md --header-file "$WORK/report_header.md"
echo "== done in $(( $(date +%s) - T_START ))s: results.md"
