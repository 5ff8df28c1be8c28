// expert_ffn_device.hpp — expert_ffn's device half (CUDA tensors, through the device table of
// core/backend.hpp), and the expert weights both halves take.
//
// Per expert with rows, over its contiguous row block: the table's GEMM (its bf16 GEMM inside a bf16
// autocast scope, forward and backward) for each layer with the bias / activation kernels between
// (H, the pre-activation, is kept for both activations); with stacked weights and the same rows in
// every expert, each layer's E GEMMs are one strided-batched call. Backward per expert as on the
// CPU; weight gradients are fresh tensors returned to the engine, bias gradients are column sums
// in double in row order (deterministic).
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"
#include "../ops/matmul.hpp"
#include "device.hpp"
#include "plan.hpp"

namespace moekd::moe {

// ---- expert weights ------------------------------------------------------------------------------
/// The weights of E expert FFNs, either one tensor set per expert (nn::Linear layout, as the
/// MoE layer's `experts.<i>.fc1.weight`) or stacked along a leading E dim. Biases may be absent.
///   per expert: w1[e] (F, D), b1[e] (F), w2[e] (D, F), b2[e] (D)
///   stacked:    W1 (E, F, D), B1 (E, F), W2 (E, D, F), B2 (E, D)
template <class T>
struct ExpertWeights {
    std::vector<Tensor<T>> w1, b1, w2, b2;
    Tensor<T> W1, B1, W2, B2;

    bool stacked() const { return W1.defined(); }
    int64_t num_experts() const { return stacked() ? W1.size(0) : static_cast<int64_t>(w1.size()); }
    int64_t d_model() const { return stacked() ? W1.size(2) : w1.at(0).size(1); }
    int64_t ffn_dim() const { return stacked() ? W1.size(1) : w1.at(0).size(0); }
};

namespace detail {

template <class T>
using CMat = moekd::detail::MatRef<const T>;
template <class T>
using MMat = moekd::detail::MatRef<T>;

/// Raw pointers to expert e's weights (which: 0 w1, 1 b1, 2 w2, 3 b2; null for an absent bias)
/// in contiguous copies of expert_ffn's weight inputs (per expert: 4 E, stacked: 4).
template <class T>
struct ExpertPtrs {
    std::vector<Tensor<T>> held;
    bool stacked = false;
    int64_t F = 0, D = 0;
    int64_t per(int which) const { return which == 0 || which == 2 ? F * D : which == 1 ? F : D; }
    const T* get(int64_t e, int which) const {
        const Tensor<T>& h = stacked ? held[which] : held[e * 4 + which];
        return h.defined() ? h.data() + (stacked ? e * per(which) : 0) : nullptr;
    }
};

/// The rows every expert's block has when the weights are stacked and all E > 1 blocks have the
/// same n > 0 rows (then each layer's E GEMMs are one cuBLAS strided-batched call), else -1.
template <class T>
int64_t uniform_block_rows(const DispatchPlan& plan, const ExpertPtrs<T>& W) {
    const int64_t E = plan.num_experts, n = plan.offsets[1] - plan.offsets[0];
    if (!W.stacked || E < 2 || n == 0) return -1;
    for (int64_t e = 1; e < E; ++e)
        if (plan.offsets[e + 1] - plan.offsets[e] != n) return -1;
    return n;
}

/// dev_gemm for an autocast-aware product (the expert GEMMs): bf16 inside a bf16 scope (float),
/// as gemm_auto on the CPU. The router's logits call dev_gemm: they stay fp32.
template <class T>
void dev_gemm_auto(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                   int64_t ldb, T* c, int64_t ldc, const char* op) {
    if (m == 0 || n == 0) return;
    if (k == 0) return dev_gemm<T>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, op);
    moekd::detail::device_gemm_auto<T>(op, Shape{m, n})(ta, tb, m, n, k, T(1), a, lda, b, ldb, T(0), c, ldc);
}

/// C_e = op(A_e) op(B_e) for every expert e (row-major, (m, n) each, A_e = a + e * sa ...): one
/// strided-batched GEMM of the table.
template <class T>
void dev_gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t sa,
                      const T* b, int64_t ldb, int64_t sb, T* c, int64_t ldc, int64_t sc, int64_t batch,
                      const char* op) {
    const auto fn = moekd::detail::device_bf16<T>() ? dev_ops<T>().moe_gemm_strided_batched_bf16
                                                    : dev_ops<T>().moe_gemm_strided_batched;
    moekd::detail::device_entry(fn, op, Shape{batch, m, n})(ta, tb, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc,
                                                            batch);
}

