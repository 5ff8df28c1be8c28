// balance.hpp — the auxiliary losses that keep a router's load even, and the per-layer load
// statistics a trainer logs.
//   switch_balance_loss      E * sum_i m_i P_i        (Switch eq. 4; GShard's l_aux with the
//                                                      first choice), m_i = fraction of tokens
//                                                      whose first choice is i (no gradient),
//                                                      P_i = mean router probability of i
//   topk_balance_loss        the same with m_i = fraction of the k * N choices that are i
//                                                     (every top-k choice counts: OneS eq. 3's
//                                                      "index vector from top-K", L. 55-67)
//   kl_uniform_balance_loss  KL(U || P) = sum_i (1/E) log((1/E) / P_i)   (TCD eq. 4-5)
//   router_z_loss            mean_t logsumexp(logits_t)^2                 (ST-MoE)
// Pad tokens (pad mask 1) are left out of every mean and count. With no real token at all the
// losses are 0. Compositions of ops over two small fused ones with closed-form backward:
// mean_router_prob (a weighted column mean) and router_logsumexp (kern::row_logsumexp).
//
// Device half (CUDA probabilities / logits): the two fused ones run kernels of the device table
// (a block per expert column, a fixed-order tree in double; a thread per token row), their
// backward and the rest are ops that run on the device. The small integer inputs go through the
// host: the pad mask (N bytes: the real-token count and weights) and, for the first-choice
// fraction m (E counts, no gradient), a host copy of the (N, k) experts.
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "../ops/matmul.hpp"
#include "../ops/reduce.hpp"
#include "../core/parallel.hpp"
#include "../kernels/gating.cuh"
#include "../nn/layers.hpp"
#include "../ops/matmul.hpp"
#include "plan.hpp"

namespace moekd::moe {

/// Which balance loss an MoE layer adds to its aux loss.
enum class BalanceLoss { None, Switch, SwitchAllChoices, KLUniform };

namespace detail {
/// (N) 1 for real tokens, 0 for pad tokens; `real` gets the count of real tokens.
template <class T>
Tensor<T> real_token_weights(const Tensor<uint8_t>& pad, int64_t N, int64_t& real) {
    MOEKD_CHECK(pad.numel() == N, "balance: pad mask ", pad.shape(), " has ", pad.numel(), " elements for ", N, " tokens");
    const Tensor<uint8_t> pc = pad.device() == Device::CPU ? moekd::detail::contiguous_data(pad)
                                                           : host_copy(pad, "balance", "pad mask");
    Tensor<T> w = Tensor<T>::empty({N});
    real = 0;
    for (int64_t t = 0; t < N; ++t) {
        w.data()[t] = pc.data()[t] ? T(0) : T(1);
        real += pc.data()[t] ? 0 : 1;
    }
    return w;
}
template <class T>
void check_probs(const Tensor<T>& probs, const char* op) {
    MOEKD_CHECK(probs.defined() && probs.dim() == 2 && probs.size(1) >= 1, op, ": router probabilities ",
                probs.defined() ? probs.shape() : Shape{}, " must be (N, E)");
}

/// mean_router_prob's device half: P by the masked column-mean kernel; backward
/// dprobs = w (g / real) as a broadcast product (the CPU's arithmetic, on the device).
template <class T>
Tensor<T> mean_router_prob_device(const Tensor<T>& probs, const Tensor<uint8_t>& pad) {
    const int64_t N = probs.size(0), E = probs.size(1);
    const Device dev = probs.device();
    int64_t real = N;
    const Tensor<T> w = pad.defined() ? real_token_weights<T>(pad, N, real).to(dev) : Tensor<T>::ones({N}, dev);
    if (real == 0) return Tensor<T>::zeros({E}, dev);
    const Tensor<uint8_t> pd = pad.defined() ? on_device(pad, dev, "mean_router_prob", "pad mask") : Tensor<uint8_t>();
    const Tensor<T> pc = moekd::detail::contiguous_data(probs);
    Tensor<T> P = Tensor<T>::empty({E}, dev);
    moekd::detail::device_entry(dev_ops<T>().moe_masked_column_mean, "mean_router_prob", probs.shape())(
        pc.data(), pad.defined() ? pd.data() : nullptr, P.data(), N, E, real);
    return record<T>(P, "router_prob_mean", {probs}, [w, real, N, E](const Tensor<T>& g) {
        const Tensor<T> ge = moekd::detail::contiguous_data(g).reshape({1, E}) / static_cast<T>(real);
        return std::vector<Tensor<T>>{mul(w.reshape({N, 1}), ge)};
    });
}
}  // namespace detail

/// P (E): the mean router probability of each expert over real tokens.   probs: (N, E)
template <class T>
Tensor<T> mean_router_prob(const Tensor<T>& probs, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    detail::check_probs(probs, "mean_router_prob");
    if (probs.device() != Device::CPU) return detail::mean_router_prob_device(probs, pad);
    const int64_t N = probs.size(0), E = probs.size(1);
    int64_t real = N;
    const Tensor<T> w = pad.defined() ? detail::real_token_weights<T>(pad, N, real) : Tensor<T>::ones({N});
    if (real == 0) return Tensor<T>::zeros({E});
    // P[e] = sum_t w[t] probs[t, e] / real in double: partial sums over fixed chunks of rows (in
    // parallel), added in chunk order. Backward: dprobs[t, e] = w[t] g[e] / real.
    using Acc = moekd::detail::Acc<T>;
    const Tensor<T> pc = moekd::detail::contiguous_data(probs);
    const int64_t chunk = 1024, chunks = (N + chunk - 1) / chunk;
    std::vector<Acc> part(static_cast<size_t>(chunks * E), Acc(0));
    moekd::detail::parallel_chunks(N, chunk, [&](int64_t lo, int64_t hi) {
        Acc* __restrict__ acc = part.data() + (lo / chunk) * E;
        const T* __restrict__ p = pc.data();
        const T* __restrict__ wt = w.data();
        for (int64_t t = lo; t < hi; ++t)
            if (wt[t] != T(0))
                for (int64_t e = 0; e < E; ++e) acc[e] += static_cast<Acc>(p[t * E + e]);
    });
    Tensor<T> P = Tensor<T>::empty({E});
    for (int64_t e = 0; e < E; ++e) {
        Acc s = 0;
        for (int64_t c = 0; c < chunks; ++c) s += part[c * E + e];
        P.data()[e] = static_cast<T>(s / static_cast<double>(real));
    }
    return record<T>(P, "router_prob_mean", {probs}, [w, real](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = w.size(0), E = gc.size(0);
        Tensor<T> dp = Tensor<T>::empty({N, E});
        std::vector<T> ge(static_cast<size_t>(E));  // g / real once: w is 0 or 1, so w g / real = w (g / real)
        for (int64_t e = 0; e < E; ++e) ge[e] = gc.data()[e] / static_cast<T>(real);
        moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
            for (int64_t t = lo; t < hi; ++t) {
                const T wt = w.data()[t];
                T* row = dp.data() + t * E;
                for (int64_t e = 0; e < E; ++e) row[e] = wt * ge[e];
            }
        });
        return std::vector<Tensor<T>>{dp};
    });
}

