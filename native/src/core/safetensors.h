// Memory-mapped safetensors reader. The header is validated completely before any tensor is used:
// bounds, dtype, shape × dtype size = byte length, and tensors tiling the data area exactly.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kpig {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // points into the mapping; valid while the file is open
  size_t nbytes;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws kpig::Error(Safetensors or IO) naming the file.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Converts any floating dtype (F64/F32/F16/BF16) to float32; throws for integer dtypes.
void tensor_to_f32(const TensorView& t, float* out);

float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);

}  // namespace kpig
