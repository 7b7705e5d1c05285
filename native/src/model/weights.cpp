// Loading Hugging Face safetensors checkpoints (single file or sharded) into float32 weights,
// checking every tensor's presence and shape against config.json and rejecting unexpected ones.
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "../core/json.h"
#include "../core/safetensors.h"
#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

namespace {

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class TensorSource {
 public:
  explicit TensorSource(const std::string& dir) : dir_(dir) {
    const std::string index = dir + "/model.safetensors.index.json";
    const std::string single = dir + "/model.safetensors";
    if (file_exists(index)) {
      std::ifstream in(index, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string text = ss.str();
      Json j;
      try {
        j = Json::parse(text.data(), text.size());
      } catch (const std::runtime_error& e) {
        fail(ErrorCode::Config, index + ": not valid JSON: " + e.what());
      }
      const Json* map = j.find("weight_map");
      if (!map || !map->is_object()) fail(ErrorCode::Config, index + ": field 'weight_map' is missing or not an object");
      std::map<std::string, SafetensorsFile*> opened;
      for (const auto& kv : map->object) {
        if (!kv.second.is_string()) fail(ErrorCode::Config, index + ": weight_map['" + kv.first + "'] is not a file name");
        const std::string& fname = kv.second.str;
        if (fname.find('/') != std::string::npos)
          fail(ErrorCode::Config, index + ": weight_map['" + kv.first + "'] = '" + fname + "' must be a file in the folder");
        SafetensorsFile*& f = opened[fname];
        if (!f) {
          files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + fname));
          f = files_.back().get();
        }
        const TensorView* t = f->find(kv.first);
        if (!t) fail(ErrorCode::Weights, index + ": tensor '" + kv.first + "' is mapped to " + fname + ", which does not contain it");
        add(t, f);
      }
      for (const auto& f : files_)  // tensors present in a shard but absent from the index
        for (const auto& kv : f->tensors())
          if (!tensors_.count(kv.first)) add(&kv.second, f.get());
    } else if (file_exists(single)) {
      files_.push_back(std::make_unique<SafetensorsFile>(single));
      for (const auto& kv : files_[0]->tensors()) add(&kv.second, files_[0].get());
    } else {
      fail(ErrorCode::IO, dir + ": no weights found: tried model.safetensors.index.json and model.safetensors");
    }
  }

  bool has(const std::string& name) const { return tensors_.count(name) > 0; }

  // Reads a tensor that must exist with exactly this shape, as float32.
  Floats take(const std::string& name, std::vector<int64_t> shape) {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      fail(ErrorCode::Weights, dir_ + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    const TensorView* t = it->second.first;
    if (t->shape != shape)
      fail(ErrorCode::Weights, it->second.second->path() + ": tensor '" + name + "' has shape " + shape_str(t->shape) +
                                   " but config.json implies " + shape_str(shape));
    Floats out(size_t(t->numel()));
    tensor_to_f32(*t, out.data());
    // A NaN or ±Inf weight makes every output NaN (greedy decoding then answers token 0, scores
    // come out null, every training step is skipped): refuse the checkpoint at load, naming it.
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < out.size(); i++)
      if (!std::isfinite(out[i])) {
        if (first < 0) first = int64_t(i);
        bad++;
      }
    if (bad > 0)
      fail(ErrorCode::Weights, it->second.second->path() + ": tensor '" + name + "' holds " + std::to_string(bad) +
                                   " non-finite value(s) (NaN or ±Inf; the first at element " + std::to_string(first) +
                                   "): the checkpoint is corrupt");
    used_.insert(name);
    dtypes_.insert(dtype_name(t->dtype));
    n_params_ += t->numel();
    return out;
  }

