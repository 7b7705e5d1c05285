// The one-process world of an addon built without MPI.
#include "kpig/comm.h"

#include "kpig/error.h"

namespace kpig {

CommInfo comm_init() {
  fail(ErrorCode::Unsupported, "this kpig was built without MPI: install an MPI (e.g. Debian's libopenmpi-dev) and rebuild the addon (npm rebuild kpig)");
}
CommInfo comm_info() { return {}; }
void comm_abort(int) {}
void comm_allreduce_sum(float*, int64_t) {}
void comm_allreduce_sum(double*, int64_t) {}

}  // namespace kpig
