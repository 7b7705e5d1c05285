// The thin N-API layer: marshals typed arrays in and out of the native core and runs every heavy
// call on a worker thread behind a Promise. Inputs are copied before the worker starts; outputs are
// handed to JavaScript as external ArrayBuffers without a copy. No model logic lives here.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "kpig/comm.h"
#include "kpig/model.h"
#ifdef KPIG_HAVE_CUDA
#include "../src/cuda/device_model.h"
#endif

namespace {

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

[[noreturn]] void throw_input(Napi::Env env, const std::string& message) { throw make_error(env, "E_INPUT", message); }

// Runs a quick core call on the main thread, turning core errors into coded JS errors.
template <typename F>
auto guarded(Napi::Env env, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const kpig::Error& e) {
    throw make_error(env, kpig::error_code_name(e.code()), e.what());
  }
}

// Runs Run() off the main thread and settles a Promise with Result() or a coded Error.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

 private:
  void Execute() override {
    try {
      Run();
    } catch (const kpig::Error& e) {
      code_ = kpig::error_code_name(e.code());
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_INPUT";
      SetError("out of memory: the batch is too large for this machine");
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(make_error(Env(), code_.c_str(), e.Message()).Value()); }

  Napi::Promise::Deferred deferred_;
  std::string code_ = "E_INTERNAL";
};

template <typename T>
Napi::TypedArrayOf<T> external_array(Napi::Env env, std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  if (owned->empty()) owned->reserve(1);  // a non-null pointer for an empty buffer
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, owned->data(), owned->size() * sizeof(T),
                                                 [](Napi::Env, void*, std::vector<T>* p) { delete p; }, owned);
  return Napi::TypedArrayOf<T>::New(env, owned->size(), buf, 0);
}

std::vector<int32_t> int32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_input(info.Env(), std::string(name) + " must be an Int32Array");
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

// Shape checks that need no model; the core validates ids and lengths against the config.
void check_packing(Napi::Env env, const std::vector<int32_t>& tokens, const std::vector<int32_t>& offsets) {
  if (offsets.size() < 2) throw_input(env, "offsets must have at least 2 entries (one sequence)");
  if (offsets.back() != int32_t(tokens.size()))
    throw_input(env, "offsets ends at " + std::to_string(offsets.back()) + " but there are " + std::to_string(tokens.size()) + " tokens");
}

kpig::PackedBatch batch_of(const std::vector<int32_t>& tokens, const std::vector<int32_t>& offsets) {
  kpig::PackedBatch b;
  b.tokens = tokens.data();
  b.n_tokens = int64_t(tokens.size());
  b.offsets = offsets.data();
  b.n_seqs = int64_t(offsets.size()) - 1;
  return b;
}

// The engine's reading of a config.json, in the names NativeModelInfo and parseConfig share.
void set_config(Napi::Env env, Napi::Object& o, const kpig::ModelConfig& c) {
  o.Set("modelType", c.model_type);
  o.Set("arch", c.arch.family);
  o.Set("norm", c.arch.norm == kpig::NormKind::LayerNorm ? "layernorm" : c.arch.norm_plus_one ? "rmsnorm_plus_one" : "rmsnorm");
  o.Set("activation", c.arch.act == kpig::Activation::GeluTanh ? "gelu_tanh" : c.arch.act == kpig::Activation::SiluGLU ? "swiglu" : "geglu_tanh");
  o.Set("learnedPositions", c.arch.learned_positions);
  o.Set("embedScale", c.arch.embed_scale);
  o.Set("scaleAttnByLayer", c.scale_attn_by_inverse_layer_idx);
  Napi::Array lora = Napi::Array::New(env, c.arch.lora_targets.size());
  for (size_t i = 0; i < c.arch.lora_targets.size(); i++) lora.Set(uint32_t(i), c.arch.lora_targets[i]);
  o.Set("loraTargets", lora);
  o.Set("vocabSize", double(c.vocab));
  o.Set("hiddenSize", double(c.hidden));
  o.Set("numLayers", double(c.layers));
  o.Set("numHeads", double(c.heads));
  o.Set("numKvHeads", double(c.kv_heads));
  o.Set("headDim", double(c.head_dim));
  o.Set("intermediateSize", double(c.ffn));
  o.Set("maxPositions", double(c.max_pos));
  o.Set("ropeTheta", c.rope_theta);
  o.Set("ropeType", c.rope_type);
  o.Set("normEps", c.eps);
  o.Set("tiedEmbeddings", c.tied);
  o.Set("qkvBias", c.qkv_bias);
  o.Set("oBias", c.o_bias);
  o.Set("bosId", double(c.bos_id));
  Napi::Array eos = Napi::Array::New(env, c.eos_ids.size());
  for (size_t i = 0; i < c.eos_ids.size(); i++) eos.Set(uint32_t(i), double(c.eos_ids[i]));
  o.Set("eosIds", eos);
  o.Set("configDtype", c.torch_dtype);
}

