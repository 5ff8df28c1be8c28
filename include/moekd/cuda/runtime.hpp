// cuda/runtime.hpp — is there a GPU, which libraries are linked, wait for the device.
//
// device_count() never throws: on a machine without a GPU (or with a driver older than the
// runtime) it returns 0, and no_device_reason() says why. GPU tests use the pair to skip.
#pragma once

#include <string>

#include "error.hpp"

namespace moekd::cuda {

/// Number of usable CUDA devices; 0 when cudaGetDeviceCount fails (no driver, no GPU).
inline int device_count() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/// Why device_count() is 0: the CUDA error string (e.g. "CUDA driver version is insufficient
/// for CUDA runtime version"), or "" when there is a device.
inline std::string no_device_reason() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return cudaGetErrorString(err);
    }
    return n == 0 ? "cudaGetDeviceCount reported 0 devices" : "";
}

/// The current device (cudaGetDevice); throws moekd::Error when there is none.
inline int current_device() {
    int d = 0;
    MOEKD_CUDA_CHECK(cudaGetDevice(&d));
    return d;
}

inline void set_device(int device) { MOEKD_CUDA_CHECK(cudaSetDevice(device)); }

/// Waits for all work queued on the current device; throws on an earlier asynchronous error
/// (e.g. a kernel that faulted).
inline void synchronize() { MOEKD_CUDA_CHECK(cudaDeviceSynchronize()); }

/// One line naming the linked CUDA runtime, cuBLAS, cuSOLVER and NCCL versions (and the driver's,
/// or why there is none). Works without a GPU; tests print it to show what the binary links.
std::string build_info();  // defined in kernels/runtime.cu

}  // namespace moekd::cuda
