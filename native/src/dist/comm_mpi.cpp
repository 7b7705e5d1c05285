// MPI behind comm.h. MPI starts with MPI_THREAD_SERIALIZED: the collectives run on whichever
// worker thread carries the call, one call at a time.
#include <dlfcn.h>
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "kpig/comm.h"
#include "kpig/error.h"

namespace kpig {

namespace {

std::mutex mu;
CommInfo world;

std::string library_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(v, &n);
  std::string s(v, size_t(std::max(0, n)));
  const size_t end = s.find_first_of("\n,");
  return end == std::string::npos ? s : s.substr(0, end);
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, msg, &n);
  fail(ErrorCode::IO, std::string(what) + " failed: " + std::string(msg, size_t(std::max(0, n))));
}

template <typename T>
void allreduce(T* x, int64_t n, MPI_Datatype type) {
  std::lock_guard<std::mutex> lock(mu);
  if (!world.active || world.size == 1) return;
  constexpr int64_t kMax = int64_t(1) << 28;  // MPI counts are int: pieces of 2^28 elements
  for (int64_t i = 0; i < n; i += kMax)
    check(MPI_Allreduce(MPI_IN_PLACE, x + i, int(std::min(kMax, n - i)), type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
}

}  // namespace

CommInfo comm_init() {
  std::lock_guard<std::mutex> lock(mu);
  if (world.active) return world;
  int started = 0;
  MPI_Initialized(&started);
  if (!started) {
    // Open MPI loads its components with dlopen, and they need libmpi's symbols to be global;
    // Node opened this addon, and libmpi with it, with local symbols.
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&MPI_Init), &info) && info.dli_fname) dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED) fail(ErrorCode::Unsupported, "the MPI library does not allow calls from more than one thread (MPI_THREAD_SERIALIZED)");
    std::atexit([] {
      int done = 0;
      MPI_Finalized(&done);
      if (!done) MPI_Finalize();
    });
  }
  world.built = true;
  world.active = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world.size);
  world.library = library_version();
  return world;
}

CommInfo comm_info() {
  std::lock_guard<std::mutex> lock(mu);
  CommInfo w = world;
  w.built = true;
  if (w.library.empty()) w.library = library_version();
  return w;
}

void comm_abort(int code) {
  if (world.active) MPI_Abort(MPI_COMM_WORLD, code);
}

void comm_allreduce_sum(float* x, int64_t n) { allreduce(x, n, MPI_FLOAT); }
void comm_allreduce_sum(double* x, int64_t n) { allreduce(x, n, MPI_DOUBLE); }

}  // namespace kpig