  // Every tensor not taken must be a known buffer; anything else means the file and config disagree.
  void finish(ModelInfo& info, bool tied) {
    for (const auto& kv : tensors_) {
      const std::string& n = kv.first;
      if (used_.count(n)) continue;
      auto ends = [&](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
      if (ends(".attn.bias") || ends(".attn.masked_bias") || ends("rotary_emb.inv_freq")) {
        n_ignored_buffers_++;
      } else if (n == "lm_head.weight" && tied) {
        info.notes.push_back("ignored lm_head.weight: tie_word_embeddings is true, the head is the input embedding");
      } else {
        fail(ErrorCode::Weights, kv.second.second->path() + ": unexpected tensor '" + n + "' for a " +
                                     info.config.model_type + " model with this config.json");
      }
    }
    if (n_ignored_buffers_) info.notes.push_back("ignored " + std::to_string(n_ignored_buffers_) + " non-parameter buffers (attention masks, rotary tables)");
    for (const auto& f : files_) {
      info.files.push_back(f->path());
      struct stat st;
      if (::stat(f->path().c_str(), &st) == 0) info.weights_file_bytes += st.st_size;
    }
    info.weights_dtype = dtypes_.size() == 1 ? *dtypes_.begin() : "mixed";
    info.n_params = n_params_;
  }

 private:
  void add(const TensorView* t, SafetensorsFile* f) { tensors_[t->name] = {t, f}; }
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const TensorView*, SafetensorsFile*>> tensors_;
  std::set<std::string> used_, dtypes_;
  int64_t n_params_ = 0;
  int n_ignored_buffers_ = 0;
};

// Every tensor of the checkpoint into its engine buffer, as the architecture's table says.
void load_weights(TensorSource& src, const ModelConfig& c, Weights& w) {
  const Architecture& a = architecture_of(c);
  std::vector<TensorSlot> slots;
  for (const std::string& p : a.prefixes) {
    slots = a.tensors(c, p);
    if (src.has(slots.front().name)) break;
  }
  shape_layers(c, w);
  for (const TensorSlot& s : slots) {
    Floats t = src.take(s.name, s.shape);
    if (s.o1 == 0) {  // a whole buffer: an embedding, a norm, the head
      slot_buffer(w, s) = std::move(t);
      continue;
    }
    Linear& lin = linear_of(w.layers[size_t(s.layer)], s.part);
    if (s.in_major) lin.in_major = true;
    Floats& dst = slot_buffer(w, s);
    const bool bias = s.shape.size() == 1;
    if (dst.empty()) dst.assign(size_t(bias ? lin.out : lin.out * lin.in), 0.f);
    std::copy(t.begin(), t.end(), dst.begin() + slot_offset(w, s));
  }
}

int64_t float_bytes(const Weights& w) {
  int64_t n = int64_t(w.tok_emb.size() + w.pos_emb.size() + w.norm_w.size() + w.norm_b.size() + w.head.size());
  for (const Layer& L : w.layers) {
    n += int64_t(L.norm1_w.size() + L.norm1_b.size() + L.norm2_w.size() + L.norm2_b.size());
    for (const Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) n += int64_t(lin->w.size() + lin->b.size());
  }
  return n * 4;
}

}  // namespace

void shape_layers(const ModelConfig& c, Weights& w) {
  const int64_t C = c.hidden, qd = c.heads * c.head_dim, kd = c.kv_heads * c.head_dim, F = c.ffn;
  w.layers.resize(size_t(c.layers));
  for (Layer& L : w.layers) {
    L.qkv.in = C, L.qkv.out = qd + 2 * kd;
    L.o.in = qd, L.o.out = C;
    L.up.in = C, L.up.out = c.arch.gated() ? 2 * F : F;
    L.down.in = F, L.down.out = C;
  }
}

Linear& linear_of(Layer& L, Part p) {
  switch (p) {
    case Part::QKV: case Part::QKVBias: return L.qkv;
    case Part::O: case Part::OBias: return L.o;
    case Part::Up: case Part::UpBias: return L.up;
    case Part::Down: case Part::DownBias: return L.down;
    default: fail(ErrorCode::Internal, "linear_of: not a linear part");
  }
}

Floats& slot_buffer(Weights& w, const TensorSlot& s, bool grad) {
  switch (s.part) {
    case Part::TokEmb: return grad ? w.g_tok_emb : w.tok_emb;
    case Part::PosEmb: return grad ? w.g_pos_emb : w.pos_emb;
    case Part::Head: return grad ? w.g_head : w.head;
    case Part::FinalNormW: return grad ? w.g_norm_w : w.norm_w;
    case Part::FinalNormB: return grad ? w.g_norm_b : w.norm_b;
    default: break;
  }
  Layer& L = w.layers[size_t(s.layer)];
  switch (s.part) {
    case Part::Norm1W: return grad ? L.g_norm1_w : L.norm1_w;
    case Part::Norm1B: return grad ? L.g_norm1_b : L.norm1_b;
    case Part::Norm2W: return grad ? L.g_norm2_w : L.norm2_w;
    case Part::Norm2B: return grad ? L.g_norm2_b : L.norm2_b;
    case Part::QKV: case Part::O: case Part::Up: case Part::Down: return grad ? linear_of(L, s.part).gw : linear_of(L, s.part).w;
    default: return grad ? linear_of(L, s.part).gb : linear_of(L, s.part).b;
  }
}

int64_t slot_offset(Weights& w, const TensorSlot& s) {
  if (s.layer < 0 || s.o1 == 0) return 0;
  const Linear& lin = linear_of(w.layers[size_t(s.layer)], s.part);
  const bool bias = s.shape.size() == 1;
  return bias || s.in_major ? s.o0 : s.o0 * lin.in;
}

KVCache::KVCache(const ModelConfig& c, int64_t cap) : capacity(cap) {
  const size_t n = size_t(cap * c.kv_heads * c.head_dim);
  k.assign(size_t(c.layers), Floats(n));
  v.assign(size_t(c.layers), Floats(n));
}

std::unique_ptr<ModelImpl> model_impl_load(const std::string& dir, const LoadOptions& options) {
  auto m = std::make_unique<ModelImpl>();
  m->info.config = config_load(dir);
  const ModelConfig& c = m->info.config;
  TensorSource src(dir);
  load_weights(src, c, m->w);
  src.finish(m->info, c.tied);
  m->info.memory_bytes = float_bytes(m->w);
  m->be = make_cpu_backend(options.threads);
  m->info.threads = m->be->threads();
  m->info.isa = m->be->matmul_isa();
  m->info.bf16_isa = m->be->bf16_matmul_isa();
  m->prefixes = std::make_shared<PrefixStore>();
  m->rebuild_registry();
  return m;
}

}  // namespace kpig
