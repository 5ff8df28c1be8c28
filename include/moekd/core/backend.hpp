// backend.hpp — the seam between the ops and the devices (as ggml's backend interface or
// flashlight's tensor adapter): an op checks its arguments, then runs the implementation for its
// operands' device, then records a backward that dispatches again.
//
// The CPU implementations are the loops in ops/*.hpp. The device implementations are this table
// of functions, which the CUDA backend fills when a program links it (kernels/ops.cu; including
// <moekd/cuda.hpp> installs it, as DeviceAllocHooks does for memory), so these headers never
// need CUDA. The same table is filled by the emulated CUDA build (emu/), which is how CI runs
// every device implementation without a GPU. An op whose device entry is missing says so:
//   "softmax: tensor of shape (2, 3) is on cuda; softmax has no CUDA implementation yet"
#pragma once

#include <cstddef>
#include <cstdint>

#include "device.hpp"
#include "error.hpp"
#include "shape.hpp"
#include "../kernels/optim.cuh"

namespace moekd {

enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Rsqrt, Abs, Tanh, Sigmoid, Relu, Gelu };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

/// An elementwise loop over `shape` (rank <= kMaxRank) with three operands, each read through
/// its own element strides (0 where it is broadcast) from its offset: operand 0 is the output.
struct LoopPlan {
    static constexpr int kMaxRank = 8;
    int rank = 0;
    int64_t numel = 1;
    int64_t shape[kMaxRank] = {};
    int64_t stride[3][kMaxRank] = {};
    int64_t offset[3] = {};
};

/// The plan for a loop over `shape` whose operands have the given strides and offsets.
inline LoopPlan make_loop_plan(const Shape& shape, const Shape* strides[3], const int64_t offsets[3],
                               const char* op) {
    LoopPlan p;
    MOEKD_CHECK(shape.rank() <= LoopPlan::kMaxRank, op, ": tensors of rank ", shape.rank(), " (shape ", shape,
                ") on the GPU; the device loops take at most ", LoopPlan::kMaxRank, " dims");
    p.rank = static_cast<int>(shape.rank());
    for (int d = 0; d < p.rank; ++d) {
        p.shape[d] = shape[d];
        p.numel *= shape[d];
        for (int k = 0; k < 3; ++k) p.stride[k][d] = strides[k] ? (*strides[k])[d] : 0;
    }
    for (int k = 0; k < 3; ++k) p.offset[k] = offsets[k];
    return p;
}

/// Device implementations for element type T (float, double). Null entries are missing.
/// Pointers are storage bases; plans carry offsets and strides. All calls are synchronous with
/// respect to later calls on the same device (one stream) and throw moekd::Error on failure.
template <class T>
struct DeviceOps {
    void (*fill)(T* p, T value, int64_t n) = nullptr;
    /// dst (operand 0) = src (operand 1), any strides.
    void (*copy)(T* dst, const T* src, const LoopPlan& plan) = nullptr;
    void (*unary)(UnaryOp op, const T* x, T* y, int64_t n) = nullptr;  // contiguous
    /// gx = dL/dx from x, y = f(x) and g = dL/dy, contiguous.
    void (*unary_backward)(UnaryOp op, const T* x, const T* y, const T* g, T* gx, int64_t n) = nullptr;
    /// c (operand 0) = a (operand 1) op b (operand 2), each read through its strides (broadcast: 0).
    /// c may be a or b itself (each output element reads only its own inputs).
    void (*binary)(BinaryOp op, T* c, const T* a, const T* b, const LoopPlan& plan) = nullptr;
    /// y[r] = sum of the n contiguous elements of row r (a block per row, double accumulation
    /// for float as on the CPU, a fixed order: the same input gives the same bits).
    void (*sum_rows)(const T* x, T* y, int64_t rows, int64_t n) = nullptr;
    /// Row-major C (m, n) = alpha op(A) op(B) + beta C, op(X) = X^T when tX; lda etc. are row
    /// strides of the stored matrices.
    void (*gemm)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                 int64_t ldb, T beta, T* c, int64_t ldc) = nullptr;

    /// softmax (log_softmax when `log`) of contiguous x read as (outer, n, inner) over n, and its
    /// backward from the output y and its gradient g (kernels/softmax.cuh: a warp or a block per row).
    void (*softmax)(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) = nullptr;
    void (*softmax_backward)(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner,
                             bool log) = nullptr;
    /// layer_norm of M contiguous rows of N (w, b may be null); mean and rstd (M) saved for the
    /// backward, which writes any of gx, gw, gb that is not null (gw, gb deterministic).
    void (*layer_norm)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N,
                       T eps) = nullptr;
    void (*layer_norm_backward)(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw,
                                T* gb, int64_t M, int64_t N) = nullptr;
    /// Fused cross-entropy of logits (N, C) against int64 targets on the device: per-row loss, row
    /// max and log-sum (0 for ignored rows) and, unless loss is null, the reduced loss (the row
    /// sum in double / divisor). Backward: scale(r) = g[r] when per_row, else g[0] / divisor.
    void (*cross_entropy)(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                          int64_t C, int64_t ignore_index, T smoothing, double divisor) = nullptr;
    void (*cross_entropy_backward)(const T* logits, const int64_t* targets, const T* rmax, const T* lsum,
                                   const T* g, bool per_row, T divisor, T* gx, int64_t N, int64_t C,
                                   int64_t ignore_index, T smoothing) = nullptr;
    /// Fused optimizer updates of n elements in place (kernels/optim.cuh's per-element math).
    void (*sgd_step)(T* p, const T* g, T* buf, int64_t n, const kern::SgdStep<T>& s) = nullptr;
    void (*adam_step)(T* p, const T* g, T* m, T* v, int64_t n, const kern::AdamStep<T>& s) = nullptr;

    static DeviceOps& cuda() {
        static DeviceOps ops;
        return ops;
    }
};

/// Host <-> device copies of raw bytes, installed with the CUDA allocator.
struct DeviceCopyHooks {
    void (*to_device)(void* dst, const void* src, size_t bytes) = nullptr;
    void (*to_host)(void* dst, const void* src, size_t bytes) = nullptr;
    static DeviceCopyHooks& cuda() {
        static DeviceCopyHooks h;
        return h;
    }
};

namespace detail {
/// The device table entry `fn` for op `op` on a tensor of `shape`, or an error saying what is
/// missing (no CUDA backend linked, or no device implementation of this op yet).
template <class F>
F device_entry(F fn, const char* op, const Shape& shape) {
    MOEKD_CHECK(fn, op, ": tensor of shape ", shape, " is on cuda; ", op,
                " has no CUDA implementation in this program (link moekd::cuda and include <moekd/cuda.hpp>, "
                "or copy with .to(Device::CPU))");
    return fn;
}
}  // namespace detail

}  // namespace moekd
