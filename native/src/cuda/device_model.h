// The CUDA device (model/device.h): a copy of the model's weights on the GPU, in the engine's own
// layout (fused q/k/v and gate/up, GPT-2's Conv1D kept in its (in, out) layout, LoRA adapters
// folded in), and the packed forward pass, IG scoring and a full fine-tuning step there, built from
// the kernels of this folder. Every op mirrors the CPU backend's order of work, so the two are held
// to each other (native/tests/cuda_model.cu).
#pragma once
#include <memory>
#include <string>

#include "../model/device.h"

namespace kpig::cuda {

// Opens the CUDA device for m: null, with `why` naming the call and its error, when no usable GPU
// (or no driver) is here.
std::unique_ptr<DeviceCompute> open_device(ModelImpl& m, const std::string& name, std::string& why);

// Makes `LoadOptions::device = "cuda"` open this device (set_device_factory).
void register_device();

}  // namespace kpig::cuda
