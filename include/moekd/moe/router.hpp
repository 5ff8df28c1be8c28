// router.hpp — the Mixture-of-Experts router: which experts each token goes to, and with what
// weight. A linear map D -> E (the MoE layer owns it as `gate.weight`), then softmax over the E
// experts and top-k selection:
//   top-1 (Switch):   gate = p_i(x), output = p_i(x) * E_i(x)
//   top-2:            gates renormalised over the chosen two, p_i / (p_i + p_j)
//   general top-k, renormalised or not (RouterConfig::normalize_gates).
// When renormalised gates meet capacity dropping, the order is RouterConfig::
// normalize_gate_prob_before_dropping, named and defaulted as fairseq's Top2Gate:
//   false (default, fairseq): renormalise AFTER dropping, over the choices the token kept: a token
//         whose second choice was dropped gets gate 1 on its first; one that lost both gets 0.
//   true  (GShard):           renormalise over the k chosen BEFORE dropping: the token above keeps
//         p_i / (p_i + p_j) on its first choice, and its output shrinks by that factor.
// Without drops (dropless, or nothing over capacity) the two orders give the same bits.
// Ties go to the lower expert index. Training-only jitter from an explicit Generator: Gaussian
// noise of std 1/E on the logits (OneS eq. 2) and multiplicative input jitter U[1-eps, 1+eps]
// on the router's input (Switch). Capacity: ceil(k * tokens * factor / E) rows per expert, with
// separate train / eval factors, or dropless. Router logits of a routed token that are NaN or inf
// are an Error naming the layer and the token, never routed silently; pad tokens are not routed
// and their logits are not checked.
//
// Optimised CPU code: one fused pass per token (kern::softmax_topk_row, the same function the
// GPU kernel runs), recorded as two autograd nodes: "router_softmax" (logits -> probs) and
// "router_gates" (probs -> gates), each with a closed-form backward.
//
// Device half (CUDA tensors): the same row functions in the kernels of kernels/gating.cuh through
// the device table (one thread per token), the logits' GEMMs through the table's gemm. The NaN /
// inf check runs on the device and brings its per-token result (N bytes) to the host, which names
// the layer and the token as on the CPU. Jitter noise is drawn on the host from the layer's
// Generator and copied over, so both devices see the same noise.
#pragma once

#include <algorithm>
#include <optional>
#include <string>

#include "../ops/elementwise.hpp"
#include "../ops/select.hpp"
#include "../core/parallel.hpp"
#include "../kernels/gating.cuh"
#include "../nn/layers.hpp"
#include "../ops/matmul.hpp"
#include "plan.hpp"

namespace moekd::moe {

/// What the router does. Checked by validate() (the MoE layer calls it at construction).
struct RouterConfig {
    int64_t num_experts = 8;              // E
    int64_t top_k = 1;                    // k, in [1, E]
    std::optional<bool> normalize_gates;  // renormalise the k gates to sum 1; default: k > 1 (GShard)
    // When renormalising: false (fairseq's default) over the choices left after capacity dropping
    // (combine_gates); true (GShard) over the k chosen, before dropping.
    bool normalize_gate_prob_before_dropping = false;
    double capacity_factor_train = 1.25;  // capacity = ceil(k * tokens * factor / E); tokens = non-pad
    double capacity_factor_eval = 2.0;
    bool dropless = false;                // no capacity: every assignment is kept
    bool logit_noise = false;             // training: logits += N(0, (1/E)^2)   (OneS eq. 2)
    double input_jitter = 0.0;            // training: router input *= U[1-eps, 1+eps]   (Switch)
    bool bias = false;                    // logits = W_r x + b_r (TCD eq. 1); fairseq, Switch, GShard: none

    bool normalize() const { return normalize_gates.value_or(top_k > 1); }
};

/// Throws moekd::Error naming the offending argument (and the layer) when the config is unusable.
inline void validate(const RouterConfig& c, const std::string& layer = "router") {
    MOEKD_CHECK(c.num_experts >= 1, layer, ": num_experts must be >= 1, got ", c.num_experts);
    MOEKD_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, layer, ": top_k = ", c.top_k, " must be in [1, num_experts = ",
                c.num_experts, "]", c.top_k > c.num_experts ? " (top_k exceeds the number of experts)" : "");
    if (!c.dropless) {
        MOEKD_CHECK(c.capacity_factor_train > 0, layer, ": capacity_factor_train = ", c.capacity_factor_train,
                    " must be > 0. HINT: set dropless = true for no capacity limit");
        MOEKD_CHECK(c.capacity_factor_eval > 0, layer, ": capacity_factor_eval = ", c.capacity_factor_eval,
                    " must be > 0. HINT: set dropless = true for no capacity limit");
    }
    MOEKD_CHECK(c.input_jitter >= 0 && c.input_jitter < 1, layer, ": input_jitter = ", c.input_jitter,
                " must be in [0, 1)");
}

