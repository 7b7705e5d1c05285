// The thin N-API layer: marshals typed arrays in and out of the native core and runs every heavy
// call on a worker thread behind a Promise. Inputs are copied before the worker starts; outputs are
// handed to JavaScript as external ArrayBuffers without a copy. No model logic lives here.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "kpig/model.h"

namespace {

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

[[noreturn]] void throw_input(Napi::Env env, const std::string& message) { throw make_error(env, "E_INPUT", message); }

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

class ModelWrap;

struct AddonData {
  Napi::FunctionReference model_ctor;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, int threads) : PromiseWorker(env), dir_(std::move(dir)), threads_(threads) {}
  void Run() override {
    kpig::LoadOptions o;
    o.threads = threads_;
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
                        InstanceMethod("generate", &ModelWrap::Generate), InstanceMethod("dispose", &ModelWrap::Dispose)});
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
    o.Set("modelType", c.model_type);
    o.Set("arch", c.arch == kpig::Arch::GPT2 ? "gpt2" : "llama");
    o.Set("vocabSize", double(c.vocab));
    o.Set("hiddenSize", double(c.hidden));
    o.Set("numLayers", double(c.layers));
    o.Set("numHeads", double(c.heads));
    o.Set("numKvHeads", double(c.kv_heads));
    o.Set("headDim", double(c.head_dim));
    o.Set("intermediateSize", double(c.ffn));
    o.Set("maxPositions", double(c.max_pos));
    o.Set("ropeTheta", c.rope_theta);
    o.Set("normEps", c.eps);
    o.Set("tiedEmbeddings", c.tied);
    o.Set("qkvBias", c.qkv_bias);
    o.Set("oBias", c.o_bias);
    o.Set("bosId", double(c.bos_id));
    Napi::Array eos = Napi::Array::New(env, c.eos_ids.size());
    for (size_t i = 0; i < c.eos_ids.size(); i++) eos.Set(uint32_t(i), double(c.eos_ids[i]));
    o.Set("eosIds", eos);
    o.Set("configDtype", c.torch_dtype);
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
    o.Set("threads", mi.threads);
    return o;
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

  // generate(tokens, offsets, {maxNewTokens, eosIds?: Int32Array}, control: Uint8Array(S + 1), onStep?)
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

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();  // in-flight calls keep their own reference
    return info.Env().Undefined();
  }

  std::shared_ptr<kpig::Model> model_;
};

// loadModel(dir: string, threads: number) → Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_input(env, "loadModel needs a model folder path");
  int threads = 0;
  if (info.Length() > 1 && info[1].IsNumber()) threads = info[1].As<Napi::Number>().Int32Value();
  auto* w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), threads);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->model_ctor = Napi::Persistent(ModelWrap::Define(env));
  env.SetInstanceData(data);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(kpig, Init)