namespace detail {
/// m (E): the share of each expert among the counted choices of the real tokens: the first
/// choice of each (first_only) or all k of them. Counted on host copies (m has no gradient); m
/// goes to experts' device. `what` names the caller in errors.
template <class T>
Tensor<T> choice_share(const Tensor<int64_t>& experts, int64_t num_experts, const Tensor<uint8_t>& pad,
                       bool first_only, const char* what) {
    MOEKD_CHECK(experts.dim() == 2 && experts.size(1) >= 1, what, ": experts ", experts.shape(), " must be (N, k)");
    const int64_t N = experts.size(0), k = experts.size(1), counted = first_only ? 1 : k;
    const bool host = experts.device() == Device::CPU;
    const Tensor<int64_t> ic = host ? moekd::detail::contiguous_data(experts) : host_copy(experts, what, "experts");
    const Tensor<uint8_t> pc = !pad.defined() ? Tensor<uint8_t>()
                               : pad.device() == Device::CPU ? moekd::detail::contiguous_data(pad)
                                                             : host_copy(pad, what, "pad mask");
    MOEKD_CHECK(!pad.defined() || pad.numel() == N, what, ": pad mask ", pad.shape(), " for ", N, " tokens");
    std::vector<int64_t> c(num_experts, 0);
    int64_t real = 0;
    for (int64_t t = 0; t < N; ++t) {
        if (pad.defined() && pc.data()[t]) continue;
        for (int64_t j = 0; j < counted; ++j) {
            const int64_t e = ic.data()[t * k + j];
            MOEKD_CHECK(e >= 0 && e < num_experts, what, ": expert ", e, " of token ", t, " out of range [0, ",
                        num_experts, ")");
            ++c[e];
        }
        ++real;
    }
    Tensor<T> m = Tensor<T>::zeros({num_experts});
    for (int64_t e = 0; e < num_experts && real > 0; ++e)
        m.data()[e] = static_cast<T>(double(c[e]) / double(real * counted));
    return host ? m : m.to(experts.device());
}

/// E * sum_i m_i P_i with m from choice_share (first choices, or all k): the Switch loss and
/// its every-choice form. `what` names the public loss in errors.
template <class T>
Tensor<T> switch_form_loss(const Tensor<T>& probs, const Tensor<int64_t>& experts, const Tensor<uint8_t>& pad,
                           bool first_only, const char* what) {
    check_probs(probs, what);
    MOEKD_CHECK(experts.dim() == 2 && experts.size(0) == probs.size(0), what, ": experts ", experts.shape(),
                " for probs ", probs.shape());
    const int64_t E = probs.size(1);
    const Tensor<T> m = choice_share<T>(experts, E, pad, first_only, first_only ? "first_choice_fraction" : "choice_fraction");
    return sum(mul(m, mean_router_prob(probs, pad))) * static_cast<T>(E);
}
}  // namespace detail

