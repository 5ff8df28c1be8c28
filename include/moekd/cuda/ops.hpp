// cuda/ops.hpp — the CUDA implementations behind the op API (core/backend.hpp).
//
// Including this header (or <moekd/cuda.hpp>) fills DeviceOps<T> (float, double; fill / copy /
// compare for int64_t and uint8_t), DeviceMaskOps and DeviceCopyHooks with the functions of
// kernels/*.cu, so that moekd's ops (add, exp, sum, matmul, linear, softmax, layer_norm,
// cross_entropy, the moe:: ops, the KD and relation losses, linalg::svd, the optimizers' steps, ...)
// and autograd run unchanged on tensors made with Device::CUDA or moved there with
// .to(Device::CUDA). Which ops have a device implementation is listed by the backend-ops test
// (tests/gpu/backend_ops_test.cpp); the others say so when they meet a CUDA tensor.
#pragma once

#include "allocator.hpp"

namespace moekd::cuda {

/// Fills the device tables (idempotent; touches no GPU). Defined in kernels/ops.cu.
void install_ops();

namespace detail {
// install_ops' parts: each kernel file fills the table entries it implements.
void install_index_ops();     // kernels/index.cu: pow, gather / scatter-add, where, compare, logic, max / min, argmax / top-k, nll
void install_softmax_ops();   // kernels/softmax.cu: softmax / log_softmax, cross-entropy
void install_norm_ops();      // kernels/norm.cu: layer norm
void install_kl_ops();        // kernels/kl.cu: symmetric KL, soft distillation
void install_relation_ops();  // kernels/relation.cu: row normalisation, Gram difference
void install_router_ops();    // kernels/gating.cu: the MoE router rows, capacity positions
void install_dispatch_ops();  // kernels/dispatch.cu: the dispatch plan's offsets and scatter, permute / combine
void install_expert_ops();    // kernels/experts.cu: the expert FFN's bias / activation kernels, batched GEMM
void install_linalg_ops();    // kernels/linalg.cu: thin SVD (cuSOLVER gesvdj)
void install_bf16_ops();      // kernels/gemm_bf16.cu: the bf16 GEMMs of an autocast scope, bf16_support(Device::CUDA)

inline const bool ops_installed = (install_ops(), true);
}  // namespace detail

}  // namespace moekd::cuda
