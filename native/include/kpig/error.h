// Typed errors of the native core. Every failure caused by input (files, shapes, ids) is a
// kpig::Error whose code matches the TypeScript error classes and whose message says what and where.
#pragma once
#include <stdexcept>
#include <string>

namespace kpig {

enum class ErrorCode { IO, Safetensors, Config, Weights, Unsupported, Input, Cancelled, Internal };

// "E_IO", "E_SAFETENSORS", ... as the TypeScript layer names them.
const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace kpig

// Internal invariants: a failure here is a bug in the engine, not bad input.
#define KPIG_ASSERT(cond)                                                                        \
  do {                                                                                           \
    if (!(cond))                                                                                 \
      ::kpig::fail(::kpig::ErrorCode::Internal,                                                  \
                   std::string("internal error: ") + #cond + " at " + __FILE__ + ":" + std::to_string(__LINE__)); \
  } while (0)
