#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../../include/kpig/error.h"
#include "json.h"

namespace kpig {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto& e : table)
    if (s == e.first) {
      *out = e.second;
      return true;
    }
  return false;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto bad = [&](const std::string& what) { fail(ErrorCode::Safetensors, path + ": " + what); };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::IO, path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(ErrorCode::IO, path + ": cannot stat: " + std::strerror(e));
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map_ == MAP_FAILED) {
      int e = errno;
      map_ = nullptr;
      ::close(fd);
      fail(ErrorCode::IO, path + ": cannot map: " + std::strerror(e));
    }
  }
  ::close(fd);
  try {
    const uint8_t* base = static_cast<const uint8_t*>(map_);
    if (size_ < 8) bad("truncated file: " + std::to_string(size_) + " bytes, a safetensors file starts with an 8-byte header length");
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | base[k];
    if (hlen > size_ - 8)
      bad("header length " + std::to_string(hlen) + " runs past the end of the file (" + std::to_string(size_) + " bytes)");
    Json header;
    try {
      header = Json::parse(reinterpret_cast<const char*>(base + 8), size_t(hlen));
    } catch (const std::runtime_error& e) {
      bad(std::string("header is not valid JSON: ") + e.what() + " of the header");
    }
    if (!header.is_object()) bad("header is not a JSON object");
    const uint8_t* data = base + 8 + hlen;
    size_t data_len = size_ - 8 - size_t(hlen);
    std::vector<std::pair<size_t, size_t>> spans;  // (begin, end), for the tiling check
    for (const auto& kv : header.object) {
      const std::string& name = kv.first;
      const Json& e = kv.second;
      if (name == "__metadata__") {
        if (!e.is_object()) bad("__metadata__ is not an object");
        for (const auto& m : e.object)
          if (m.second.is_string()) metadata_[m.first] = m.second.str;
        continue;
      }
      auto tbad = [&](const std::string& what) { bad("tensor '" + name + "': " + what); };
      if (!e.is_object()) tbad("header entry is not an object");
      const Json* jd = e.find("dtype");
      const Json* js = e.find("shape");
      const Json* jo = e.find("data_offsets");
      if (!jd || !jd->is_string()) tbad("missing or non-string 'dtype'");
      if (!js || !js->is_array()) tbad("missing or non-array 'shape'");
      if (!jo || !jo->is_array() || jo->array.size() != 2) tbad("'data_offsets' must be [begin, end]");
      TensorView t;
      t.name = name;
      if (!parse_dtype(jd->str, &t.dtype)) tbad("unknown dtype '" + jd->str + "' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
      uint64_t numel = 1;
      for (const Json& d : js->array) {
        if (!d.is_number() || !d.is_integer || d.number < 0 || d.number > 9.0e15) tbad("shape entries must be non-negative integers");
        uint64_t dim = uint64_t(d.number);
        if (dim != 0 && numel > (uint64_t(1) << 50) / dim) tbad("shape is too large");
        numel *= dim;
        t.shape.push_back(int64_t(dim));
      }
      for (const Json& o : jo->array)
        if (!o.is_number() || !o.is_integer || o.number < 0) tbad("data_offsets must be non-negative integers");
      uint64_t b = uint64_t(jo->array[0].number), en = uint64_t(jo->array[1].number);
      if (b > en) tbad("data_offsets begin " + std::to_string(b) + " > end " + std::to_string(en));
      if (en > data_len)
        tbad("data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "] out of range: the data area has " +
             std::to_string(data_len) + " bytes");
      uint64_t want = numel * dtype_size(t.dtype);
      if (en - b != want)
        tbad("shape × dtype size = " + std::to_string(want) + " bytes but data_offsets span " + std::to_string(en - b) + " bytes");
      t.data = data + b;
      t.nbytes = size_t(en - b);
      spans.emplace_back(size_t(b), size_t(en));
      tensors_.emplace(name, std::move(t));
    }
    std::sort(spans.begin(), spans.end());
    size_t at = 0;
    for (const auto& sp : spans) {
      if (sp.first < at) bad("tensors overlap at data offset " + std::to_string(sp.first));
      if (sp.first > at) bad("gap in the data area at offset " + std::to_string(at) + " (tensors must tile the data)");
      at = sp.second;
    }
    if (at != data_len) bad(std::to_string(data_len - at) + " trailing bytes after the last tensor");
  } catch (...) {
    if (map_) ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        e++;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7F800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void tensor_to_f32(const TensorView& t, float* out) {
  size_t n = size_t(t.numel());
  switch (t.dtype) {
    case DType::F32: std::memcpy(out, t.data, n * 4); return;
    case DType::F64:
      for (size_t i = 0; i < n; i++) {
        double d;
        std::memcpy(&d, t.data + 8 * i, 8);
        out[i] = float(d);
      }
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    default:
      fail(ErrorCode::Weights, "tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                                   "; model weights must be F32, F16, BF16 or F64");
  }
}

}  // namespace kpig