/// Rows per expert for `tokens` routed tokens: ceil(k * tokens * factor / E); -1 when dropless.
inline int64_t capacity_for(const RouterConfig& c, int64_t tokens, bool training) {
    if (c.dropless) return -1;
    return kern::expert_capacity(tokens, c.top_k, training ? c.capacity_factor_train : c.capacity_factor_eval,
                                 c.num_experts);
}

/// The router's decision for N tokens.
template <class T>
struct Routing {
    Tensor<T> logits;           // (N, E) as routed (after noise), with history
    Tensor<T> probs;            // (N, E) softmax of logits, with history
    Tensor<T> gates;            // (N, k) with history
    Tensor<int64_t> experts;    // (N, k) chosen experts, best first
};

namespace detail {
/// router_logits' device half: out = x wg^T, dx = g wg, dwg = g^T x, each one GEMM of the table.
template <class T>
Tensor<T> router_logits_device(const Tensor<T>& x, const Tensor<T>& wg) {
    const int64_t N = x.size(0), D = x.size(1), E = wg.size(0);
    const Tensor<T> xc = moekd::detail::contiguous_data(x), wc = moekd::detail::contiguous_data(wg);
    Tensor<T> out = Tensor<T>::empty({N, E}, x.device());
    dev_gemm<T>(false, true, N, E, D, xc.data(), D, wc.data(), D, out.data(), E, "router_logits");
    const bool gx = needs_grad(x), gw = needs_grad(wg);
    return record<T>(out, "router_logits", {x, wg}, [gx, gw, xd = xc.detach(), wd = wc.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = xd.size(0), D = xd.size(1), E = wd.size(0);
        Tensor<T> dx = gx ? Tensor<T>::empty({N, D}, xd.device()) : Tensor<T>();
        Tensor<T> dw = gw ? Tensor<T>::empty({E, D}, xd.device()) : Tensor<T>();
        if (gx) dev_gemm<T>(false, false, N, D, E, gc.data(), E, wd.data(), D, dx.data(), D, "router_logits");
        if (gw) dev_gemm<T>(true, false, E, D, N, gc.data(), E, xd.data(), D, dw.data(), D, "router_logits");
        return std::vector<Tensor<T>>{dx, dw};
    });
}
}  // namespace detail

