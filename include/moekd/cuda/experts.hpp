// cuda/experts.hpp — the grouped expert FFN of the MoE layer on the GPU: over tokens already sorted
// by expert (cuda::permute_tokens), ys[rows of e] = act(xs[rows of e] @ W1[e]^T + B1[e]) @ W2[e]^T
// + B2[e], one cuBLAS GEMM per expert and layer (cuda::gemm over the expert's row block), and its
// backward. The device twin of moe::expert_ffn with stacked weights (moe/dispatch.hpp).
//
//   cuda::DeviceExpertWeights<float> w{W1, B1, W2, B2};   // (E, F, D), (E, F), (E, D, F), (E, D)
//   auto f = cuda::expert_ffn(xs, plan, w, nn::Activation::GELU);      // f.ys: (S, D)
//   auto g = cuda::expert_ffn_backward(dys, xs, f, plan, w, nn::Activation::GELU);
//
// The activation and its backward are kern::bias_act_row / kern::act_backward_row (dispatch.cuh),
// the functions the CPU op calls, applied one element per thread; bias gradients are column sums
// in double, one thread per column, rows in order (deterministic). Launchers compiled for float
// and double in kernels/experts.cu. No autograd: moe::expert_ffn (moe/dispatch.hpp) is the API
// with autograd; on CUDA tensors it runs the same per-expert GEMMs (the device table's gemm) and
// these raw kernels through the device table. This file stays as the internal launch layer and
// its tests.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"
#include "../nn/layers.hpp"
#include "../ops/view.hpp"
#include "allocator.hpp"
#include "blas.hpp"
#include "dispatch.hpp"
#include "elementwise.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// E experts' weights stacked along a leading E dim, on the GPU, contiguous. Biases may be undefined.
template <class T>
struct DeviceExpertWeights {
    Tensor<T> W1;  // (E, F, D)  fc1 weights (nn::Linear layout: out x in)
    Tensor<T> B1;  // (E, F)     fc1 biases, or undefined
    Tensor<T> W2;  // (E, D, F)  fc2 weights
    Tensor<T> B2;  // (E, D)     fc2 biases, or undefined
};

/// What the forward leaves for the backward.
template <class T>
struct ExpertFfnForward {
    Tensor<T> ys;  // (S, D) output rows
    Tensor<T> H;   // (S, F) fc1 outputs with bias (pre-activation)
    Tensor<T> A;   // (S, F) activations
};

/// Gradients of expert_ffn; an output not asked for is undefined (dB1 / dB2 also when the bias is).
template <class T>
struct ExpertFfnGrads {
    Tensor<T> dxs;            // (S, D)
    Tensor<T> dW1, dB1, dW2, dB2;  // shapes of W1, B1, W2, B2 (zero for experts with no rows)
};

namespace detail {

// Raw launchers (kernels/experts.cu); they throw moekd::Error if a launch fails.
/// h[i] += b[i % F] (b may be null); a[i] = act(h[i]) over n * F elements.
template <class T>
void bias_act_raw(T* h, const T* b, T* a, int64_t n, int64_t F, bool gelu);
/// y[i] += b[i % D] over n * D elements.
template <class T>
void add_bias_raw(T* y, const T* b, int64_t n, int64_t D);
/// da[i] = act'(h[i]) * da[i] over count elements (in place).
template <class T>
void act_backward_raw(const T* h, const T* a, T* da, int64_t count, bool gelu);
/// out[c] = sum over rows r (in order, in double) of x[r * C + c].  x: (n, C), out: (C).
template <class T>
void column_sum_raw(const T* x, int64_t n, int64_t C, T* out);
/// `batch` row-major GEMMs C_i (m, n) = op(A_i) op(B_i) (beta 0), X_i = x + i * stride_x, through
/// cublas{S,D}gemmStridedBatched (operands swapped for column-major, as cuda::gemm does).
template <class T>
void gemm_strided_batched_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                              int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T* c, int64_t ldc,
                              int64_t stride_c, int64_t batch);

