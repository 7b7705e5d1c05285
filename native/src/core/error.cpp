#include "../../include/kpig/error.h"

namespace kpig {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::IO: return "E_IO";
    case ErrorCode::Safetensors: return "E_SAFETENSORS";
    case ErrorCode::Config: return "E_CONFIG";
    case ErrorCode::Weights: return "E_WEIGHTS";
    case ErrorCode::Unsupported: return "E_UNSUPPORTED";
    case ErrorCode::Input: return "E_INPUT";
    case ErrorCode::Cancelled: return "E_CANCELLED";
    case ErrorCode::Internal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

}  // namespace kpig