/// The router's logits = x @ wg^T.   x: (N, D), wg: (E, D) -> (N, E). Like linear() without bias,
/// but the GEMMs run in row blocks on moe::num_threads() threads (single-threaded BLAS inside), as
/// the rest of the MoE layer does: no BLAS thread pool wakes up between the layer's parts.
/// Backward: dx = g @ wg (row blocks), dwg = g^T @ x (column blocks of D).
template <class T>
Tensor<T> router_logits(const Tensor<T>& x, const Tensor<T>& wg) {
    MOEKD_CHECK(x.dim() == 2 && wg.dim() == 2 && x.size(1) == wg.size(1), "router_logits: x ", x.shape(),
                " and gate weight ", wg.shape(), " must be (N, D) and (E, D)");
    detail::same_device(x, wg, "router_logits", "x", "gate weight");
    if (x.device() != Device::CPU) return detail::router_logits_device(x, wg);
    const int64_t N = x.size(0), D = x.size(1), E = wg.size(0);
    const Tensor<T> xc = moekd::detail::contiguous_data(x), wc = moekd::detail::contiguous_data(wg);
    Tensor<T> out = Tensor<T>::empty({N, E});
    using CM = moekd::detail::MatRef<const T>;
    using MM = moekd::detail::MatRef<T>;
    moekd::detail::parallel_chunks(
        N, 512,
        [&](int64_t lo, int64_t hi) {
            moekd::detail::gemm(T(1), CM{xc.data() + lo * D, hi - lo, D, D, 1}, CM{wc.data(), E, D, D, 1}.t(), T(0),
                                MM{out.data() + lo * E, hi - lo, E, E, 1});
        },
        true);
    const bool gx = needs_grad(x), gw = needs_grad(wg);
    return record<T>(out, "router_logits", {x, wg}, [gx, gw, xd = xc.detach(), wd = wc.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = xd.size(0), D = xd.size(1), E = wd.size(0);
        Tensor<T> dx = gx ? Tensor<T>::empty({N, D}) : Tensor<T>();
        Tensor<T> dw = gw ? Tensor<T>::empty({E, D}) : Tensor<T>();
        if (gx)
            moekd::detail::parallel_chunks(
                N, 512,
                [&](int64_t lo, int64_t hi) {
                    moekd::detail::gemm(T(1), CM{gc.data() + lo * E, hi - lo, E, E, 1}, CM{wd.data(), E, D, D, 1}, T(0),
                                        MM{dx.data() + lo * D, hi - lo, D, D, 1});
                },
                true);
        if (gw)
            moekd::detail::parallel_chunks(
                D, 64,
                [&](int64_t lo, int64_t hi) {
                    moekd::detail::gemm(T(1), CM{gc.data(), N, E, E, 1}.t(), CM{xd.data() + lo, N, hi - lo, D, 1}, T(0),
                                        MM{dw.data() + lo, E, hi - lo, D, 1});
                },
                true);
        return std::vector<Tensor<T>>{dx, dw};
    });
}

/// The router's logits with a bias: x @ wg^T + bg, bg (E) (TCD eq. 1's W_r x + b_r); an undefined
/// bg is no bias.
template <class T>
Tensor<T> router_logits(const Tensor<T>& x, const Tensor<T>& wg, const Tensor<T>& bg) {
    if (!bg.defined()) return router_logits(x, wg);
    MOEKD_CHECK(bg.dim() == 1 && wg.dim() == 2 && bg.size(0) == wg.size(0), "router_logits: gate bias ", bg.shape(),
                " must be (E) for gate weight ", wg.shape());
    detail::same_device(x, bg, "router_logits", "x", "gate bias");
    return add(router_logits(x, wg), bg);
}

namespace detail {

/// Records gates (N, k) as a function of probs (N, E) at fixed indices idx (N, k).
template <class T>
Tensor<T> record_gates(Tensor<T> gates, const Tensor<T>& probs, const Tensor<int64_t>& idx, bool normalize) {
    if (probs.device() != Device::CPU) {  // idx: a device tensor the caller owns (made by the op)
        const Tensor<T> pd = moekd::detail::contiguous_data(probs).detach();
        return record<T>(gates, "router_gates", {probs}, [pd, idx, normalize, gd = gates.detach()](const Tensor<T>& g) {
            const Tensor<T> gc = moekd::detail::contiguous_data(g);
            const int64_t N = pd.size(0), E = pd.size(1), k = idx.size(1);
            Tensor<T> dp = Tensor<T>::empty({N, E}, pd.device());
            moekd::detail::device_entry(dev_ops<T>().moe_topk_gates_backward, "router_gates", g.shape())(
                pd.data(), idx.data(), gd.data(), gc.data(), dp.data(), N, E, k, normalize);
            return std::vector<Tensor<T>>{dp};
        });
    }
    const Tensor<T> pd = moekd::detail::contiguous_data(probs).detach();
    return record<T>(gates, "router_gates", {probs}, [pd, idx = moekd::detail::index_copy_of(idx), normalize, gd = gates.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = pd.size(0), E = pd.size(1), k = idx.size(1);
        Tensor<T> dp = Tensor<T>::empty({N, E});
        moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
            std::fill_n(dp.data() + lo * E, (hi - lo) * E, T(0));
            for (int64_t t = lo; t < hi; ++t)
                kern::topk_gates_backward_row(pd.data() + t * E, idx.data() + t * k, gd.data() + t * k,
                                              gc.data() + t * k, k, normalize, dp.data() + t * E);
        });
        return std::vector<Tensor<T>>{dp};
    });
}

}  // namespace detail

