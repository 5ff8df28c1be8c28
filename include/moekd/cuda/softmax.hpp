// cuda/softmax.hpp — softmax, log_softmax and the fused cross-entropy on the GPU, forward and
// backward: the device twins of moekd::softmax / log_softmax (ops/softmax.hpp) and
// moekd::cross_entropy (ops/loss.hpp), doing the math of their MOEKD_HD row functions
// (kernels/softmax.cuh): a warp per row for rows of up to 1024 entries, a block per row above
// (a 32k vocabulary), one thread per row for a softmax over a dim that is not the last.
//
//   auto y  = cuda::softmax(x, -1);                     // x: any shape, contiguous, on the GPU
//   auto gx = cuda::softmax_grad(y, g, -1);             // the backward from y = softmax(x)
//   auto f  = cuda::cross_entropy(logits, targets);     // logits (..., C), targets int64 (...)
//   auto gl = cuda::cross_entropy_backward(logits, targets, f, T(1));   // like logits
//
// No autograd. Launchers compiled for float and double in kernels/softmax.cu. Arguments are
// checked (shapes first, then device and contiguity) before any CUDA call, so bad input fails with
// a moekd::Error naming the argument even on a machine without a GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"
#include "../kernels/softmax.cuh"
#include "../ops/loss.hpp"
#include "../ops/softmax.hpp"
#include "allocator.hpp"
#include "elementwise.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// What cross_entropy returns and cross_entropy_backward needs.
template <class T>
struct CrossEntropyForward {
    Tensor<T> loss;  // on the GPU: () for Mean / Sum, shaped like targets for None (0 where ignored)
    Tensor<T> rows;  // (N) per-row losses, 0 for ignored rows
    Tensor<T> rmax;  // (N) row max of the logits (0 for ignored rows)
    Tensor<T> lsum;  // (N) log(sum(exp(x - max))) (0 for ignored rows)
    int64_t count = 0;  // rows whose target is not ignore_index, on the host
    int64_t ignore_index = -100;
    double label_smoothing = 0.0;
    Reduction reduction = Reduction::Mean;
};

namespace detail {

// Raw launchers (kernels/softmax.cu, float and double); they throw moekd::Error if a launch fails.
/// y = softmax (or log_softmax when `log`) of x: contiguous (outer, n, inner) over n.
template <class T>
void softmax_fwd_raw(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log);
/// gx = the backward of softmax (log_softmax when `log`) from its output y and gradient g.
template <class T>
void softmax_grad_raw(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log);
/// Per-row loss, max and log-sum of logits (N, C); ignored rows 0. loss: the reduced scalar
/// (sum of rows in double / divisor; divisor 0 gives 0), or null for Reduction::None.
template <class T>
void cross_entropy_fwd_raw(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                           int64_t C, int64_t ignore_index, T smoothing, double divisor);
/// gx (N, C): scale(r) = g[r] when per_row, else g[0] / divisor.
template <class T>
void cross_entropy_bwd_raw(const T* logits, const int64_t* targets, const T* rmax, const T* lsum, const T* g,
                           bool per_row, T divisor, T* gx, int64_t N, int64_t C, int64_t ignore_index, T smoothing);

template <class T>
Tensor<T> softmax_device(const Tensor<T>& x, int64_t dim, bool log) {
    const char* op = log ? "cuda::log_softmax" : "cuda::softmax";
    MOEKD_CHECK(x.defined(), op, ": x is an undefined tensor");
    const moekd::detail::RowPlan p = moekd::detail::plan_rows(x.shape(), dim, op);
    require_device_contiguous(x, op, "x");
    Tensor<T> y = Tensor<T>::empty(x.shape(), Device::CUDA);
    if (y.numel() > 0) softmax_fwd_raw(x.data(), y.data(), p.outer, p.n, p.inner, log);
    return y;
}

/// Checks the shapes of logits (..., C) and targets (...) as moekd::cross_entropy does; returns C.
template <class T>
int64_t check_cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& targets, double label_smoothing,
                            const char* op) {
    MOEKD_CHECK(logits.defined(), op, ": logits is an undefined tensor");
    MOEKD_CHECK(targets.defined(), op, ": targets is an undefined tensor");
    MOEKD_CHECK(logits.dim() >= 1, op, ": logits must have a class dim, got a scalar");
    const Shape want(logits.shape().begin(), logits.shape().end() - 1);
    MOEKD_CHECK(targets.shape() == want, op, ": targets of shape ", targets.shape(), " for logits of shape ",
                logits.shape(), "; expected targets of shape ", want,
                ". HINT: classes are the last dim: (N, C) with (N), or (B, T, C) with (B, T)");
    const int64_t C = logits.shape()[logits.dim() - 1];
    MOEKD_CHECK(C > 0, op, ": logits of shape ", logits.shape(), " has no classes");
    MOEKD_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
                label_smoothing);
    return C;
}