/// m (E): the fraction of real tokens whose first choice (experts[:, 0]) is each expert. No history.
template <class T>
Tensor<T> first_choice_fraction(const Tensor<int64_t>& experts, int64_t num_experts,
                                const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    return detail::choice_share<T>(experts, num_experts, pad, true, "first_choice_fraction");
}

/// Switch / GShard load-balancing loss E * sum_i m_i P_i (1 when perfectly balanced).
/// probs: (N, E) with history; experts: (N, k) (only the first choice counts) -> scalar.
template <class T>
Tensor<T> switch_balance_loss(const Tensor<T>& probs, const Tensor<int64_t>& experts,
                              const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    return detail::switch_form_loss(probs, experts, pad, true, "switch_balance_loss");
}

/// m (E): the fraction of the k choices of all real tokens (experts (N, k)) that are each expert,
/// counted before capacity. No history.
template <class T>
Tensor<T> choice_fraction(const Tensor<int64_t>& experts, int64_t num_experts,
                          const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    return detail::choice_share<T>(experts, num_experts, pad, false, "choice_fraction");
}

/// E * sum_i m_i P_i with every top-k choice counted in m (choice_fraction); equal to
/// switch_balance_loss for k = 1, 1 when perfectly balanced. probs: (N, E) with history.
template <class T>
Tensor<T> topk_balance_loss(const Tensor<T>& probs, const Tensor<int64_t>& experts,
                            const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    return detail::switch_form_loss(probs, experts, pad, false, "topk_balance_loss");
}

namespace detail {
/// switch_balance_loss with the first-choice fraction m (E) given, on probs' device: the MoE
/// layer's device path takes m from its dispatch plan's host mirror (load_stats) instead of
/// copying the routing back. The same ops as switch_balance_loss, so the same bits.
template <class T>
Tensor<T> switch_balance_loss_with(const Tensor<T>& probs, const Tensor<T>& m, const Tensor<uint8_t>& pad) {
    check_probs(probs, "switch_balance_loss");
    return sum(mul(m, mean_router_prob(probs, pad))) * static_cast<T>(probs.size(1));
}
}  // namespace detail

/// KL(uniform || P) = sum_i (1/E) log((1/E) / P_i) = -log E - mean_i log P_i (0 when balanced).
/// probs: (N, E) -> scalar.
template <class T>
Tensor<T> kl_uniform_balance_loss(const Tensor<T>& probs, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    detail::check_probs(probs, "kl_uniform_balance_loss");
    const int64_t N = probs.size(0), E = probs.size(1);
    int64_t real = N;
    if (pad.defined()) detail::real_token_weights<T>(pad, N, real);
    if (real == 0) return Tensor<T>::scalar(T(0));
    return neg(mean(log(mean_router_prob(probs, pad)))) - static_cast<T>(std::log(static_cast<double>(E)));
}

