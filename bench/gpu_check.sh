#!/usr/bin/env bash
# effnas on an NVIDIA GPU, in under ten minutes: does the GPU path run, and what are its figures?
#
#   bench/gpu_check.sh OUT                 # on a machine with an NVIDIA GPU (about 5 minutes)
#   bench/gpu_check.sh OUT --device cpu    # the same steps, shrunk, on the CPU: a dry run
#
# Steps (each one's output goes to OUT/<step>.txt, its figures to OUT/<step>.json where it has
# any; a step that fails is recorded and the next one runs):
#   environment       nvidia-smi, torch, CUDA, Ray
#   model_speed       EfficientNetV2-S training step, effnas vs torchvision, bf16, contiguous
#                     and channels_last (bench/model_speed.py --device cuda)
#   timing_fidelity   short step timing vs one real epoch, on CUDA (bench/timing_fidelity.py)
#   search            a 2-trial search, 1 GPU per trial (configs/quick.yaml's space, 1 epoch)
#   train             one epoch of `nas train` (EfficientNetV2-B0 at 128 px on mnist5k)
#   train_workers     the same epoch with `--workers 1 --gpus-per-worker 1` (Ray Train)
# OUT/summary.txt lists every step with its exit status and seconds; the script exits 1 if any
# step failed. Run it from anywhere; it uses the python on PATH (or $PYTHON) with effnas
# importable from this checkout.
set -uo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUT [--device cuda|cpu]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DEVICE=cuda
if [[ $# -ge 3 && "$2" == "--device" ]]; then
    DEVICE=$3
fi
if [[ "$DEVICE" != cuda && "$DEVICE" != cpu ]]; then
    echo "$0: --device must be cuda or cpu, got '$DEVICE'" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset RAY_ADDRESS  # a local Ray on 127.0.0.1, whatever this shell was pointed at
cd "$OUT"
: >summary.txt
failed=0

step() { # step NAME COMMAND...: run it, output to NAME.txt, a line in summary.txt
    local name=$1 started status
    shift
    started=$(date +%s)
    echo "[$(date +%T)] $name: $*"
    "$@" >"$name.txt" 2>&1
    status=$?
    printf '%-16s exit %d  %4d s\n' "$name" "$status" "$(($(date +%s) - started))" |
        tee -a summary.txt
    if [[ $status -ne 0 ]]; then
        failed=1
        tail -n 5 "$name.txt" | sed 's/^/    /'
    fi
}

if [[ "$DEVICE" == cuda ]]; then
    GPUS=1
    SPEED=(--device cuda --batch-size 64 --image-size 224 --warmup 5 --rounds 30)
    FIDELITY=(--device cuda)
    TRAIN_SIZE=128 TRAIN_BATCH=128 TRAIN_IMAGES=4500 TRIAL_IMAGES=4500
    WORKER_FLAGS=(--workers 1 --gpus-per-worker 1)
else
    GPUS=0
    SPEED=(--device cpu --batch-size 2 --image-size 64 --warmup 1 --rounds 3)
    FIDELITY=(--device cpu --specs 4 --repeats 2 --timing-steps 3 --timing-warmup 1
        --image-size 32 --batch-size 16)
    TRAIN_SIZE=32 TRAIN_BATCH=16 TRAIN_IMAGES=64 TRIAL_IMAGES=256
    WORKER_FLAGS=(--workers 1)
fi
# EfficientNetV2-B0 (the catalog's), trained and evaluated at TRAIN_SIZE px.
B0="stem32,f1k3s1e1c16,f2k3s2e4c32,f2k3s2e4c48,m3k3s2e4c96se0.25,m5k3s1e6c112se0.25"
B0="$B0,m8k3s2e6c192se0.25,head1280,res=$TRAIN_SIZE/$TRAIN_SIZE"

environment() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
    "$PYTHON" - <<'EOF'
import platform, ray, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, ray {ray.__version__}")
print(f"CUDA available: {torch.cuda.is_available()}, GPUs: {torch.cuda.device_count()}")
for index in range(torch.cuda.device_count()):
    print(f"  cuda:{index}: {torch.cuda.get_device_name(index)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF
}

search_config() { # the quick search's space and settings: 2 trials, 1 epoch, GPUS per trial
    "$PYTHON" - "$REPO/configs/quick.yaml" "$GPUS" "$TRIAL_IMAGES" >search.yaml <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config.update(study="gpu-check", trials=2, concurrent=1, epochs=1,
              resources={"cpus": 1, "gpus": int(sys.argv[2])})
evaluation = config.setdefault("evaluation", {})
evaluation["max_train_images"] = int(sys.argv[3])
if int(sys.argv[2]):
    evaluation.pop("timing_clock", None)  # CUDA events on a GPU
print(yaml.safe_dump(config, sort_keys=False))
EOF
}

search() {
    search_config &&
        "$PYTHON" -m nas.cli search search.yaml --runs-dir runs &&
        "$PYTHON" -m nas.cli front runs/gpu-check --json >search.json
}

train() {
    "$PYTHON" -m nas.cli train "$B0" --dataset mnist5k --epochs 1 --progressive off \
        --batch-size "$TRAIN_BATCH" --max-train-images "$TRAIN_IMAGES" --device "$DEVICE" \
        --progress off --out "$OUT/runs/$1" --json "${@:2}" >"$1.json"
}

step environment environment
step model_speed "$PYTHON" "$REPO/bench/model_speed.py" "${SPEED[@]}" --json model_speed.json
step timing_fidelity "$PYTHON" "$REPO/bench/timing_fidelity.py" "${FIDELITY[@]}" \
    --json timing_fidelity.json
step search search
step train train train
step train_workers train train_workers "${WORKER_FLAGS[@]}"

echo "figures in $OUT (summary.txt, *.json, *.txt)"
exit $failed
