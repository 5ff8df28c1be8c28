// reference.hpp — the ground truth the MoE tests compare the layer to: every kept assignment's
// expert FFN evaluated by plain loops in double, times its gate, summed over the token's choices.
// Slow on purpose (no GEMM, no threads, no device); for tests only.
#pragma once

#include <cmath>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "expert_ffn_device.hpp"
#include "plan.hpp"

namespace moekd::moe {

namespace detail {

/// The ground truth: every kept assignment's expert FFN evaluated by plain loops in double, times
/// its gate, summed over the token's choices. x: (N, D), gates: (N, k) -> (N, D). No autograd.
template <class T>
Tensor<T> moe_reference(const Tensor<T>& x, const DispatchPlan& plan, const Tensor<T>& gates,
                        const ExpertWeights<T>& w, nn::Activation act) {
    NoGrad ng;
    const int64_t N = plan.num_tokens, k = plan.top_k, D = w.d_model(), F = w.ffn_dim();
    const std::vector<T> xv = x.to_vector(), gv = gates.to_vector();
    auto vec = [&](const std::vector<Tensor<T>>& list, const Tensor<T>& stacked, int64_t e) {
        const Tensor<T> t = w.stacked() ? (stacked.defined() ? stacked.select(0, e) : Tensor<T>()) : list[e];
        return t.defined() ? t.to_vector() : std::vector<T>();
    };
    Tensor<T> y = Tensor<T>::zeros({N, D});
    std::vector<double> acc(D), h(F);
    for (int64_t t = 0; t < N; ++t) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < k; ++j) {
            if (plan.slot_of[t * k + j] < 0) continue;
            const int64_t e = plan.expert_idx[t * k + j];
            const auto w1 = vec(w.w1, w.W1, e), b1 = vec(w.b1, w.B1, e), w2 = vec(w.w2, w.W2, e), b2 = vec(w.b2, w.B2, e);
            for (int64_t f = 0; f < F; ++f) {
                double s = b1.empty() ? 0.0 : double(b1[f]);
                for (int64_t d = 0; d < D; ++d) s += double(w1[f * D + d]) * double(xv[t * D + d]);
                h[f] = act == nn::Activation::ReLU ? (s > 0 ? s : 0.0) : 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0)));
            }
            for (int64_t d = 0; d < D; ++d) {
                double s = b2.empty() ? 0.0 : double(b2[d]);
                for (int64_t f = 0; f < F; ++f) s += double(w2[d * F + f]) * h[f];
                acc[d] += double(gv[t * k + j]) * s;
            }
        }
        for (int64_t d = 0; d < D; ++d) y.data()[t * D + d] = static_cast<T>(acc[d]);
    }
    return y;
}

}  // namespace detail
}  // namespace moekd::moe
