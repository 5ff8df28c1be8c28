// cuda/kl.hpp — the fused symmetric KL of TSJT (eq. 3) on the GPU: KL(p_a || p_b) + KL(p_b || p_a)
// averaged over non-pad tokens, p = softmax of the logits over a (large) vocabulary, forward and
// backward, without materialising any log-softmax. moekd::symmetric_kl (losses/kd.hpp) runs these
// kernels itself, with autograd, when its operands are on CUDA (through the device table, which
// kernels/kl.cu fills from the raw launchers declared here); the functions below are the same
// kernels without autograd, kept for code that drives them directly. A warp (rows up to 1024) or
// a block per row computes the row maxima and the four sums of kern::kl_row_sums and finishes
// them with kern::kl_row_finish; the backward applies kern::kl_sym_grad_elem per element
// (kernels/kl.cuh). The loss is reduced over rows in a fixed order, in double.
//
//   auto f = cuda::symmetric_kl_forward(la, lb, pad);          // la, lb: (N, V) or (B, T, V)
//   T loss = cuda::to_cpu(f.loss).item();
//   auto g = cuda::symmetric_kl_backward(la, lb, pad, f, T(1));   // g.da, g.db: like la
//
// No autograd (use moekd::symmetric_kl on CUDA tensors for that). Launchers compiled for float
// and double in kernels/kl.cu.
#pragma once

#include <cstdint>

#include "../core/tensor.hpp"
#include "../kernels/kl.cuh"
#include "allocator.hpp"
#include "elementwise.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// What symmetric_kl_forward returns and the backward needs.
template <class T>
struct SymmetricKlForward {
    Tensor<T> loss;   // () on the GPU: mean over kept tokens of the row's symmetric KL (0 if none)
    Tensor<T> stats;  // (rows, 6) on the GPU: kern::KlRowStats<T> per row (garbage for pad rows)
    int64_t count = 0;  // kept (non-pad) tokens, on the host
};

template <class T>
struct SymmetricKlGrads {
    Tensor<T> da, db;  // like the logits; undefined for a side not asked for (detached)
};

namespace detail {

// Raw launchers (kernels/kl.cu); they throw moekd::Error if a launch fails.
/// stats[r] for every non-pad row; loss[0] = sum over kept rows (fixed order, double) / count;
/// count[0] = kept rows. a, b: (rows, n); mask: (rows) or null.
template <class T>
void kl_forward_raw(const T* a, const T* b, const uint8_t* mask, T* stats, T* loss, int64_t* count, int64_t rows,
                    int64_t n);
/// ga / gb (either may be null) = g[0] / count[0] * d(symmetric KL of the row)/d logits; zero for
/// pad rows and when count[0] == 0. g, count: device pointers (DeviceOps::symmetric_kl_backward).
template <class T>
void kl_sym_backward_raw(const T* a, const T* b, const uint8_t* mask, const T* stats, const T* g, const int64_t* count,
                         T* ga, T* gb, int64_t rows, int64_t n);
/// Soft distillation's forward and backward (DeviceOps::soft_distill, soft_distill_backward).
template <class T>
void soft_distill_raw(const T* student, const T* teacher, double temperature, T* stats, T* loss, int64_t rows,
                      int64_t n);
template <class T>
void soft_distill_backward_raw(const T* student, const T* teacher, double temperature, const T* stats, const T* g,
                               T* gs, int64_t rows, int64_t n);

/// Checks the pair of logit tensors and the mask as moekd::symmetric_kl does; returns V.
template <class T>
int64_t check_kl_inputs(const Tensor<T>& a, const Tensor<T>& b, const Tensor<uint8_t>& pad, const char* op) {
    MOEKD_CHECK(a.defined() && b.defined(), op, ": logits_a and logits_b must be defined tensors");
    MOEKD_CHECK(a.dim() >= 2, op, ": logits_a must be (N, V) or (B, T, V), got shape ", a.shape());
    MOEKD_CHECK(a.shape() == b.shape(), op, ": logits_a of shape ", a.shape(), " and logits_b of shape ", b.shape(),
                " must have the same shape");
    const int64_t V = a.shape()[a.dim() - 1];
    MOEKD_CHECK(V > 0, op, ": logits_a of shape ", a.shape(), " has an empty vocabulary dim");
    if (pad.defined()) {
        const Shape lead(a.shape().begin(), a.shape().end() - 1);
        MOEKD_CHECK(pad.shape() == lead, op, ": pad_mask of shape ", pad.shape(), " for logits of shape ", a.shape(),
                    "; expected ", lead, " (one byte per token, 1 = padding)");
    }
    require_device_contiguous(a, op, "logits_a");
    require_device_contiguous(b, op, "logits_b");
    if (pad.defined()) require_device_contiguous(pad, op, "pad_mask");
    return V;
}

}  // namespace detail