class ModelWrap;

struct AddonData {
  Napi::FunctionReference model_ctor;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, int threads, std::string device)
      : PromiseWorker(env), dir_(std::move(dir)), threads_(threads), device_(std::move(device)) {}
  void Run() override {
    kpig::LoadOptions o;
    o.threads = threads_;
    o.device = device_;
    model_ = kpig::Model::load(dir_, o);
  }
  Napi::Value Result(Napi::Env env) override {
    auto* data = env.GetInstanceData<AddonData>();
    auto* holder = new std::shared_ptr<kpig::Model>(model_);
    return data->model_ctor.New({Napi::External<std::shared_ptr<kpig::Model>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<kpig::Model>* p) { delete p; })});
  }

 private:
  std::string dir_;
  int threads_;
  std::string device_;
  std::shared_ptr<kpig::Model> model_;
};

class ForwardWorker : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, std::vector<int32_t> tokens, std::vector<int32_t> offsets,
                std::vector<int32_t> targets, bool logprobs)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)), offsets_(std::move(offsets)),
        targets_(std::move(targets)), logprobs_(logprobs) {}
  void Run() override {
    kpig::PackedBatch b = batch_of(tokens_, offsets_);
    if (logprobs_) {
      out_.resize(tokens_.size());
      m_->forward_logprobs(b, targets_.data(), out_.data());
    } else {
      m_->validate(b);  // before allocating T × V
      out_.resize(tokens_.size() * size_t(m_->info().config.vocab));
      m_->forward_logits(b, out_.data());
    }
  }
  Napi::Value Result(Napi::Env env) override { return external_array(env, std::move(out_)); }

 private:
  std::shared_ptr<kpig::Model> m_;
  std::vector<int32_t> tokens_, offsets_, targets_;
  bool logprobs_;
  std::vector<float> out_;
};

// Final-normed hidden states of a packed batch: every position's (T × C), or each sequence's mean (S × C).
class HiddenWorker : public PromiseWorker {
 public:
  HiddenWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, std::vector<int32_t> tokens, std::vector<int32_t> offsets, bool mean)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)), offsets_(std::move(offsets)), mean_(mean) {}
  void Run() override {
    kpig::PackedBatch b = batch_of(tokens_, offsets_);
    m_->validate(b);
    out_.resize((mean_ ? size_t(b.n_seqs) : tokens_.size()) * size_t(m_->info().config.hidden));
    if (mean_) m_->forward_mean_hidden(b, out_.data());
    else m_->forward_final_hidden(b, out_.data());
  }
  Napi::Value Result(Napi::Env env) override { return external_array(env, std::move(out_)); }

 private:
  std::shared_ptr<kpig::Model> m_;
  std::vector<int32_t> tokens_, offsets_;
  bool mean_;
  std::vector<float> out_;
};

class TrainWorker : public PromiseWorker {
 public:
  TrainWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, std::vector<int32_t> tokens, std::vector<int32_t> offsets,
              std::vector<float> weights, uint64_t seed, bool want_nll, std::vector<float> hidden_grad)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)), offsets_(std::move(offsets)),
        weights_(std::move(weights)), seed_(seed), want_nll_(want_nll), hidden_grad_(std::move(hidden_grad)) {}
  void Run() override {
    if (want_nll_) nll_.resize(tokens_.size());
    res_ = m_->train_accumulate(batch_of(tokens_, offsets_), weights_.data(), want_nll_ ? nll_.data() : nullptr, seed_,
                                hidden_grad_.empty() ? nullptr : hidden_grad_.data());
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", res_.loss);
    o.Set("nWeighted", double(res_.n_weighted));
    if (want_nll_) o.Set("nll", external_array(env, std::move(nll_)));
    return o;
  }

 private:
  std::shared_ptr<kpig::Model> m_;
  std::vector<int32_t> tokens_, offsets_;
  std::vector<float> weights_;
  std::vector<float> hidden_grad_;
  uint64_t seed_;
  bool want_nll_;
  std::vector<float> nll_;
  kpig::TrainResult res_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, kpig::AdamWOptions o) : PromiseWorker(env), m_(std::move(m)), o_(o) {}
  void Run() override { r_ = m_->optimizer_step(o_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("gradNorm", r_.grad_norm);
    o.Set("skipped", r_.skipped);
    o.Set("step", double(r_.step));
    return o;
  }

 private:
  std::shared_ptr<kpig::Model> m_;
  kpig::AdamWOptions o_;
  kpig::StepResult r_;
};

