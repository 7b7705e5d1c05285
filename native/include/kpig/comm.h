// Data-parallel communication between the processes of one training job: MPI where the addon was
// built with it (CMake finds MPI), a one-process world otherwise. Every rank calls the collectives
// with the same sizes in the same order; they block until all ranks have called them.
#pragma once
#include <cstdint>
#include <string>

namespace kpig {

struct CommInfo {
  bool built = false;   // compiled with MPI
  bool active = false;  // MPI started in this process
  int rank = 0, size = 1;
  std::string library;  // the MPI library's version string (when built)
};

// Starts MPI (once; for a process started by an MPI launcher) and returns the world.
CommInfo comm_init();
CommInfo comm_info();

// Ends every process of the job with `code` (MPI_Abort): what a rank that fails must do, since the
// others would wait for it in their next collective. Returns only without an active MPI.
void comm_abort(int code);

// x ← Σ over ranks of x, in place (n elements; any n).
void comm_allreduce_sum(float* x, int64_t n);
void comm_allreduce_sum(double* x, int64_t n);

}  // namespace kpig