/// Checks the stacked weights against E, and returns (F, D).
template <class T>
std::pair<int64_t, int64_t> check_expert_weights(const DeviceExpertWeights<T>& w, int64_t E, const char* op) {
    MOEKD_CHECK(w.W1.defined() && w.W1.dim() == 3 && w.W1.size(0) == E, op, ": W1 ",
                w.W1.defined() ? w.W1.shape() : Shape{}, " must be (E, F, D) with E = ", E, " experts");
    const int64_t F = w.W1.size(1), D = w.W1.size(2);
    require_shape(w.W2, Shape{E, D, F}, op, "W2");
    if (w.B1.defined()) require_shape(w.B1, Shape{E, F}, op, "B1");
    if (w.B2.defined()) require_shape(w.B2, Shape{E, D}, op, "B2");
    require_device_contiguous(w.W1, op, "W1");
    require_device_contiguous(w.W2, op, "W2");
    if (w.B1.defined()) require_device_contiguous(w.B1, op, "B1");
    if (w.B2.defined()) require_device_contiguous(w.B2, op, "B2");
    return {F, D};
}

/// offsets (E + 1): 0 = offsets[0] <= offsets[1] <= ... <= offsets[E] = S.
inline void check_offsets(const std::vector<int64_t>& offsets, int64_t S, const char* op) {
    MOEKD_CHECK(offsets.size() >= 2, op, ": offsets must have E + 1 >= 2 entries, got ", offsets.size());
    MOEKD_CHECK(offsets.front() == 0 && offsets.back() == S, op, ": offsets run from ", offsets.front(), " to ",
                offsets.back(), ", expected 0 to S = ", S, " (the rows of xs)");
    for (size_t e = 0; e + 1 < offsets.size(); ++e)
        MOEKD_CHECK(offsets[e] <= offsets[e + 1], op, ": offsets decrease at expert ", e, " (", offsets[e], " > ",
                    offsets[e + 1], ")");
}

}  // namespace detail

/// The grouped expert FFN over expert-sorted rows. xs: (S, D) on the GPU; offsets: (E + 1) host
/// row offsets (expert e owns rows [offsets[e], offsets[e + 1])). Returns ys and the saved H, A.
template <class T>
ExpertFfnForward<T> expert_ffn(const Tensor<T>& xs, const std::vector<int64_t>& offsets,
                               const DeviceExpertWeights<T>& w, nn::Activation act = nn::Activation::ReLU) {
    const char* op = "cuda::expert_ffn";
    MOEKD_CHECK(xs.defined() && xs.dim() == 2, op, ": xs ", xs.defined() ? xs.shape() : Shape{}, " must be (S, D)");
    const int64_t S = xs.size(0), E = static_cast<int64_t>(offsets.size()) - 1;
    detail::check_offsets(offsets, S, op);
    const auto [F, D] = detail::check_expert_weights(w, E, op);
    MOEKD_CHECK(xs.size(1) == D, op, ": xs ", xs.shape(), " has width ", xs.size(1), ", the experts' d_model is ", D);
    detail::require_device_contiguous(xs, op, "xs");
    const bool gelu = act == nn::Activation::GELU;
    ExpertFfnForward<T> f{Tensor<T>::empty({S, D}, Device::CUDA), Tensor<T>::empty({S, F}, Device::CUDA),
                          Tensor<T>::empty({S, F}, Device::CUDA)};
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = offsets[e], n = offsets[e + 1] - r0;
        if (n == 0) continue;
        const Tensor<T> x = xs.narrow(0, r0, n), w1 = w.W1.select(0, e), w2 = w.W2.select(0, e);
        Tensor<T> h = f.H.narrow(0, r0, n), a = f.A.narrow(0, r0, n), y = f.ys.narrow(0, r0, n);
        gemm(x, w1, h, false, true);  // (n, D) @ (D, F)
        detail::bias_act_raw(h.data(), w.B1.defined() ? w.B1.data() + e * F : static_cast<const T*>(nullptr), a.data(),
                             n, F, gelu);
        gemm(a, w2, y, false, true);  // (n, F) @ (F, D)
        if (w.B2.defined()) detail::add_bias_raw(y.data(), w.B2.data() + e * D, n, D);
    }
    return f;
}

/// The same over the row blocks of a device dispatch plan.
template <class T>
ExpertFfnForward<T> expert_ffn(const Tensor<T>& xs, const DeviceDispatchPlan& plan, const DeviceExpertWeights<T>& w,
                               nn::Activation act = nn::Activation::ReLU) {
    return expert_ffn(xs, plan.host_offsets, w, act);
}