// Σ over the ranks of every gradient (data-parallel training).
class AllreduceWorker : public PromiseWorker {
 public:
  AllreduceWorker(Napi::Env env, std::shared_ptr<kpig::Model> m) : PromiseWorker(env), m_(std::move(m)) {}
  void Run() override { m_->allreduce_grads(); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<kpig::Model> m_;
};

// Paired IG scoring; results come back column by column (one typed array per quantity).
class IgWorker : public PromiseWorker {
 public:
  IgWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, std::vector<int32_t> ft, std::vector<int32_t> fo, std::vector<int32_t> mt,
           std::vector<int32_t> mo, std::vector<int32_t> r, bool per_token)
      : PromiseWorker(env), m_(std::move(m)), ft_(std::move(ft)), fo_(std::move(fo)), mt_(std::move(mt)), mo_(std::move(mo)),
        r_(std::move(r)), per_token_(per_token) {}
  void Run() override {
    const size_t n = r_.size();
    std::vector<kpig::IgPair> pairs(n);
    for (size_t i = 0; i < n; i++)
      pairs[i] = {ft_.data() + fo_[i], int64_t(fo_[i + 1] - fo_[i]), mt_.data() + mo_[i], int64_t(mo_[i + 1] - mo_[i]), int64_t(r_[i])};
    out_.resize(n);
    if (per_token_) tok_.resize(n);
    m_->score_ig(pairs.data(), int64_t(n), out_.data(), per_token_ ? tok_.data() : nullptr);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    auto col = [&](const char* name, auto get) {
      std::vector<double> v(out_.size());
      for (size_t i = 0; i < out_.size(); i++) v[i] = double(get(out_[i]));
      o.Set(name, external_array(env, std::move(v)));
    };
    col("ceFull", [](const kpig::IgScores& s) { return s.ce_full; });
    col("ceMasked", [](const kpig::IgScores& s) { return s.ce_masked; });
    col("igCe", [](const kpig::IgScores& s) { return s.ig_ce; });
    col("igKl", [](const kpig::IgScores& s) { return s.ig_kl; });
    col("igJs", [](const kpig::IgScores& s) { return s.ig_js; });
    col("entropyFull", [](const kpig::IgScores& s) { return s.entropy_full; });
    col("entropyMasked", [](const kpig::IgScores& s) { return s.entropy_masked; });
    col("nTokens", [](const kpig::IgScores& s) { return s.n_tokens; });
    col("sharedPrefix", [](const kpig::IgScores& s) { return s.shared_prefix; });
    col("positionsComputed", [](const kpig::IgScores& s) { return s.positions_computed; });
    if (per_token_) {
      auto flat = [&](const char* name, std::vector<float> kpig::IgTokenScores::*field) {
        std::vector<float> v;
        for (const auto& t : tok_) v.insert(v.end(), (t.*field).begin(), (t.*field).end());
        o.Set(name, external_array(env, std::move(v)));
      };
      flat("tokNllFull", &kpig::IgTokenScores::nll_full);
      flat("tokNllMasked", &kpig::IgTokenScores::nll_masked);
      flat("tokKl", &kpig::IgTokenScores::kl);
      flat("tokJs", &kpig::IgTokenScores::js);
      flat("tokEntropyFull", &kpig::IgTokenScores::entropy_full);
      flat("tokEntropyMasked", &kpig::IgTokenScores::entropy_masked);
    }
    return o;
  }

 private:
  std::shared_ptr<kpig::Model> m_;
  std::vector<int32_t> ft_, fo_, mt_, mo_, r_;
  bool per_token_;
  std::vector<kpig::IgScores> out_;
  std::vector<kpig::IgTokenScores> tok_;
};