/// expert_ffn's device half: per expert with rows, over its contiguous row block, the table's
/// GEMM for each layer with the bias / activation kernels between (H, the pre-activation, is kept
/// for both activations); with stacked weights and the same rows in every expert, each layer's
/// GEMMs are one strided-batched call. Backward per expert as on the CPU; weight gradients are
/// fresh tensors returned to the engine (a per-expert expert with no rows gets none, a stacked one
/// zeros), bias gradients are column sums in double in row order.
template <class T>
Tensor<T> expert_ffn_device(const Tensor<T>& xs, const PlanPtr& plan, const std::vector<Tensor<T>>& inputs,
                            const ExpertPtrs<T>& W, bool gelu) {
    const char* op = "expert_ffn";
    require_device_plan(*plan, xs, op, "xs");
    const int64_t E = plan->num_experts, S = plan->rows(), F = W.F, D = W.D;
    const Device dev = xs.device();
    auto& o = dev_ops<T>();
    const Tensor<T> xc = moekd::detail::contiguous_data(xs);
    Tensor<T> H = Tensor<T>::empty({S, F}, dev), A = Tensor<T>::empty({S, F}, dev), ys = Tensor<T>::empty({S, D}, dev);
    const int64_t nb = uniform_block_rows(*plan, W);
    if (nb > 0)  // H_e = X_e W1_e^T for every e at once
        dev_gemm_batched<T>(false, true, nb, F, D, xc.data(), D, nb * D, W.get(0, 0), D, F * D, H.data(), F, nb * F, E, op);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
        if (n == 0) continue;
        if (nb < 0) dev_gemm_auto<T>(false, true, n, F, D, xc.data() + r0 * D, D, W.get(e, 0), D, H.data() + r0 * F, F, op);
        moekd::detail::device_entry(o.moe_bias_act, op, xs.shape())(H.data() + r0 * F, W.get(e, 1), A.data() + r0 * F,
                                                                    n, F, gelu);
        if (nb < 0) dev_gemm_auto<T>(false, true, n, D, F, A.data() + r0 * F, F, W.get(e, 2), F, ys.data() + r0 * D, D, op);
    }
    if (nb > 0)  // Y_e = A_e W2_e^T
        dev_gemm_batched<T>(false, true, nb, D, F, A.data(), F, nb * F, W.get(0, 2), F, D * F, ys.data(), D, nb * D, E, op);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
        if (const T* b2 = W.get(e, 3); b2 && n > 0)
            moekd::detail::device_entry(o.moe_add_bias, op, xs.shape())(ys.data() + r0 * D, b2, n, D);
    }
    return record<T>(ys, "expert_ffn", inputs, [plan, inputs, W, gelu, prec = moekd::detail::tl_precision,
                                                 xd = xc.detach(), H, A](const Tensor<T>& g) {
        moekd::detail::PrecisionGuard pg(prec);  // the backward's GEMMs in the forward's precision
        const char* op = "expert_ffn";
        auto& o = dev_ops<T>();
        const Tensor<T> dy = moekd::detail::contiguous_data(g);
        const Device dev = dy.device();
        const int64_t E = plan->num_experts, S = plan->rows(), F = W.F, D = W.D;
        std::vector<Tensor<T>> grads(inputs.size());
        for (size_t i = 1; i < inputs.size(); ++i) {
            if (!inputs[i].defined() || !needs_grad(inputs[i])) continue;
            if (!W.stacked && plan->kept[(i - 1) / 4] == 0) continue;  // as the CPU: no gradient for an idle expert
            grads[i] = W.stacked ? Tensor<T>::zeros(inputs[i].shape(), dev) : Tensor<T>::empty(inputs[i].shape(), dev);
        }
        auto out = [&](int64_t e, int which) -> T* {
            Tensor<T>& t = grads[W.stacked ? 1 + which : 1 + e * 4 + which];
            return t.defined() ? t.data() + (W.stacked ? e * W.per(which) : 0) : nullptr;
        };
        const bool need_x = needs_grad(inputs[0]);
        if (need_x) grads[0] = Tensor<T>::empty({S, D}, dev);
        Tensor<T> dA;
        if (const int64_t nb = uniform_block_rows(*plan, W); nb > 0) {  // every GEMM strided-batched over E
            T *dw1 = out(0, 0), *db1 = out(0, 1), *dw2 = out(0, 2), *db2 = out(0, 3);
            for (int64_t e = 0; e < E && db2; ++e)
                moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(dy.data() + e * nb * D, nb, D, db2 + e * D);
            if (dw2)  // dW2_e = dY_e^T A_e
                dev_gemm_batched<T>(true, false, D, F, nb, dy.data(), D, nb * D, A.data(), F, nb * F, dw2, F, D * F, E, op);
            if (!(dw1 || db1 || need_x)) return grads;
            dA = Tensor<T>::empty({S, F}, dev);  // dA_e = dY_e W2_e, then dH in place
            dev_gemm_batched<T>(false, false, nb, F, D, dy.data(), D, nb * D, W.get(0, 2), F, D * F, dA.data(), F, nb * F,
                                E, op);
            moekd::detail::device_entry(o.moe_act_backward, op, g.shape())(H.data(), A.data(), dA.data(), S * F, gelu);
            for (int64_t e = 0; e < E && db1; ++e)
                moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(dA.data() + e * nb * F, nb, F, db1 + e * F);
            if (dw1)  // dW1_e = dH_e^T X_e
                dev_gemm_batched<T>(true, false, F, D, nb, dA.data(), F, nb * F, xd.data(), D, nb * D, dw1, D, F * D, E, op);
            if (need_x)  // dX_e = dH_e W1_e
                dev_gemm_batched<T>(false, false, nb, D, F, dA.data(), F, nb * F, W.get(0, 0), D, F * D, grads[0].data(), D,
                                    nb * D, E, op);
            return grads;
        }
        for (int64_t e = 0; e < E; ++e) {
            const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
            if (n == 0) continue;
            const T* gy = dy.data() + r0 * D;
            const T* a = A.data() + r0 * F;
            if (T* db2 = out(e, 3)) moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(gy, n, D, db2);
            if (T* dw2 = out(e, 2)) dev_gemm_auto<T>(true, false, D, F, n, gy, D, a, F, dw2, F, op);  // dY^T A
            T *dw1 = out(e, 0), *db1 = out(e, 1);
            if (!(dw1 || db1 || need_x)) continue;
            if (!dA.defined()) dA = Tensor<T>::empty({S, F}, dev);
            T* da = dA.data() + r0 * F;
            dev_gemm_auto<T>(false, false, n, F, D, gy, D, W.get(e, 2), F, da, F, op);  // dA = dY W2
            moekd::detail::device_entry(o.moe_act_backward, op, g.shape())(H.data() + r0 * F, a, da, n * F, gelu);
            if (db1) moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(da, n, F, db1);
            if (dw1) dev_gemm_auto<T>(true, false, F, D, n, da, F, xd.data() + r0 * D, D, dw1, D, op);  // dH^T X
            if (need_x)
                dev_gemm_auto<T>(false, false, n, D, F, da, F, W.get(e, 0), D, grads[0].data() + r0 * D, D, op);  // dH W1
        }
        return grads;
    });
}

}  // namespace detail

}  // namespace moekd::moe