namespace detail {
/// softmax_topk's device half: the fused kernel, then the same two nodes, whose backward is the
/// table's softmax backward (kernels/softmax.cuh) and the gates' backward kernel.
template <class T>
Routing<T> softmax_topk_device(const Tensor<T>& logits, int64_t k, bool normalize) {
    const int64_t N = logits.size(0), E = logits.size(1);
    const Device dev = logits.device();
    const Tensor<T> lc = moekd::detail::contiguous_data(logits);
    Tensor<T> probs = Tensor<T>::empty({N, E}, dev), gates = Tensor<T>::empty({N, k}, dev);
    Tensor<int64_t> idx = Tensor<int64_t>::empty({N, k}, dev);
    moekd::detail::device_entry(dev_ops<T>().moe_softmax_topk, "softmax_topk", logits.shape())(
        lc.data(), probs.data(), idx.data(), gates.data(), N, E, k, normalize);
    Routing<T> r;
    r.logits = logits;
    r.experts = idx;
    r.probs = record<T>(probs, "router_softmax", {logits}, [pd = probs.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        Tensor<T> dl = Tensor<T>::empty(pd.shape(), pd.device());
        if (dl.numel() > 0)
            moekd::detail::device_entry(dev_ops<T>().softmax_backward, "router_softmax", g.shape())(
                pd.data(), gc.data(), dl.data(), pd.size(0), pd.size(1), 1, false);
        return std::vector<Tensor<T>>{dl};
    });
    r.gates = record_gates(gates, r.probs, idx, normalize);
    return r;
}
}  // namespace detail

/// Fused softmax over E + top-k + gates.   logits: (N, E) -> Routing (probs (N, E), gates and
/// experts (N, k)). normalize: gates divided by their sum over the chosen k.
template <class T>
Routing<T> softmax_topk(const Tensor<T>& logits, int64_t k, bool normalize) {
    MOEKD_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "softmax_topk: logits ", logits.shape(), " must be (N, E)");
    const int64_t N = logits.size(0), E = logits.size(1);
    MOEKD_CHECK(k >= 1 && k <= E, "softmax_topk: top_k = ", k, " must be in [1, E = ", E, "] for logits ", logits.shape());
    if (logits.device() != Device::CPU) return detail::softmax_topk_device(logits, k, normalize);
    const Tensor<T> lc = moekd::detail::contiguous_data(logits);
    Tensor<T> probs = Tensor<T>::empty({N, E}), gates = Tensor<T>::empty({N, k});
    Tensor<int64_t> idx = Tensor<int64_t>::empty({N, k});
    moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t)
            kern::softmax_topk_row(lc.data() + t * E, E, k, normalize, probs.data() + t * E, idx.data() + t * k,
                                   gates.data() + t * k);
    });
    Routing<T> r;
    r.logits = logits;
    r.experts = idx;
    r.probs = record<T>(probs, "router_softmax", {logits}, [pd = probs.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = pd.size(0), E = pd.size(1);
        Tensor<T> dl = Tensor<T>::empty({N, E});
        moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
            for (int64_t t = lo; t < hi; ++t)
                kern::softmax_backward_row(pd.data() + t * E, gc.data() + t * E, dl.data() + t * E, E);
        });
        return std::vector<Tensor<T>>{dl};
    });
    r.gates = detail::record_gates(gates, r.probs, idx, normalize);
    return r;
}