template <class T>
void check_cross_entropy_devices(const Tensor<T>& logits, const Tensor<int64_t>& targets, const char* op) {
    require_device_contiguous(logits, op, "logits");
    require_device_contiguous(targets, op, "targets");
}

}  // namespace detail

/// softmax(x) along `dim` (negative counts from the end), as moekd::softmax. x: any shape,
/// contiguous, on the GPU; returns a contiguous GPU tensor of x's shape.
template <class T>
Tensor<T> softmax(const Tensor<T>& x, int64_t dim = -1) {
    return detail::softmax_device(x, dim, false);
}

/// log_softmax(x) along `dim`, as moekd::log_softmax.
template <class T>
Tensor<T> log_softmax(const Tensor<T>& x, int64_t dim = -1) {
    return detail::softmax_device(x, dim, true);
}

/// The backward of softmax (log = false) or log_softmax (log = true) along `dim`: the gradient wrt x
/// from the forward's output y and its gradient g (same shape, contiguous, on the GPU). Named
/// softmax_grad, not softmax_backward: cuda::softmax_backward(probs, dprobs) is the router's
/// (cuda/gating.hpp, 2-D, last dim).
template <class T>
Tensor<T> softmax_grad(const Tensor<T>& y, const Tensor<T>& g, int64_t dim = -1, bool log = false) {
    const char* op = log ? "cuda::softmax_grad (log_softmax)" : "cuda::softmax_grad";
    MOEKD_CHECK(y.defined(), op, ": y is an undefined tensor");
    MOEKD_CHECK(g.defined(), op, ": grad is an undefined tensor");
    const moekd::detail::RowPlan p = moekd::detail::plan_rows(y.shape(), dim, op);
    detail::require_same_shape(y, g, op, "y", "grad");
    detail::require_device_contiguous(y, op, "y");
    detail::require_device_contiguous(g, op, "grad");
    Tensor<T> gx = Tensor<T>::empty(y.shape(), Device::CUDA);
    if (gx.numel() > 0) detail::softmax_grad_raw(y.data(), g.data(), gx.data(), p.outer, p.n, p.inner, log);
    return gx;
}

