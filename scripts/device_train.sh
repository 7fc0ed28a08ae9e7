#!/usr/bin/env bash
# Train one or more configs side by side on a lent GPU machine (the workplace's `device` tool), time-boxed, and hand
# the checkpoints back through $OUT. The machine has PyTorch, OpenCV, SciPy and safetensors but no finecut install and
# no ../shared: the configs must point [data].bank at a compact bank carried with the working tree (.gpu/, made with
# ObjectBank.save(path, image_quality=...)), and every checkpoint they name must be in src/finecut/weights.
#
#   bash scripts/device_train.sh CONFIG [CONFIG ...]
#
# A run that fails in its first minutes stops the others at once, so a broken call costs little device time.
# $OUT gets, per config NAME: NAME.json + NAME.safetensors (last checkpoint) and NAME.log.jsonl; and train.out (the
# runs' output).
set -u
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT="${OUT:-out}"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nproc

names=() pids=()
for cfg in "$@"; do
    name=$(basename "$cfg" .toml)
    # the trainer itself, not the CLI (whose other commands import the app's packages, absent there)
    python3 -c "import sys; from finecut.training.config import TrainConfig; from finecut.training.trainer import train
print('checkpoint:', train(TrainConfig.from_file(sys.argv[1]), progress=False) / 'last.json')" "$cfg" \
        >"$OUT/$name.out" 2>&1 &
    names+=("$name") pids+=($!)
done

# early-failure watch: the first 150 s
for _ in $(seq 30); do
    sleep 5
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            wait "${pids[$i]}"; rc=$?
            if [ "$rc" -ne 0 ]; then
                echo "== ${names[$i]} failed (exit $rc):"; tail -40 "$OUT/${names[$i]}.out"
                kill "${pids[@]}" 2>/dev/null; sleep 2; pkill -f "finecut.training" 2>/dev/null
                exit 1
            fi
        fi
    done
done
wait

for i in "${!names[@]}"; do
    name=${names[$i]}
    cfg=$(printf '%s\n' "$@" | sed -n "$((i + 1))p")
    run_dir=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['run_dir'])" "$cfg")
    cp "$run_dir/last.json" "$OUT/$name.json"
    cp "$run_dir/last.safetensors" "$OUT/$name.safetensors"
    cp "$run_dir/log.jsonl" "$OUT/$name.log.jsonl"
    { echo "== $name"; tail -3 "$OUT/$name.out"; } >>"$OUT/train.out"
    grep -v '"event"' "$run_dir/log.jsonl" | tail -2
    grep '"miou' "$run_dir/log.jsonl" | tail -3
    rm "$OUT/$name.out"
done
cat "$OUT/train.out"