/// Gates at given experts (fixed routing): gates[t, j] = probs[t, idx[t, j]], renormalised over
/// the k when `normalize`.   probs: (N, E), idx: (N, k) distinct per row -> (N, k)
template <class T>
Tensor<T> topk_gates(const Tensor<T>& probs, const Tensor<int64_t>& idx, bool normalize) {
    MOEKD_CHECK(probs.dim() == 2 && idx.dim() == 2 && idx.size(0) == probs.size(0) && idx.size(1) >= 1 &&
                    idx.size(1) <= probs.size(1),
                "topk_gates: probs ", probs.shape(), " and experts ", idx.shape(), " must be (N, E) and (N, k), k <= E");
    const int64_t N = probs.size(0), E = probs.size(1), k = idx.size(1);
    detail::same_device(probs, idx, "topk_gates", "probs", "experts");
    // on the device: the checks below read a host copy of the (N, k) experts
    const Tensor<int64_t> ic = probs.device() == Device::CPU ? moekd::detail::index_copy_of(idx)
                                                             : detail::host_copy(idx, "topk_gates", "experts");
    moekd::detail::check_indices(ic, E, "topk_gates", "expert", "experts");
    for (int64_t t = 0; t < N; ++t)
        for (int64_t j = 1; j < k; ++j)
            for (int64_t i = 0; i < j; ++i)
                MOEKD_CHECK(ic.data()[t * k + i] != ic.data()[t * k + j], "topk_gates: token ", t, " chooses expert ",
                            ic.data()[t * k + j], " twice");
    const Tensor<T> pc = moekd::detail::contiguous_data(probs);
    if (probs.device() != Device::CPU) {  // the checked copy goes back: the op owns its indices
        const Tensor<int64_t> id = ic.to(probs.device());
        Tensor<T> gates = Tensor<T>::empty({N, k}, probs.device());
        moekd::detail::device_entry(detail::dev_ops<T>().moe_topk_gates, "topk_gates", probs.shape())(
            pc.data(), id.data(), gates.data(), N, E, k, normalize);
        return detail::record_gates(gates, probs, id, normalize);
    }
    Tensor<T> gates = Tensor<T>::empty({N, k});
    for (int64_t t = 0; t < N; ++t)
        kern::topk_gates_row(pc.data() + t * E, ic.data() + t * k, k, normalize, gates.data() + t * k);
    return detail::record_gates(gates, probs, ic, normalize);
}

namespace detail {
/// kept_gates' device half (probs contiguous on the device; the plan's device routing, slots and
/// positions, which equal the experts given: checked by the caller).
template <class T>
Tensor<T> kept_gates_device(const Tensor<T>& probs, const Tensor<T>& pc, const PlanPtr& plan) {
    require_device_plan(*plan, pc, "kept_gates", "probs");
    const int64_t N = plan->num_tokens, k = plan->top_k, E = plan->num_experts;
    Tensor<T> gates = Tensor<T>::empty({N, k}, pc.device());
    moekd::detail::device_entry(dev_ops<T>().moe_kept_gates, "kept_gates", pc.shape())(
        pc.data(), plan->dev(plan->dev_expert_idx), plan->dev(plan->dev_slot_of), plan->dev(plan->dev_position),
        gates.data(), N, E, k);
    return record<T>(gates, "router_kept_gates", {probs}, [plan, pd = pc.detach(), gd = gates.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = plan->num_tokens, k = plan->top_k, E = plan->num_experts;
        Tensor<T> dp = Tensor<T>::empty({N, E}, pd.device());
        moekd::detail::device_entry(dev_ops<T>().moe_kept_gates_backward, "kept_gates", g.shape())(
            pd.data(), plan->dev(plan->dev_expert_idx), plan->dev(plan->dev_slot_of), plan->dev(plan->dev_position),
            gd.data(), gc.data(), dp.data(), N, E, k);
        return std::vector<Tensor<T>>{dp};
    });
}
}  // namespace detail