/// Cross-entropy of class logits against integer targets, as moekd::cross_entropy (class dim last,
/// torch's semantics; a Mean over all-ignored targets is 0). logits: (..., C); targets: (...) int64
/// in [0, C) or ignore_index; both contiguous on the GPU. Copies the targets to the host once to
/// validate them (the CPU op's message: value and position) and to count the kept rows.
template <class T>
CrossEntropyForward<T> cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& targets,
                                     int64_t ignore_index = -100, double label_smoothing = 0.0,
                                     Reduction reduction = Reduction::Mean) {
    const char* op = "cuda::cross_entropy";
    const int64_t C = detail::check_cross_entropy(logits, targets, label_smoothing, op);
    detail::check_cross_entropy_devices(logits, targets, op);
    const int64_t N = targets.numel();
    CrossEntropyForward<T> f;
    f.ignore_index = ignore_index;
    f.label_smoothing = label_smoothing;
    f.reduction = reduction;
    // a plain cudaMemcpy rather than copy.hpp's to_cpu: kernels/ops.cu includes this header and has
    // a to_device of its own in moekd::cuda, which copy.hpp's would clash with
    Tensor<int64_t> th = Tensor<int64_t>::empty(targets.shape());
    if (N > 0)
        MOEKD_CUDA_CHECK(cudaMemcpy(th.data(), targets.data(), N * sizeof(int64_t), cudaMemcpyDeviceToHost));
    for (int64_t r = 0; r < N; ++r)
        f.count += moekd::detail::checked_target(th, r, C, ignore_index, targets.shape(), op) >= 0;
    f.rows = Tensor<T>::empty({N}, Device::CUDA);
    f.rmax = Tensor<T>::empty({N}, Device::CUDA);
    f.lsum = Tensor<T>::empty({N}, Device::CUDA);
    const bool reduce = reduction != Reduction::None;
    if (reduce) f.loss = Tensor<T>::empty(Shape{}, Device::CUDA);
    const double divisor = reduction == Reduction::Mean ? static_cast<double>(f.count) : 1.0;
    detail::cross_entropy_fwd_raw(logits.data(), targets.data(), f.rows.data(), f.rmax.data(), f.lsum.data(),
                                  reduce ? f.loss.data() : static_cast<T*>(nullptr), N, C, ignore_index,
                                  static_cast<T>(label_smoothing), divisor);
    if (!reduce) f.loss = f.rows.reshape(targets.shape());
    return f;
}

/// The gradient of grad * loss wrt the logits, from what cross_entropy returned. grad: on the GPU,
/// () for Mean / Sum, shaped like targets for None (torch's upstream gradient).
template <class T>
Tensor<T> cross_entropy_backward(const Tensor<T>& logits, const Tensor<int64_t>& targets,
                                 const CrossEntropyForward<T>& f, const Tensor<T>& grad) {
    const char* op = "cuda::cross_entropy_backward";
    const int64_t C = detail::check_cross_entropy(logits, targets, f.label_smoothing, op);
    const int64_t N = targets.numel();
    detail::require_shape(f.rmax, Shape{N}, op, "forward rmax");
    detail::require_shape(f.lsum, Shape{N}, op, "forward lsum");
    const bool per_row = f.reduction == Reduction::None;
    detail::require_shape(grad, per_row ? targets.shape() : Shape{}, op, "grad");
    detail::check_cross_entropy_devices(logits, targets, op);
    detail::require_device_contiguous(f.rmax, op, "forward rmax");
    detail::require_device_contiguous(f.lsum, op, "forward lsum");
    detail::require_device_contiguous(grad, op, "grad");
    Tensor<T> gx = Tensor<T>::empty(logits.shape(), Device::CUDA);
    // a mean divides by the kept count; with none kept every row is ignored and gets zeros
    const T divisor = f.reduction == Reduction::Mean && f.count > 0 ? static_cast<T>(f.count) : T(1);
    if (N > 0)
        detail::cross_entropy_bwd_raw(logits.data(), targets.data(), f.rmax.data(), f.lsum.data(), grad.data(),
                                      per_row, divisor, gx.data(), N, C, f.ignore_index,
                                      static_cast<T>(f.label_smoothing));
    return gx;
}

/// The same with a host scalar upstream gradient (Mean / Sum only).
template <class T>
Tensor<T> cross_entropy_backward(const Tensor<T>& logits, const Tensor<int64_t>& targets,
                                 const CrossEntropyForward<T>& f, T grad = T(1)) {
    const char* op = "cuda::cross_entropy_backward";
    MOEKD_CHECK(f.reduction != Reduction::None, op,
                ": Reduction::None needs a grad tensor shaped like targets, not a scalar");
    detail::check_cross_entropy(logits, targets, f.label_smoothing, op);  // before any CUDA call
    detail::check_cross_entropy_devices(logits, targets, op);
    Tensor<T> g = Tensor<T>::empty(Shape{}, Device::CUDA);
    MOEKD_CUDA_CHECK(cudaMemcpy(g.data(), &grad, sizeof(T), cudaMemcpyHostToDevice));
    return cross_entropy_backward(logits, targets, f, g);
}

}  // namespace moekd::cuda
