// cuda/ops.hpp — the CUDA implementations behind the op API (core/backend.hpp).
//
// Including this header (or <moekd/cuda.hpp>) fills DeviceOps<float>, DeviceOps<double> and
// DeviceCopyHooks with the functions of kernels/ops.cu, so that moekd's ops (add, exp, sum,
// matmul, linear, ...) and autograd run unchanged on tensors made with Device::CUDA or moved there
// with .to(Device::CUDA). Which ops have a device implementation is listed by the backend-ops test
// (tests/gpu/backend_ops_test.cpp); the others say so when they meet a CUDA tensor.
#pragma once

#include "allocator.hpp"

namespace moekd::cuda {

/// Fills the device tables (idempotent; touches no GPU). Defined in kernels/ops.cu.
void install_ops();
/// The families' parts of install_ops, one per kernel file that fills them.
void install_index_ops();  // kernels/index.cu
void install_linalg_ops();  // kernels/linalg.cu
void install_loss_ops();   // kernels/kl.cu
void install_moe_ops();    // kernels/gating.cu

namespace detail {
inline const bool ops_installed = (install_ops(), true);
}  // namespace detail

}  // namespace moekd::cuda