/// Gates renormalised after capacity dropping (fairseq's normalize_gate_prob_before_dropping =
/// false): gates[t, j] = probs[t, idx[t, j]] / (sum of probs[t, idx[t, i]] over the choices i of
/// token t that the plan kept) for a kept choice, 0 for a dropped one (kern::kept_gates_row). Pad
/// tokens keep all k. probs: (N, E), idx: (N, k) the plan's routing -> (N, k), with history.
template <class T>
Tensor<T> kept_gates(const Tensor<T>& probs, const Tensor<int64_t>& idx, const PlanPtr& plan) {
    MOEKD_CHECK(plan, "kept_gates: no dispatch plan");
    const int64_t N = plan->num_tokens, k = plan->top_k, E = plan->num_experts;
    MOEKD_CHECK(probs.dim() == 2 && probs.size(0) == N && probs.size(1) == E && idx.dim() == 2 &&
                    idx.size(0) == N && idx.size(1) == k,
                "kept_gates: probs ", probs.shape(), " and experts ", idx.shape(), " must be (N, E) = (", N, ", ", E,
                ") and (N, k) = (", N, ", ", k, "), as the dispatch plan");
    detail::same_device(probs, idx, "kept_gates", "probs", "experts");
    // on the device: compared through a host copy of the (N, k) experts
    const Tensor<int64_t> ic = probs.device() == Device::CPU ? moekd::detail::index_copy_of(idx)
                                                             : detail::host_copy(idx, "kept_gates", "experts");
    MOEKD_CHECK(std::equal(ic.data(), ic.data() + N * k, plan->expert_idx.data()),
                "kept_gates: experts differ from the routing the dispatch plan was built from");
    const Tensor<T> pc = moekd::detail::contiguous_data(probs);
    if (probs.device() != Device::CPU) return detail::kept_gates_device(probs, pc, plan);
    Tensor<T> gates = Tensor<T>::empty({N, k});
    moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t)
            kern::kept_gates_row(pc.data() + t * E, ic.data() + t * k, plan->slot_of.data() + t * k,
                                 plan->position.data() + t * k, k, gates.data() + t * k);
    });
    return record<T>(gates, "router_kept_gates", {probs}, [plan, pd = pc.detach(), ic, gd = gates.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = pd.size(0), E = pd.size(1), k = ic.size(1);
        Tensor<T> dp = Tensor<T>::empty({N, E});
        moekd::detail::parallel_chunks(N, 1024, [&](int64_t lo, int64_t hi) {
            std::fill_n(dp.data() + lo * E, (hi - lo) * E, T(0));
            for (int64_t t = lo; t < hi; ++t)
                kern::kept_gates_backward_row(pd.data() + t * E, ic.data() + t * k, plan->slot_of.data() + t * k,
                                              plan->position.data() + t * k, gd.data() + t * k, gc.data() + t * k, k,
                                              dp.data() + t * E);
        });
        return std::vector<Tensor<T>>{dp};
    });
}

/// The gates the experts' outputs are combined with, for routing r dispatched by `plan` under
/// config c: r.gates, except when c renormalises (normalize()) after dropping
/// (!normalize_gate_prob_before_dropping, the default) and the plan dropped something: then
/// kept_gates(r.probs, r.experts, plan). (With nothing dropped both are the same bits.)
template <class T>
Tensor<T> combine_gates(const Routing<T>& r, const PlanPtr& plan, const RouterConfig& c) {
    MOEKD_CHECK(plan, "combine_gates: no dispatch plan");
    if (!c.normalize() || c.normalize_gate_prob_before_dropping || plan->dropped() == 0) return r.gates;
    return kept_gates(r.probs, r.experts, plan);
}

namespace detail {
/// check_router_logits' device half: a kernel flags each token's row finite or not; the N flags
/// (and the offending row, if any) come to the host, which reports as the CPU does.
template <class T>
bool check_router_logits_device(const Tensor<T>& logits, const std::string& layer, const Tensor<uint8_t>& pad) {
    const Tensor<T> lc = moekd::detail::contiguous_data(logits);
    const int64_t N = lc.size(0), E = lc.size(1);
    Tensor<uint8_t> pc;
    if (pad.defined()) {
        MOEKD_CHECK(pad.numel() == N, layer, ": pad mask ", pad.shape(), " has ", pad.numel(), " elements for ", N,
                    " tokens");
        pc = host_copy(pad, "check_router_logits", "pad mask");
    }
    if (N == 0 || E == 0) return false;
    Tensor<uint8_t> ok = Tensor<uint8_t>::empty({N}, lc.device());
    moekd::detail::device_entry(dev_ops<T>().moe_rows_finite, "check_router_logits", lc.shape())(lc.data(), N, E,
                                                                                                 ok.data());
    const Tensor<uint8_t> okh = ok.to(Device::CPU);
    bool pad_bad = false;
    for (int64_t t = 0; t < N; ++t) {
        if (okh.data()[t]) continue;
        if (pad.defined() && pc.data()[t]) {
            pad_bad = true;
            continue;
        }
        const Tensor<T> rowt = lc.detach().narrow(0, t, 1).to(Device::CPU);
        const T* row = rowt.data();
        int64_t e = 0;
        while (e < E && row[e] - row[e] == T(0)) ++e;
        throw Error(msg(layer, ": router logits are not finite: token ", t, " of ", N, " has logit ", row[e],
                        " for expert ", e, " of ", E,
                        ". HINT: the layer input or the gate weights hold NaN/inf (diverged training? lower the ",
                        "learning rate, add the router z-loss, or check the input)"));
    }
    return pad_bad;
}
}  // namespace detail

