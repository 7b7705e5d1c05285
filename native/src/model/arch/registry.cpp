// The architectures the engine knows: adding a family is its file in this folder and one line here.
#include "../arch.h"

namespace kpig {

extern const Architecture kGpt2Architecture;
extern const Architecture kLlamaArchitecture;
extern const Architecture kGemmaArchitecture;

const std::vector<const Architecture*>& architectures() {
  static const std::vector<const Architecture*> all{&kGpt2Architecture, &kLlamaArchitecture, &kGemmaArchitecture};
  return all;
}

const Architecture* architecture_for_type(const std::string& model_type) {
  for (const Architecture* a : architectures())
    for (const std::string& t : a->model_types)
      if (t == model_type) return a;
  return nullptr;
}

const Architecture& architecture_of(const ModelConfig& c) {
  for (const Architecture* a : architectures())
    if (c.arch.family == a->family) return *a;
  fail(ErrorCode::Internal, "no architecture named '" + c.arch.family + "'");
}

std::string supported_model_types() {
  std::string out;
  for (const Architecture* a : architectures())
    for (const std::string& t : a->model_types) out += (out.empty() ? "" : ", ") + t;
  return out;
}

std::vector<TensorLayout> checkpoint_layout(const ModelConfig& c) {
  const Architecture& a = architecture_of(c);
  std::vector<TensorLayout> out;
  for (const TensorSlot& s : a.tensors(c, a.prefixes.front())) out.push_back({s.name, s.shape});
  return out;
}

}  // namespace kpig