double number_field(Napi::Object o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return dflt;
  if (!v.IsNumber()) throw_input(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// Greedy generation; every step's new tokens are posted to JavaScript (onStep), which may set
// control[s] to stop sequence s (a stop string) or control[S] to cancel the whole call.
class GenerateWorker : public Napi::AsyncProgressQueueWorker<int32_t> {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<kpig::Model> m, std::vector<int32_t> tokens, std::vector<int32_t> offsets,
                 kpig::GenerateOptions opt, Napi::Uint8Array control, Napi::Function on_step)
      : Napi::AsyncProgressQueueWorker<int32_t>(env), deferred_(Napi::Promise::Deferred::New(env)), m_(std::move(m)),
        tokens_(std::move(tokens)), offsets_(std::move(offsets)), opt_(std::move(opt)) {
    control_ref_ = Napi::Persistent(control.As<Napi::Object>());
    control_ = control.Data();
    if (!on_step.IsEmpty()) on_step_ = Napi::Persistent(on_step);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    try {
      const int64_t S = int64_t(offsets_.size()) - 1;
      opt_.stop_flags = control_;
      opt_.on_step = [&](const int32_t* step, int64_t n) {
        if (control_[S]) kpig::fail(kpig::ErrorCode::Cancelled, "generation was cancelled");
        progress.Send(step, size_t(n));
      };
      result_ = m_->generate(batch_of(tokens_, offsets_), opt_);
    } catch (const kpig::Error& e) {
      code_ = kpig::error_code_name(e.code());
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      SetError(e.what());
    }
  }
  void OnProgress(const int32_t* data, size_t count) override {
    if (on_step_.IsEmpty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    std::vector<int32_t> copy(data, data + count);
    on_step_.Call({external_array(env, std::move(copy))});
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("tokens", external_array(env, std::move(result_.tokens)));
    r.Set("offsets", external_array(env, std::move(result_.offsets)));
    r.Set("finish", external_array(env, std::move(result_.finish)));
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(make_error(Env(), code_.c_str(), e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<kpig::Model> m_;
  std::vector<int32_t> tokens_, offsets_;
  kpig::GenerateOptions opt_;
  Napi::ObjectReference control_ref_;  // keeps the control buffer alive while the worker reads it
  const volatile uint8_t* control_ = nullptr;
  Napi::FunctionReference on_step_;
  kpig::GenerateResult result_;
  std::string code_ = "E_INTERNAL";
};

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("info", &ModelWrap::Info), InstanceMethod("forward", &ModelWrap::Forward),
                        InstanceMethod("embed", &ModelWrap::Embed), InstanceMethod("hiddenStates", &ModelWrap::HiddenStates),
                        InstanceMethod("generate", &ModelWrap::Generate), InstanceMethod("dispose", &ModelWrap::Dispose),
                        InstanceMethod("trainFull", &ModelWrap::TrainFull), InstanceMethod("loraAdd", &ModelWrap::LoraAdd),
                        InstanceMethod("loraMerge", &ModelWrap::LoraMerge),
                        InstanceMethod("trainAccumulate", &ModelWrap::TrainAccumulate),
                        InstanceMethod("optimizerStep", &ModelWrap::OptimizerStep),
                        InstanceMethod("zeroGrad", &ModelWrap::ZeroGrad),
                        InstanceMethod("allreduceGrads", &ModelWrap::AllreduceGrads),
                        InstanceMethod("optimizerSteps", &ModelWrap::OptimizerSteps),
                        InstanceMethod("setOptimizerSteps", &ModelWrap::SetOptimizerSteps),
                        InstanceMethod("tensors", &ModelWrap::Tensors), InstanceMethod("readTensor", &ModelWrap::ReadTensor),
                        InstanceMethod("writeTensor", &ModelWrap::WriteTensor),
                        InstanceMethod("setMatmulPrecision", &ModelWrap::SetMatmulPrecision),
                        InstanceMethod("setPrefixCache", &ModelWrap::SetPrefixCache),
                        InstanceMethod("clearPrefixCache", &ModelWrap::ClearPrefixCache),
                        InstanceMethod("prefixCacheStats", &ModelWrap::PrefixCacheStats),
                        InstanceMethod("scoreIg", &ModelWrap::ScoreIg)});
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw make_error(info.Env(), "E_INPUT", "NativeModel is created by loadModel(), not with new");
    model_ = *info[0].As<Napi::External<std::shared_ptr<kpig::Model>>>().Data();
  }

 private:
  std::shared_ptr<kpig::Model> model(Napi::Env env) {
    if (!model_) throw make_error(env, "E_INPUT", "the model was disposed");
    return model_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const kpig::ModelInfo& mi = model(env)->info();
    const kpig::ModelConfig& c = mi.config;
    Napi::Object o = Napi::Object::New(env);
    set_config(env, o, c);
    o.Set("numParams", double(mi.n_params));
    o.Set("weightsDtype", mi.weights_dtype);
    o.Set("weightsFileBytes", double(mi.weights_file_bytes));
    o.Set("memoryBytes", double(mi.memory_bytes));
    Napi::Array files = Napi::Array::New(env, mi.files.size());
    for (size_t i = 0; i < mi.files.size(); i++) files.Set(uint32_t(i), mi.files[i]);
    o.Set("files", files);
    Napi::Array notes = Napi::Array::New(env, mi.notes.size());
    for (size_t i = 0; i < mi.notes.size(); i++) notes.Set(uint32_t(i), mi.notes[i]);
    o.Set("notes", notes);
    o.Set("isa", mi.isa);
    o.Set("bf16Isa", mi.bf16_isa);
    o.Set("threads", mi.threads);
    o.Set("device", mi.device);
    o.Set("deviceNote", mi.device_note);
    return o;
  }

  // embed(tokens: Int32Array, offsets: Int32Array) → Promise<Float32Array>: (S × C) mean-pooled
  //   final-normed hidden states, one row per sequence.
  Napi::Value Embed(const Napi::CallbackInfo& info) { return Hidden(info, true); }

  // hiddenStates(tokens: Int32Array, offsets: Int32Array) → Promise<Float32Array>: (T × C)
  //   final-normed hidden states of every position.
  Napi::Value HiddenStates(const Napi::CallbackInfo& info) { return Hidden(info, false); }

  Napi::Value Hidden(const Napi::CallbackInfo& info, bool mean) {
    Napi::Env env = info.Env();
    auto m = model(env);
    std::vector<int32_t> tokens = int32_arg(info, 0, "tokens");
    std::vector<int32_t> offsets = int32_arg(info, 1, "offsets");
    check_packing(env, tokens, offsets);
    auto* w = new HiddenWorker(env, m, std::move(tokens), std::move(offsets), mean);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // forward(tokens: Int32Array, offsets: Int32Array, targets: Int32Array | null)
  //   → Promise<Float32Array>: logits (T × V) without targets, log-probs (T) with them.
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    std::vector<int32_t> tokens = int32_arg(info, 0, "tokens");
    std::vector<int32_t> offsets = int32_arg(info, 1, "offsets");
    check_packing(env, tokens, offsets);
    std::vector<int32_t> targets;
    bool logprobs = info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined();
    if (logprobs) {
      targets = int32_arg(info, 2, "targets");
      if (targets.size() != tokens.size())
        throw_input(env, "targets has " + std::to_string(targets.size()) + " entries, tokens has " + std::to_string(tokens.size()));
    }
    auto* w = new ForwardWorker(env, m, std::move(tokens), std::move(offsets), std::move(targets), logprobs);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // generate(tokens, offsets, {maxNewTokens, eosIds?: Int32Array, temperature?, topK?, topP?, seed?},
  //          control: Uint8Array(S + 1), onStep?)
  //   → Promise<{tokens: Int32Array, offsets: Int32Array, finish: Uint8Array}>
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    std::vector<int32_t> tokens = int32_arg(info, 0, "tokens");
    std::vector<int32_t> offsets = int32_arg(info, 1, "offsets");
    check_packing(env, tokens, offsets);
    if (info.Length() < 4 || !info[2].IsObject()) throw_input(env, "generate needs an options object");
    Napi::Object o = info[2].As<Napi::Object>();
    kpig::GenerateOptions opt;
    Napi::Value mnt = o.Get("maxNewTokens");
    if (!mnt.IsNumber() || mnt.As<Napi::Number>().DoubleValue() < 0)
      throw_input(env, "maxNewTokens must be a non-negative number");
    opt.max_new_tokens = mnt.As<Napi::Number>().Int64Value();
    auto number = [&](const char* name, double dflt) {
      Napi::Value v = o.Get(name);
      if (v.IsUndefined() || v.IsNull()) return dflt;
      if (!v.IsNumber()) throw_input(env, std::string(name) + " must be a number");
      return v.As<Napi::Number>().DoubleValue();
    };
    opt.temperature = number("temperature", 0.0);
    opt.top_k = int64_t(number("topK", 0.0));
    opt.top_p = number("topP", 1.0);
    opt.seed = uint64_t(number("seed", 0.0));
    Napi::Value eos = o.Get("eosIds");
    if (!eos.IsUndefined() && !eos.IsNull()) {
      if (!eos.IsTypedArray() || eos.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw_input(env, "eosIds must be an Int32Array");
      Napi::Int32Array e = eos.As<Napi::Int32Array>();
      opt.eos_ids.assign(e.Data(), e.Data() + e.ElementLength());
    }
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        info[3].As<Napi::Uint8Array>().ElementLength() != offsets.size())
      throw_input(env, "control must be a Uint8Array with one entry per sequence plus one");
    Napi::Function on_step;
    if (info.Length() > 4 && info[4].IsFunction()) on_step = info[4].As<Napi::Function>();
    auto* w = new GenerateWorker(env, m, std::move(tokens), std::move(offsets), std::move(opt),
                                 info[3].As<Napi::Uint8Array>(), on_step);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value TrainFull(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    guarded(info.Env(), [&] { m->train_full(); });
    return info.Env().Undefined();
  }

  // loraAdd({rank, alpha, dropout, targets: string[], seed}) → string[] (matched module paths)
  Napi::Value LoraAdd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_input(env, "loraAdd needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    kpig::LoraConfig c;
    c.rank = int64_t(number_field(o, "rank", 8));
    c.alpha = float(number_field(o, "alpha", 16));
    c.dropout = float(number_field(o, "dropout", 0));
    c.seed = uint64_t(number_field(o, "seed", 0));
    Napi::Value t = o.Get("targets");
    if (t.IsArray()) {
      Napi::Array a = t.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) c.targets.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
    std::vector<std::string> matched = guarded(env, [&] { return m->lora_add(c); });
    Napi::Array out = Napi::Array::New(env, matched.size());
    for (size_t i = 0; i < matched.size(); i++) out.Set(uint32_t(i), matched[i]);
    return out;
  }

  Napi::Value LoraMerge(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    guarded(info.Env(), [&] { m->lora_merge(); });
    return info.Env().Undefined();
  }

  // trainAccumulate(tokens, offsets, weights: Float32Array, seed: number, wantNll: boolean,
  //   hiddenGrad?: Float32Array (T × C)) → Promise<{loss, nWeighted, nll?: Float32Array}>
  Napi::Value TrainAccumulate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    std::vector<int32_t> tokens = int32_arg(info, 0, "tokens");
    std::vector<int32_t> offsets = int32_arg(info, 1, "offsets");
    check_packing(env, tokens, offsets);
    if (info.Length() < 3 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_input(env, "weights must be a Float32Array");
    Napi::Float32Array wa = info[2].As<Napi::Float32Array>();
    if (wa.ElementLength() != tokens.size())
      throw_input(env, "weights has " + std::to_string(wa.ElementLength()) + " entries, tokens has " + std::to_string(tokens.size()));
    std::vector<float> weights(wa.Data(), wa.Data() + wa.ElementLength());
    const uint64_t seed = info.Length() > 3 && info[3].IsNumber() ? uint64_t(info[3].As<Napi::Number>().Int64Value()) : 0;
    const bool want = info.Length() > 4 && info[4].ToBoolean().Value();
    std::vector<float> hidden_grad;
    if (info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsNull()) {
      if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_input(env, "hiddenGrad must be a Float32Array");
      Napi::Float32Array ha = info[5].As<Napi::Float32Array>();
      const size_t want_len = tokens.size() * size_t(m->info().config.hidden);
      if (ha.ElementLength() != want_len)
        throw_input(env, "hiddenGrad has " + std::to_string(ha.ElementLength()) + " entries, tokens × hidden is " + std::to_string(want_len));
      hidden_grad.assign(ha.Data(), ha.Data() + ha.ElementLength());
    }
    auto* w = new TrainWorker(env, m, std::move(tokens), std::move(offsets), std::move(weights), seed, want, std::move(hidden_grad));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // optimizerStep({lr, beta1, beta2, eps, weightDecay, maxGradNorm, decayAll}) → Promise<{gradNorm, skipped, step}>
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_input(env, "optimizerStep needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    kpig::AdamWOptions a;
    a.lr = number_field(o, "lr", a.lr);
    a.beta1 = number_field(o, "beta1", a.beta1);
    a.beta2 = number_field(o, "beta2", a.beta2);
    a.eps = number_field(o, "eps", a.eps);
    a.weight_decay = number_field(o, "weightDecay", a.weight_decay);
    a.max_grad_norm = number_field(o, "maxGradNorm", a.max_grad_norm);
    a.decay_all = o.Get("decayAll").ToBoolean().Value();
    auto* w = new StepWorker(env, m, a);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // allreduceGrads() → Promise<void>
  Napi::Value AllreduceGrads(const Napi::CallbackInfo& info) {
    auto* w = new AllreduceWorker(info.Env(), model(info.Env()));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    model(info.Env())->zero_grad();
    return info.Env().Undefined();
  }

  Napi::Value OptimizerSteps(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(model(info.Env())->optimizer_steps())); }

  Napi::Value SetOptimizerSteps(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    if (info.Length() < 1 || !info[0].IsNumber()) throw_input(info.Env(), "setOptimizerSteps needs a number");
    guarded(info.Env(), [&] { m->set_optimizer_steps(info[0].As<Napi::Number>().Int64Value()); });
    return info.Env().Undefined();
  }

  Napi::Value Tensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<kpig::TensorInfo> ts = model(env)->tensors();
    Napi::Array out = Napi::Array::New(env, ts.size());
    for (size_t i = 0; i < ts.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", ts[i].name);
      Napi::Array shape = Napi::Array::New(env, ts[i].shape.size());
      for (size_t d = 0; d < ts[i].shape.size(); d++) shape.Set(uint32_t(d), double(ts[i].shape[d]));
      o.Set("shape", shape);
      o.Set("trainable", ts[i].trainable);
      out.Set(uint32_t(i), o);
    }
    return out;
  }

  static int64_t numel_of(const std::vector<kpig::TensorInfo>& ts, const std::string& name) {
    for (const auto& t : ts)
      if (t.name == name) {
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        return n;
      }
    return -1;
  }

  // readTensor(name, kind) → Float32Array (a copy)
  Napi::Value ReadTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw_input(env, "readTensor(name, kind)");
    const std::string name = info[0].As<Napi::String>().Utf8Value(), kind = info[1].As<Napi::String>().Utf8Value();
    const int64_t n = numel_of(m->tensors(), name);
    if (n < 0) throw_input(env, "no tensor named '" + name + "' in this model");
    std::vector<float> out(static_cast<size_t>(n));
    guarded(env, [&] { m->read_tensor(name, kind, out.data()); });
    return external_array(env, std::move(out));
  }

  // writeTensor(name, kind, data: Float32Array)
  Napi::Value WriteTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsTypedArray() ||
        info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_input(env, "writeTensor(name, kind, data: Float32Array)");
    const std::string name = info[0].As<Napi::String>().Utf8Value(), kind = info[1].As<Napi::String>().Utf8Value();
    Napi::Float32Array a = info[2].As<Napi::Float32Array>();
    const int64_t n = numel_of(m->tensors(), name);
    if (n < 0) throw_input(env, "no tensor named '" + name + "' in this model");
    if (int64_t(a.ElementLength()) != n)
      throw_input(env, "tensor '" + name + "' has " + std::to_string(n) + " elements, the data " + std::to_string(a.ElementLength()));
    guarded(env, [&] { m->write_tensor(name, kind, a.Data()); });
    return env.Undefined();
  }

  // scoreIg(fullTokens, fullOffsets, maskedTokens, maskedOffsets, responseLens: Int32Array, perToken: boolean)
  Napi::Value ScoreIg(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto m = model(env);
    std::vector<int32_t> ft = int32_arg(info, 0, "fullTokens"), fo = int32_arg(info, 1, "fullOffsets");
    std::vector<int32_t> mt = int32_arg(info, 2, "maskedTokens"), mo = int32_arg(info, 3, "maskedOffsets");
    std::vector<int32_t> r = int32_arg(info, 4, "responseLens");
    check_packing(env, ft, fo);
    check_packing(env, mt, mo);
    if (fo.size() != mo.size() || r.size() + 1 != fo.size())
      throw_input(env, "fullOffsets, maskedOffsets and responseLens must describe the same number of pairs");
    const bool per_token = info.Length() > 5 && info[5].ToBoolean().Value();
    auto* w = new IgWorker(env, m, std::move(ft), std::move(fo), std::move(mt), std::move(mo), std::move(r), per_token);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // setMatmulPrecision('fp32' | 'bf16')
  Napi::Value SetMatmulPrecision(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    const std::string p = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    if (p != "fp32" && p != "bf16") throw_input(info.Env(), "matmul precision must be 'fp32' or 'bf16'");
    m->set_matmul_bf16(p == "bf16");
    return info.Env().Undefined();
  }

  // setPrefixCache(maxBytes: number): 0 turns the prefix cache off
  Napi::Value SetPrefixCache(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    if (info.Length() < 1 || !info[0].IsNumber()) throw_input(info.Env(), "setPrefixCache needs a size in bytes");
    const double bytes = info[0].As<Napi::Number>().DoubleValue();
    if (!(bytes >= 0) || bytes > 9.0e15 || bytes != double(int64_t(bytes)))
      throw_input(info.Env(), "the prefix cache size must be a whole number of bytes ≥ 0");
    guarded(info.Env(), [&] { m->set_prefix_cache(int64_t(bytes)); });
    return info.Env().Undefined();
  }

  Napi::Value ClearPrefixCache(const Napi::CallbackInfo& info) {
    auto m = model(info.Env());
    guarded(info.Env(), [&] { m->clear_prefix_cache(); });
    return info.Env().Undefined();
  }

  Napi::Value PrefixCacheStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const kpig::PrefixCacheStats st = model(env)->prefix_cache_stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("sequences", double(st.sequences));
    o.Set("hits", double(st.hits));
    o.Set("storeHits", double(st.store_hits));
    o.Set("tokens", double(st.tokens));
    o.Set("tokensReused", double(st.tokens_reused));
    o.Set("entries", double(st.entries));
    o.Set("bytes", double(st.bytes));
    o.Set("evictions", double(st.evictions));
    return o;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();  // in-flight calls keep their own reference
    return info.Env().Undefined();
  }

  std::shared_ptr<kpig::Model> model_;
};

