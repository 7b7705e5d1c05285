#include "memory.h"

#include <sys/mman.h>

namespace kpig {

void* aligned_bytes(size_t bytes) {
  constexpr size_t kLine = 64, kHuge = size_t(2) << 20, kHugeFrom = size_t(4) << 20;
  if (bytes == 0) bytes = kLine;
  const bool huge = bytes >= kHugeFrom;
  const size_t align = huge ? kHuge : kLine;
  void* p = nullptr;
  if (posix_memalign(&p, align, (bytes + kLine - 1) / kLine * kLine) != 0 || !p) throw std::bad_alloc();
  // Advice only: where transparent huge pages are off, or the range is not eligible, nothing changes.
  if (huge) madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return p;
}

}  // namespace kpig
