// Aligned memory for the arrays the kernels read and write: weights, activations, packed panels.
//
// Every allocation starts on a cache line (64 bytes). A row of floats that starts 16 bytes into a
// line (where malloc puts large blocks) makes every 16-float tile row of a GEMM output straddle two
// lines: measured on the projection shapes of the bench models, that costs ~18% of the GEMM.
// Allocations of 4 MiB and more start on a 2 MiB boundary and are advised for transparent huge
// pages (where the kernel allows them, `madvise` mode included), so the weights and the (T, F)
// activations need fewer TLB entries. That part was not measured on its own: the ~18% above is the
// alignment alone (an A/B with only C's offset changed).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace kpig {

// 64-byte aligned (2 MiB aligned and huge-page advised from 4 MiB on); throws std::bad_alloc.
void* aligned_bytes(size_t bytes);
inline void free_bytes(void* p) { std::free(p); }

template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() noexcept = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(aligned_bytes(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { free_bytes(p); }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const noexcept { return false; }
};

// The engine's float array: a std::vector whose data() is aligned as above.
using Floats = std::vector<float, AlignedAllocator<float>>;

// A growable aligned buffer for per-thread scratch (packed GEMM panels): the contents are not kept
// when it grows.
template <typename T>
class AlignedBuf {
 public:
  AlignedBuf() = default;
  ~AlignedBuf() { free_bytes(p_); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  // At least n elements.
  T* get(size_t n) {
    if (n > n_) {
      free_bytes(p_);
      p_ = nullptr;
      p_ = static_cast<T*>(aligned_bytes(n * sizeof(T)));
      n_ = n;
    }
    return p_;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace kpig