Napi::Object comm_object(Napi::Env env, const kpig::CommInfo& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("built", c.built);
  o.Set("active", c.active);
  o.Set("rank", c.rank);
  o.Set("size", c.size);
  o.Set("library", c.library);
  return o;
}

// distInit() → {built, active, rank, size, library}: starts MPI (a process started by mpirun).
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  kpig::CommInfo c;
  guarded(info.Env(), [&] { c = kpig::comm_init(); });
  return comm_object(info.Env(), c);
}

Napi::Value DistInfo(const Napi::CallbackInfo& info) { return comm_object(info.Env(), kpig::comm_info()); }

// distAllreduceSum(values: Float64Array): the array, summed over the ranks in place.
Napi::Value DistAllreduceSum(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw_input(info.Env(), "distAllreduceSum needs a Float64Array");
  Napi::Float64Array a = info[0].As<Napi::Float64Array>();
  guarded(info.Env(), [&] { kpig::comm_allreduce_sum(a.Data(), int64_t(a.ElementLength())); });
  return a;
}

// distAbort(code): ends every rank of the job (MPI_Abort); returns only without an active MPI.
Napi::Value DistAbort(const Napi::CallbackInfo& info) {
  kpig::comm_abort(info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1);
  return info.Env().Undefined();
}

// parseConfig(configJsonText, where) → the engine's reading of a config.json (the fields of
// NativeModelInfo that come from the config); throws as loading would (Config, Unsupported).
Napi::Value ParseConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_input(env, "parseConfig needs the text of a config.json");
  const std::string where = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "config.json";
  kpig::ModelConfig c;
  guarded(env, [&] { c = kpig::config_parse(info[0].As<Napi::String>().Utf8Value(), where); });
  Napi::Object o = Napi::Object::New(env);
  set_config(env, o, c);
  return o;
}

