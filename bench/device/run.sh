#!/bin/bash
# The prepared device run of the CUDA backend: builds the CUDA drivers from this clean copy (CMake
# when present, else plain nvcc + g++), then
#   1. op parity: every kernel against the CPU backend (kpig_cuda_ops test);
#   2. whole-model parity: hidden states, IG scores, gradients and an AdamW step of a tiny LLaMA-style
#      and a tiny GPT-2 model against the CPU backend (kpig_cuda_model test);
#   3. the kernel timings and the same shapes through PyTorch (kpig_cuda_ops perf, torch_ops.py);
#   4. the model bench: IG scoring and a training step on a ~135M and a ~1.2B LLaMA-style shape,
#      kpig (kpig_cuda_model bench) and PyTorch eager and SDPA (torch_model.py) in the same run.
# Everything goes to $OUT (default ./device-out). Needs no Node. Parity runs first: a failing
# parity stops the run before the bench. On a machine without a GPU the drivers say so and exit 3.
# KPIG_DEVICE_BUILD=nvcc builds with nvcc + g++ even where CMake is installed; PYTHON picks the
# Python with PyTorch and transformers (default python3); KPIG_DEVICE_QUICK=1 skips the 1.2B shape.
#   bash bench/device/run.sh            # from the repository root
set -u
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(mktemp -d)
models=$(mktemp -d)
PY=${PYTHON:-python3}
exec > >(tee "$OUT/run.log") 2>&1
echo "== $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
nvcc --version | tail -1

if [ "${KPIG_DEVICE_BUILD:-cmake}" = cmake ] && command -v cmake >/dev/null; then
  echo "== cmake build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKPIG_MPI=OFF -DKPIG_BUILD_TESTS=ON >"$OUT/build.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" --target kpig_cuda_ops kpig_cuda_model kpig_test_ops >>"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 1; }
else
  echo "== nvcc + g++ build (no cmake)"
  objs=()
  for f in "$root"/native/src/core/*.cpp "$root"/native/src/cpu/*.cpp "$root"/native/src/model/*.cpp "$root"/native/src/model/arch/*.cpp "$root"/native/src/dist/comm_none.cpp; do
    o="$build/$(echo "${f#$root/}" | tr / _).o"
    g++ -std=c++17 -O3 -fPIC -I"$root/native/include" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 || { echo "build failed on $f: $OUT/build.log"; exit 1; }
    objs+=("$o")
  done
  arch=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90)
  for d in cuda_ops cuda_model; do
    nvcc -std=c++17 -O3 "${arch[@]}" -I"$root/native/include" "$root"/native/src/cuda/*.cu "$root/native/tests/$d.cu" "${objs[@]}" -o "$build/kpig_$d" -lpthread -ldl \
      >>"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 1; }
  done
fi

echo "== 1. op parity: CUDA kernels vs the CPU backend"
"$build/kpig_cuda_ops" test | tee "$OUT/parity.txt"
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "op parity failed (exit $status): no bench"; rm -rf "$build" "$models"; exit "$status"; }

echo "== 2. whole-model parity vs the CPU backend"
shapes=(smol-135m)
[ "${KPIG_DEVICE_QUICK:-0}" = 1 ] || shapes+=(llama-1b)
"$PY" "$root/bench/device/models.py" "$models" llama-tiny gpt2-tiny "${shapes[@]}" | tee "$OUT/models.txt"
for m in llama-tiny gpt2-tiny; do
  "$build/kpig_cuda_model" test "$models/$m" | tee -a "$OUT/parity-model.txt"
  s=${PIPESTATUS[0]}
  [ "$s" = 0 ] || status=$s
done
[ "$status" = 0 ] || { echo "model parity failed (exit $status): no bench"; rm -rf "$build" "$models"; exit "$status"; }

echo "== 3. kernel timings, then the same shapes through PyTorch"
"$build/kpig_cuda_ops" perf | tee "$OUT/perf.txt"
"$PY" "$root/bench/device/torch_ops.py" | tee "$OUT/perf-torch.txt"

echo "== 4. model bench: kpig, then PyTorch eager and SDPA, per shape"
for m in "${shapes[@]}"; do
  echo "-- $m" | tee -a "$OUT/bench-model.txt"
  "$build/kpig_cuda_model" bench "$models/$m" 64 256 | tee -a "$OUT/bench-model.txt"
  "$PY" "$root/bench/device/torch_model.py" "$models/$m" 64 256 | tee -a "$OUT/bench-model.txt"
done
rm -rf "$build" "$models"
exit $status