/// Backward of expert_ffn, per expert (dY = its rows of dys):
///   dB2 = colsum(dY), dW2 = dY^T A, dA = dY W2, dH = dA * act'(H), dB1 = colsum(dH),
///   dW1 = dH^T X, dX = dH W1.
/// dys, xs: (S, D); f: what the forward returned; need_dxs / need_weights select the outputs.
template <class T>
ExpertFfnGrads<T> expert_ffn_backward(const Tensor<T>& dys, const Tensor<T>& xs, const ExpertFfnForward<T>& f,
                                      const std::vector<int64_t>& offsets, const DeviceExpertWeights<T>& w,
                                      nn::Activation act = nn::Activation::ReLU, bool need_dxs = true,
                                      bool need_weights = true) {
    const char* op = "cuda::expert_ffn_backward";
    MOEKD_CHECK(xs.defined() && xs.dim() == 2, op, ": xs ", xs.defined() ? xs.shape() : Shape{}, " must be (S, D)");
    const int64_t S = xs.size(0), E = static_cast<int64_t>(offsets.size()) - 1;
    detail::check_offsets(offsets, S, op);
    const auto [F, D] = detail::check_expert_weights(w, E, op);
    detail::require_shape(xs, Shape{S, D}, op, "xs");
    detail::require_shape(dys, Shape{S, D}, op, "dys");
    detail::require_shape(f.H, Shape{S, F}, op, "forward H");
    detail::require_shape(f.A, Shape{S, F}, op, "forward A");
    detail::require_device_contiguous(dys, op, "dys");
    detail::require_device_contiguous(xs, op, "xs");
    detail::require_device_contiguous(f.H, op, "forward H");
    detail::require_device_contiguous(f.A, op, "forward A");
    const bool gelu = act == nn::Activation::GELU;
    ExpertFfnGrads<T> g;
    auto zeros = [](const Shape& s) {
        Tensor<T> t = Tensor<T>::empty(s, Device::CUDA);
        if (t.numel() > 0) MOEKD_CUDA_CHECK(cudaMemset(t.data(), 0, sizeof(T) * t.numel()));
        return t;
    };
    if (need_dxs) g.dxs = zeros({S, D});  // rows of every expert are written; zeros keep S = 0 tidy
    if (need_weights) {
        g.dW1 = zeros(w.W1.shape());
        g.dW2 = zeros(w.W2.shape());
        if (w.B1.defined()) g.dB1 = zeros(w.B1.shape());
        if (w.B2.defined()) g.dB2 = zeros(w.B2.shape());
    }
    if (!need_dxs && !need_weights) return g;
    Tensor<T> dA = Tensor<T>::empty({S, F}, Device::CUDA);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = offsets[e], n = offsets[e + 1] - r0;
        if (n == 0) continue;
        const Tensor<T> dy = dys.narrow(0, r0, n), x = xs.narrow(0, r0, n), a = f.A.narrow(0, r0, n);
        const Tensor<T> h = f.H.narrow(0, r0, n), w1 = w.W1.select(0, e), w2 = w.W2.select(0, e);
        Tensor<T> da = dA.narrow(0, r0, n);
        if (need_weights) {
            if (g.dB2.defined()) detail::column_sum_raw(dy.data(), n, D, g.dB2.data() + e * D);
            Tensor<T> dw2 = g.dW2.select(0, e);
            gemm(dy, a, dw2, true, false);  // (D, n) @ (n, F)
        }
        gemm(dy, w2, da);  // (n, D) @ (D, F)
        detail::act_backward_raw(h.data(), a.data(), da.data(), n * F, gelu);
        if (need_weights) {
            if (g.dB1.defined()) detail::column_sum_raw(da.data(), n, F, g.dB1.data() + e * F);
            Tensor<T> dw1 = g.dW1.select(0, e);
            gemm(da, x, dw1, true, false);  // (F, n) @ (n, D)
        }
        if (need_dxs) {
            Tensor<T> dx = g.dxs.narrow(0, r0, n);
            gemm(da, w1, dx);  // (n, F) @ (F, D)
        }
    }
    return g;
}

/// The same over the row blocks of a device dispatch plan.
template <class T>
ExpertFfnGrads<T> expert_ffn_backward(const Tensor<T>& dys, const Tensor<T>& xs, const ExpertFfnForward<T>& f,
                                      const DeviceDispatchPlan& plan, const DeviceExpertWeights<T>& w,
                                      nn::Activation act = nn::Activation::ReLU, bool need_dxs = true,
                                      bool need_weights = true) {
    return expert_ffn_backward(dys, xs, f, plan.host_offsets, w, act, need_dxs, need_weights);
}

}  // namespace moekd::cuda
