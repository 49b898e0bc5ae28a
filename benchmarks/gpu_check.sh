#!/usr/bin/env bash
# One prepared check for a GPU machine lent for a few minutes, all within LIMIT seconds:
#   1. the CUDA tests (tests/cuda);
#   2. the quantization ladder from the shipped full-precision model, three seeds side by side
#      (as on the CPU: --no-progressive, 8 epochs a step), each seed's report in seed_S/;
#   3. the GPU recipe (snn/configs/event_snn_lite_full.yaml) through tools/flow_quality.py,
#      sharing the GPU with the ladders, so its wall time is an upper bound;
# and packs the reports and logs (no checkpoints) into $OUT/gpu_check.tgz.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh           # on the GPU machine
#   OUT=/tmp/gc TINY=1 bash benchmarks/gpu_check.sh      # a short rehearsal on the CPU
set -u
OUT=${OUT:-results/gpu_check_out}
TINY=${TINY:-0}
LIMIT=${LIMIT:-480}
PY=${PY:-python3}
R=results/gpu_check
mkdir -p "$OUT" "$R"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
START=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - START))); }
log() { echo "[$(date +%T) +$(($(date +%s) - START))s] $*" | tee -a "$R/timeline.txt"; }

if [ "$TINY" = 1 ]; then
    DEVICE=cpu; WORKERS=2
    LADDER=(--epochs-per-step 1 --last-step V2_W8A8)
    RECIPE=(--set num_epochs=1 --set data_root=results/gpu_check/syn_tiny --set crop_size=32 --set late_crop_size=64
            --set 'synthetic={num_train: 2, num_val: 1, num_test: 1, seed: 0, height: 64, width: 64}')
    PREP_RECIPE=()
else
    DEVICE=cuda; WORKERS=12
    LADDER=()
    RECIPE=()
    PREP_RECIPE=(--config snn/configs/event_snn_lite_full.yaml)
fi

log "start: LIMIT=$LIMIT s, device $DEVICE"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  nproc; } > "$R/machine.txt" 2>&1

# The ladders need the yardstick and unseen sets; the three would race to generate them.
$PY benchmarks/prepare_test_sets.py --workers $WORKERS > "$R/prepare.log" 2>&1
log "test sets ready ($(tail -n 3 "$R/prepare.log" | tr '\n' ' '))"

$PY -m pytest -q -p no:cacheprovider tests/cuda -rs > "$R/cuda_tests.log" 2>&1 &
TESTS=$!
PIDS=()
for seed in 0 1 2; do
    timeout $(($(left) - 20)) $PY tools/qat_ladder.py --output-dir "$R/ladder/seed_$seed" --seed $seed \
        --fp-checkpoint checkpoints/pretrained/FP32.pth --no-progressive --data-root data/synthetic \
        --device $DEVICE "${LADDER[@]}" > "$R/ladder_seed_$seed.log" 2>&1 &
    PIDS+=($!)
done
log "ladders started: ${PIDS[*]}"

if [ ${#PREP_RECIPE[@]} -gt 0 ]; then
    $PY benchmarks/prepare_test_sets.py --workers 8 "${PREP_RECIPE[@]}" > "$R/prepare_recipe.log" 2>&1
    log "recipe data ready ($(tail -n 1 "$R/prepare_recipe.log"))"
fi
timeout $(($(left) - 20)) $PY tools/flow_quality.py --config snn/configs/event_snn_lite_full.yaml --seeds 0 \
    --output-dir "$R/full" --device $DEVICE "${RECIPE[@]}" > "$R/recipe.log" 2>&1 &
RECIPE_PID=$!
log "recipe started: $RECIPE_PID"

wait $TESTS; log "cuda tests: exit $? ($(tail -n 1 "$R/cuda_tests.log"))"
for i in 0 1 2; do wait "${PIDS[$i]}"; log "ladder seed $i: exit $?"; done
wait $RECIPE_PID; log "recipe: exit $? (124: stopped at the time limit)"
nvidia-smi --query-gpu=memory.used --format=csv >> "$R/machine.txt" 2>&1

tar czf "$OUT/gpu_check.tgz" --exclude='*.pth' --exclude='events.out.tfevents*' --exclude='syn_tiny' "$R"
log "packed: $(du -h "$OUT/gpu_check.tgz" | cut -f1)"
cp "$R/timeline.txt" "$OUT/"
