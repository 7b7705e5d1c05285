#!/bin/bash
# The prepared device run of the CUDA backend: builds the CUDA drivers from this clean copy (CMake
# when present, else plain nvcc + g++), then runs the op parity against the CPU backend, then the
# kernel timings and the same shapes through PyTorch (bench/device/torch_ops.py) in the same run.
# Everything goes to $OUT (default ./device-out): build log, parity, perf, the GPU.
# Needs no Node. On a machine without a GPU the parity driver says so and exits 3.
# KPIG_DEVICE_BUILD=nvcc builds with nvcc + g++ even where CMake is installed; PYTHON picks the
# Python with PyTorch (default python3).
#   bash bench/device/run.sh            # from the repository root
set -u
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(mktemp -d)
exec > >(tee "$OUT/run.log") 2>&1
echo "== $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
nvcc --version | tail -1

if [ "${KPIG_DEVICE_BUILD:-cmake}" = cmake ] && command -v cmake >/dev/null; then
  echo "== cmake build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKPIG_MPI=OFF -DKPIG_BUILD_TESTS=ON >"$OUT/build.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" --target kpig_cuda_ops kpig_test_ops >>"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 1; }
else
  echo "== nvcc + g++ build (no cmake)"
  objs=()
  for f in "$root"/native/src/core/*.cpp "$root"/native/src/cpu/*.cpp "$root"/native/src/model/*.cpp "$root"/native/src/model/arch/*.cpp "$root"/native/src/dist/comm_none.cpp; do
    o="$build/$(echo "${f#$root/}" | tr / _).o"
    g++ -std=c++17 -O3 -fPIC -I"$root/native/include" -c "$f" -o "$o" >>"$OUT/build.log" 2>&1 || { echo "build failed on $f: $OUT/build.log"; exit 1; }
    objs+=("$o")
  done
  nvcc -std=c++17 -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
    -I"$root/native/include" "$root"/native/src/cuda/*.cu "$root/native/tests/cuda_ops.cu" "${objs[@]}" -o "$build/kpig_cuda_ops" -lpthread -ldl \
    >>"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 1; }
fi

echo "== parity: CUDA kernels vs the CPU backend"
"$build/kpig_cuda_ops" test | tee "$OUT/parity.txt"
status=${PIPESTATUS[0]}
echo "== perf: kpig's kernels, then the same shapes through PyTorch"
"$build/kpig_cuda_ops" perf | tee "$OUT/perf.txt"
"${PYTHON:-python3}" "$root/bench/device/torch_ops.py" | tee "$OUT/perf-torch.txt"
rm -rf "$build"
exit $status
