// A growable 64-byte aligned buffer for packed GEMM panels: panels are read with full-width vector
// (or tile) loads, and a load that straddles two cache lines costs twice.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

namespace kpig {

template <typename T>
class AlignedBuf {
 public:
  AlignedBuf() = default;
  ~AlignedBuf() { std::free(p_); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  // At least n elements; the contents are not kept when it grows.
  T* get(size_t n) {
    if (n > n_) {
      std::free(p_);
      p_ = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
      if (!p_) throw std::bad_alloc();
      n_ = n;
    }
    return p_;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace kpig