/// logsumexp over each row.   logits: (N, E) -> (N). Backward: g[t] * softmax(logits[t]).
template <class T>
Tensor<T> router_logsumexp(const Tensor<T>& logits) {
    detail::check_probs(logits, "router_logsumexp");
    const int64_t N = logits.size(0), E = logits.size(1);
    const Tensor<T> lc = moekd::detail::contiguous_data(logits);
    if (logits.device() != Device::CPU) {  // a thread per row; backward g * exp(l - lse) by device ops
        Tensor<T> out = Tensor<T>::empty({N}, logits.device());
        moekd::detail::device_entry(detail::dev_ops<T>().moe_row_logsumexp, "router_logsumexp", logits.shape())(
            lc.data(), out.data(), N, E);
        return record<T>(out, "router_logsumexp", {logits}, [ld = lc.detach(), od = out.detach()](const Tensor<T>& g) {
            const int64_t N = ld.size(0);
            const Tensor<T> gc = moekd::detail::contiguous_data(g).reshape({N, 1});
            return std::vector<Tensor<T>>{mul(gc, exp(sub(ld, od.reshape({N, 1}))))};
        });
    }
    Tensor<T> out = Tensor<T>::empty({N});
    moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) out.data()[t] = kern::row_logsumexp(lc.data() + t * E, E);
    });
    return record<T>(out, "router_logsumexp", {logits}, [ld = lc.detach(), od = out.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = ld.size(0), E = ld.size(1);
        Tensor<T> dl = Tensor<T>::empty({N, E});
        moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
            for (int64_t t = lo; t < hi; ++t)
                for (int64_t e = 0; e < E; ++e)
                    dl.data()[t * E + e] = gc.data()[t] * std::exp(ld.data()[t * E + e] - od.data()[t]);
        });
        return std::vector<Tensor<T>>{dl};
    });
}

/// Router z-loss: mean over real tokens of logsumexp(logits)^2.   logits: (N, E) -> scalar.
template <class T>
Tensor<T> router_z_loss(const Tensor<T>& logits, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    const Tensor<T> lse = router_logsumexp(logits);
    const int64_t N = logits.size(0);
    if (!pad.defined()) return N == 0 ? Tensor<T>::scalar(T(0)) : mean(mul(lse, lse));
    int64_t real = 0;
    const Tensor<T> w = detail::real_token_weights<T>(pad, N, real);
    if (real == 0) return Tensor<T>::scalar(T(0));
    return sum(mul(mul(lse, lse), w.to(lse.device()))) / static_cast<T>(real);
}

// ---- load statistics ------------------------------------------------------------------------------
/// What one forward of an MoE layer did with its tokens (counts exclude pad tokens).
struct LoadStats {
    int64_t num_experts = 0, top_k = 1;
    int64_t num_tokens = 0;                       // real tokens routed
    int64_t num_pad = 0;                          // pad tokens, never routed
    int64_t capacity = -1;                        // rows per expert; -1: dropless
    std::vector<int64_t> tokens_per_expert;       // (E) assignments routed to each expert, before capacity
    std::vector<int64_t> kept_per_expert;         // (E) after capacity
    std::vector<int64_t> first_choice_per_expert; // (E) tokens whose first choice it is
    int64_t dropped = 0;                          // assignments over capacity
    double dropped_fraction = 0;                  // dropped / (num_tokens * k)
    int64_t tokens_fully_dropped = 0;             // tokens none of whose choices was kept
    double balance_loss = 0;                      // value of the balance loss (unweighted), if computed
    double z_loss = 0;                            // value of the z-loss (unweighted), if computed

    std::string str() const {
        std::ostringstream os;
        os << "tokens=" << num_tokens << " pad=" << num_pad << " capacity=" << capacity << " dropped=" << dropped
           << " (" << dropped_fraction * 100 << "%) per_expert=[";
        for (size_t e = 0; e < tokens_per_expert.size(); ++e) os << (e ? " " : "") << tokens_per_expert[e];
        os << "] balance=" << balance_loss << " z=" << z_loss;
        return os.str();
    }
};

/// The statistics of a dispatch plan (losses left at 0 for the caller to fill in).
inline LoadStats load_stats(const DispatchPlan& p) {
    LoadStats s;
    s.num_experts = p.num_experts;
    s.top_k = p.top_k;
    s.num_tokens = p.num_tokens - p.num_pad;
    s.num_pad = p.num_pad;
    s.capacity = p.capacity;
    s.tokens_per_expert = p.counts;
    s.kept_per_expert = p.kept;
    s.first_choice_per_expert.assign(p.num_experts, 0);
    for (int64_t t = 0; t < p.num_tokens; ++t) {
        if (p.position[t * p.top_k] < 0) continue;  // pad
        ++s.first_choice_per_expert[p.expert_idx[t * p.top_k]];
        bool any = false;
        for (int64_t j = 0; j < p.top_k; ++j) any = any || p.slot_of[t * p.top_k + j] >= 0;
        s.tokens_fully_dropped += any ? 0 : 1;
    }
    s.dropped = p.dropped();
    s.dropped_fraction = p.routed() > 0 ? double(s.dropped) / double(p.routed()) : 0.0;
    return s;
}

}  // namespace moekd::moe