/// Throws an Error naming `layer` when a router logit of a routed token is NaN or inf (with the
/// first offending token, its value and expert, and a hint). Pad tokens (pad[t] != 0) are not
/// routed, so their logits are not an error: returns true when some pad token's logits are NaN or
/// inf (the caller must keep them out of everything that sums over tokens: checked_router_logits).
/// logits: (N, E); pad: N elements or undefined.
template <class T>
bool check_router_logits(const Tensor<T>& logits, const std::string& layer,
                         const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    if (logits.device() != Device::CPU) return detail::check_router_logits_device(logits, layer, pad);
    const Tensor<T> lc = moekd::detail::contiguous_data(logits);
    const int64_t N = lc.size(0), E = lc.size(1), chunk = 1024;
    Tensor<uint8_t> pc;
    if (pad.defined()) {
        MOEKD_CHECK(pad.numel() == N, layer, ": pad mask ", pad.shape(), " has ", pad.numel(), " elements for ", N,
                    " tokens");
        pc = moekd::detail::contiguous_data(pad);
    }
    const uint8_t* pp = pad.defined() ? pc.data() : nullptr;
    std::vector<int64_t> first_bad((N + chunk - 1) / chunk, N);  // per chunk, scanned in parallel
    std::vector<uint8_t> pad_bad(first_bad.size(), 0);
    moekd::detail::parallel_chunks(N, chunk, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
            if (kern::row_all_finite(lc.data() + t * E, E)) continue;
            if (pp && pp[t]) {
                pad_bad[lo / chunk] = 1;
                continue;
            }
            first_bad[lo / chunk] = t;
            return;
        }
    });
    for (int64_t t : first_bad) {
        if (t == N) continue;
        const T* row = lc.data() + t * E;
        int64_t e = 0;
        while (e < E && row[e] - row[e] == T(0)) ++e;
        throw Error(msg(layer, ": router logits are not finite: token ", t, " of ", N, " has logit ", row[e],
                        " for expert ", e, " of ", E,
                        ". HINT: the layer input or the gate weights hold NaN/inf (diverged training? lower the ",
                        "learning rate, add the router z-loss, or check the input)"));
    }
    return std::find(pad_bad.begin(), pad_bad.end(), uint8_t(1)) != pad_bad.end();
}

/// The router's logits of x (N, D) with gate weight wg (E, D), checked (check_router_logits: an
/// Error naming `layer` and the token for a NaN / inf logit of a routed token). When a pad token's
/// logits are NaN or inf (its input row is, e.g. an attention row with every key masked), the pad
/// rows of x are replaced by 0 and the logits recomputed, so nothing non-finite of a token that is
/// not routed reaches the probabilities, the aux loss or the gate weight's gradient.
/// pad: N elements (1 = pad) or undefined.
/// bg: the router bias b_r (E) added to every token's logits, or undefined for none.
template <class T>
Tensor<T> checked_router_logits(const Tensor<T>& x, const Tensor<T>& wg, const std::string& layer,
                                const Tensor<uint8_t>& pad = Tensor<uint8_t>(), const Tensor<T>& bg = Tensor<T>()) {
    Tensor<T> logits = router_logits(x, wg, bg);
    if (!check_router_logits(logits, layer, pad)) return logits;
    const Tensor<uint8_t> pm = x.device() == Device::CPU ? moekd::detail::contiguous_data(pad)
                                                         : detail::on_device(pad, x.device(), layer.c_str(), "pad mask");
    const Tensor<T> xz = masked_fill(x, pm.reshape({x.size(0), 1}), T(0));
    return router_logits(xz, wg, bg);
}

/// logits + N(0, (1/E)^2) noise (OneS eq. 2). The noise is a constant: gradients pass unchanged.
template <class T>
Tensor<T> add_logit_noise(const Tensor<T>& logits, Generator& gen) {
    const double std = 1.0 / static_cast<double>(logits.size(-1));
    return add(logits, Tensor<T>::randn(logits.shape(), gen, 0.0, std).to(logits.device()));  // drawn on the host
}

/// x * U[1 - eps, 1 + eps] elementwise (Switch's multiplicative jitter of the router input).
template <class T>
Tensor<T> input_jitter(const Tensor<T>& x, double eps, Generator& gen) {
    return mul(x, Tensor<T>::rand(x.shape(), gen, 1.0 - eps, 1.0 + eps).to(x.device()));  // drawn on the host
}

}  // namespace moekd::moe
