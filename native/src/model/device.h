// A device that holds a copy of the model's weights and runs its work there (the CUDA backend,
// native/src/cuda/device_model.cu). The model asks for one at load (`LoadOptions::device`); the
// build that has one registers its factory (the addon and the CUDA drivers do, when compiled with
// CUDA), so model code never includes a device's own header. Whatever the device cannot take runs
// on the CPU backend, which stays the reference.
// Legend: T = tokens, C = hidden, R = response tokens of a pair.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../../include/kpig/model.h"
#include "../backend/backend.h"

namespace kpig {

class ModelImpl;

class DeviceCompute {
 public:
  virtual ~DeviceCompute() = default;
  // e.g. "cuda:0 NVIDIA H100 80GB HBM3".
  virtual std::string name() const = 0;
  // hidden(T, C) on the host: the final-normed hidden states of every row.
  virtual void forward_hidden(ModelImpl& m, const PackedBatch& batch, float* hidden) = 0;
  // Per pair and response token, pair after pair: what IgTokenStats holds (pairs already checked).
  virtual std::vector<IgTokenStats> score_ig(ModelImpl& m, const IgPair* pairs, int64_t n) = 0;
  // Full fine-tuning on the device (its own gradients and AdamW state): the gradient of Σ w·NLL of
  // a batch accumulates there; `optimizer_step` is AdamW as Model::optimizer_step computes it; and
  // `download` copies the device's weights (and gradients) into the host model, e.g. to compare
  // them with the CPU backend's or to save them.
  virtual TrainResult train_accumulate(ModelImpl& m, const PackedBatch& batch, const float* weights) = 0;
  virtual StepResult optimizer_step(ModelImpl& m, const AdamWOptions& options) = 0;
  virtual void download(ModelImpl& m, bool grads) = 0;
  // Device memory: now and the most since the device was opened (bytes).
  virtual int64_t bytes_in_use() const = 0;
  virtual int64_t peak_bytes() const = 0;
};

// Opens a device for m, or returns null and says why in `why` (which library, which call, which
// error). `name` is the device asked for ("cuda").
using DeviceFactory = std::function<std::unique_ptr<DeviceCompute>(ModelImpl& m, const std::string& name, std::string& why)>;
void set_device_factory(DeviceFactory factory);
const DeviceFactory& device_factory();

}  // namespace kpig