/// Forward of the symmetric KL. logits_a, logits_b: same shape (..., V), contiguous, on the GPU;
/// pad_mask: uint8 of the leading shape on the GPU (nonzero = padding) or undefined. Copies the
/// kept-token count to the host (one synchronisation).
template <class T>
SymmetricKlForward<T> symmetric_kl_forward(const Tensor<T>& logits_a, const Tensor<T>& logits_b,
                                           const Tensor<uint8_t>& pad_mask = Tensor<uint8_t>()) {
    static_assert(sizeof(kern::KlRowStats<T>) == 6 * sizeof(T), "KlRowStats must be six packed T");
    const char* op = "cuda::symmetric_kl_forward";
    const int64_t V = detail::check_kl_inputs(logits_a, logits_b, pad_mask, op);
    const int64_t rows = logits_a.numel() / V;
    SymmetricKlForward<T> f;
    f.loss = Tensor<T>::empty(Shape{}, Device::CUDA);
    f.stats = Tensor<T>::empty({rows, 6}, Device::CUDA);
    Tensor<int64_t> count = Tensor<int64_t>::empty({1}, Device::CUDA);
    detail::kl_forward_raw(logits_a.data(), logits_b.data(), pad_mask.defined() ? pad_mask.data() : nullptr,
                           f.stats.data(), f.loss.data(), count.data(), rows, V);
    MOEKD_CUDA_CHECK(cudaMemcpy(&f.count, count.data(), sizeof(int64_t), cudaMemcpyDeviceToHost));
    return f;
}

/// Backward of the symmetric KL: the gradients of grad * loss wrt the two logit tensors (each side
/// only when asked for: need_a = false is a detached logits_a). Same inputs as the forward.
template <class T>
SymmetricKlGrads<T> symmetric_kl_backward(const Tensor<T>& logits_a, const Tensor<T>& logits_b,
                                          const Tensor<uint8_t>& pad_mask, const SymmetricKlForward<T>& f,
                                          T grad = T(1), bool need_a = true, bool need_b = true) {
    const char* op = "cuda::symmetric_kl_backward";
    const int64_t V = detail::check_kl_inputs(logits_a, logits_b, pad_mask, op);
    const int64_t rows = logits_a.numel() / V;
    detail::require_shape(f.stats, Shape{rows, 6}, op, "forward stats");
    detail::require_device_contiguous(f.stats, op, "forward stats");
    SymmetricKlGrads<T> g;
    if (need_a) g.da = Tensor<T>::empty(logits_a.shape(), Device::CUDA);
    if (need_b) g.db = Tensor<T>::empty(logits_b.shape(), Device::CUDA);
    if (!need_a && !need_b) return g;
    // the kernel takes the upstream gradient and the count on the device (as the op does) and
    // writes zeros everywhere when no token is kept
    const Tensor<T> gd = Tensor<T>::from_vector({grad}, Shape{}).to(Device::CUDA);
    const Tensor<int64_t> cd = Tensor<int64_t>::from_vector({f.count}, Shape{1}).to(Device::CUDA);
    detail::kl_sym_backward_raw(logits_a.data(), logits_b.data(), pad_mask.defined() ? pad_mask.data() : nullptr,
                                f.stats.data(), gd.data(), cd.data(), need_a ? g.da.data() : static_cast<T*>(nullptr),
                                need_b ? g.db.data() : static_cast<T*>(nullptr), rows, V);
    return g;
}

}  // namespace moekd::cuda
