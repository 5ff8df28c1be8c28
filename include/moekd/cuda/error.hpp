// cuda/error.hpp — turns failed CUDA runtime calls into moekd::Error.
//
// Every CUDA call of the backend goes through MOEKD_CUDA_CHECK, so a failure reads like
//   "CUDA error: out of memory (cudaErrorMemoryAllocation) in cudaMalloc(&p, n) [runtime.cu:46]"
// instead of a silent bad pointer. Part of the CUDA backend: include it only from code that
// links moekd::cuda (it needs <cuda_runtime_api.h>, which that target puts on the include path).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "../core/error.hpp"

namespace moekd::cuda::detail {

/// The message for a failed call: error string, error name, the call's text and where it was.
inline std::string cuda_error_message(cudaError_t err, const char* call, const char* file, int line) {
    return msg("CUDA error: ", cudaGetErrorString(err), " (", cudaGetErrorName(err), ") in ", call, " [", file,
               ":", line, "]");
}

/// Throws moekd::Error when err is not cudaSuccess. Clears the runtime's sticky last error first,
/// so a recoverable failure (out of memory) does not poison the next unrelated check.
inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err == cudaSuccess) return;
    (void)cudaGetLastError();
    throw Error(cuda_error_message(err, call, file, line));
}

}  // namespace moekd::cuda::detail

/// MOEKD_CUDA_CHECK(cudaMemcpy(...)): throw moekd::Error naming the CUDA error and the call.
#define MOEKD_CUDA_CHECK(call) ::moekd::cuda::detail::cuda_check((call), #call, __FILE__, __LINE__)