// checkpointLayout(configJsonText, where) → [{name, shape}]: the parameter tensors of a Hugging Face
// checkpoint with this config.json, as the engine's architecture tables list them (the config is
// checked as loading checks it; `where` names it in errors).
Napi::Value CheckpointLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_input(env, "checkpointLayout needs the text of a config.json");
  const std::string where = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "config.json";
  std::vector<kpig::TensorLayout> layout;
  guarded(env, [&] { layout = kpig::checkpoint_layout(kpig::config_parse(info[0].As<Napi::String>().Utf8Value(), where)); });
  Napi::Array out = Napi::Array::New(env, layout.size());
  for (size_t i = 0; i < layout.size(); i++) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("name", layout[i].name);
    Napi::Array shape = Napi::Array::New(env, layout[i].shape.size());
    for (size_t d = 0; d < layout[i].shape.size(); d++) shape.Set(uint32_t(d), double(layout[i].shape[d]));
    t.Set("shape", shape);
    out.Set(uint32_t(i), t);
  }
  return out;
}

// loadModel(dir: string, threads: number, device?: 'cpu' | 'cuda') → Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_input(env, "loadModel needs a model folder path");
  int threads = 0;
  if (info.Length() > 1 && info[1].IsNumber()) threads = info[1].As<Napi::Number>().Int32Value();
  std::string device = "cpu";
  if (info.Length() > 2 && info[2].IsString()) device = info[2].As<Napi::String>().Utf8Value();
  auto* w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), threads, device);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#ifdef KPIG_HAVE_CUDA
  kpig::cuda::register_device();  // `device: 'cuda'` opens the CUDA device (native/src/cuda/device_model.h)
#endif
  auto* data = new AddonData();
  data->model_ctor = Napi::Persistent(ModelWrap::Define(env));
  env.SetInstanceData(data);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
#ifdef KPIG_HAVE_CUDA
  exports.Set("cudaBuilt", Napi::Boolean::New(env, true));
#else
  exports.Set("cudaBuilt", Napi::Boolean::New(env, false));
#endif
  exports.Set("checkpointLayout", Napi::Function::New(env, CheckpointLayout));
  exports.Set("parseConfig", Napi::Function::New(env, ParseConfig));
  exports.Set("distInit", Napi::Function::New(env, DistInit));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo));
  exports.Set("distAllreduceSum", Napi::Function::New(env, DistAllreduceSum));
  exports.Set("distAbort", Napi::Function::New(env, DistAbort));
  return exports;
}

}  // namespace

NODE_API_MODULE(kpig, Init)
