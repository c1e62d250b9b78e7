#!/usr/bin/env bash
# On a CUDA machine, in three lanes that share the GPU:
#   1. the CUDA tests (tests/engine/test_cuda.py and the CUDA checkpoint load);
#   2. the TRADES recipe checkpoints/recipes/mnist_pgd_v2.json, then its AutoAttack figure on the
#      whole MNIST test split (recorded in its card);
#   3. AutoAttack (standard, seed 0) on the whole test split of every shipped robust checkpoint,
#      recorded in its card (--record), at the card's own threat model.
# Usage: ROBUSTSCOPE_DATA=<folder with MNIST/ and FashionMNIST/> bash bench/gpu_zoo.sh OUT [SECONDS]
# Logs go to OUT/; each lane stops at its own time limit (SECONDS, default 480, is the whole budget).
set -u
out=${1:?usage: bash bench/gpu_zoo.sh OUT [SECONDS]}
budget=${2:-480}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }

threat() {  # the card's training norm and eps: "linf 0.3"
  "$py" -c "import json,sys; t=json.load(open(sys.argv[1]))['training']; print(t['norm'], t['eps'])" "$1.json"
}

autoattack() {  # checkpoint dataset [batch]: whole test split, recorded in the card
  local ck=$1 ds=$2 batch=${3:-4096} norm eps
  read -r norm eps < <(threat "$ck")
  echo "== $ck ($ds, $norm, eps $eps) at $(date +%T), $(left) s left"
  timeout "$(left)" "$py" -m engine evaluate --checkpoint "$ck" --dataset "$ds" --attack autoattack \
    --norm "$norm" --eps "$eps" --batch-size "$batch" --device cuda --json --record --no-cache \
    > "$out/$(basename "$ck").aa.json"
  echo "   exit $? at $(date +%T)"
}

lane_tests() {
  timeout 200 "$py" -m pytest -q -p no:cacheprovider tests/engine/test_cuda.py \
    "tests/engine/checkpoints/test_checkpoints.py::test_load_onto_cuda" > "$out/cuda_tests.log" 2>&1
  echo "cuda tests exit $?" >> "$out/cuda_tests.log"
}

lane_recipe() {
  timeout $(( budget * 2 / 3 )) "$py" -m engine train --config checkpoints/recipes/mnist_pgd_v2.json \
    --run-dir /tmp/mnist_pgd_v2 --quiet --json > "$out/mnist_pgd_v2.train.log" 2>&1
  echo "train exit $? at $(date +%T)" >> "$out/mnist_pgd_v2.train.log"
  if [ -f checkpoints/mnist_pgd_v2.safetensors ]; then
    autoattack checkpoints/mnist_pgd_v2 mnist >> "$out/mnist_pgd_v2.train.log" 2>&1
  fi
}

lane_zoo() {
  for pair in shapes_resnet20_pgd:shapes shapes_pgd:shapes mnist_pgd:mnist fashion_pgd_linf_0p1:fashion-mnist \
              fashion_pgd_linf_0p05:fashion-mnist fashion_pgd_linf_0p025:fashion-mnist \
              fashion_pgd_l2_1p0:fashion-mnist mnist_advprop:mnist; do
    [ "$(left)" -gt 20 ] || { echo "no time left for ${pair%%:*}"; continue; }
    autoattack "checkpoints/${pair%%:*}" "${pair##*:}"
  done > "$out/zoo.log" 2>&1
}

nvidia-smi -L > "$out/gpu.txt" 2>&1
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$out/gpu.txt" 2>&1
lane_tests & lane_recipe & lane_zoo &
wait
echo "all lanes done in $(( $(date +%s) - start )) s" >> "$out/gpu.txt"
# what comes back: every card (figures recorded), the new checkpoint, or the recipe's resumable state
mkdir -p "$out/checkpoints"
cp checkpoints/*.json "$out/checkpoints/"
if [ -f checkpoints/mnist_pgd_v2.safetensors ]; then
  cp checkpoints/mnist_pgd_v2*.safetensors "$out/checkpoints/"
elif [ -d /tmp/mnist_pgd_v2 ]; then
  tar czf "$out/mnist_pgd_v2_run.tgz" -C /tmp mnist_pgd_v2
fi
