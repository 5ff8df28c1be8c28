// expert_ffn.hpp — the grouped expert FFN of the MoE layer, a differentiable op over a dispatch
// plan: per expert, fc2(act(fc1(rows))) over its contiguous row block of the permuted tokens, one
// GEMM per expert and layer, and its backward in closed form (gradients to the rows and to every
// expert weight; weight gradients through grad_sink.hpp).
//
// CPU: the work is a list of tasks, each a chunk of one expert's rows, handed to num_threads()
// workers of the pool as they free up (run_tasks in core/parallel.hpp; BLAS runs single-threaded
// inside a task: the tasks are the parallelism). A big expert cut into several chunks has its
// weight-gradient parts summed afterwards in chunk order. Nothing depends on timing or on which
// worker ran what, so the same input gives the same bits (for a given thread count, which sets
// the chunk size). The activation math is kernels/dispatch.cuh, shared with the device kernels.
//
// CUDA tensors (expert_ffn_device.hpp): one device GEMM per expert and layer over the expert's
// row block (or one strided-batched GEMM per layer when every expert has the same rows), with the
// bias / activation / column-sum kernels between.
#pragma once

#include <algorithm>
#include <vector>

#include "../core/parallel.hpp"
#include "../kernels/dispatch.cuh"
#include "../nn/layers.hpp"
#include "../ops/matmul.hpp"
#include "expert_ffn_device.hpp"
#include "grad_sink.hpp"
#include "plan.hpp"

namespace moekd::moe {

/// The MoE layer's CPU threads are the library's one setting (core/parallel.hpp).
using moekd::num_threads;
using moekd::set_num_threads;

namespace detail {

/// One task of the grouped FFN: rows [r0, r1) of expert e's block.
struct Segment {
    int64_t e, r0, r1;
};

/// Each expert's block cut into equal chunks of at most `max_rows` rows. Fixed by the sizes (and
/// the thread count through max_rows), never by timing.
inline std::vector<Segment> split_rows(const std::vector<int64_t>& offsets, int64_t max_rows) {
    const int64_t E = static_cast<int64_t>(offsets.size()) - 1;
    std::vector<Segment> out;
    for (int64_t e = 0; e < E; ++e) {
        const int64_t n = offsets[e + 1] - offsets[e], c = (n + max_rows - 1) / max_rows;
        for (int64_t i = 0; i < c; ++i) out.push_back({e, offsets[e] + n * i / c, offsets[e] + n * (i + 1) / c});
    }
    return out;
}

/// Chunk limits. The forward has no sum over chunks, but every chunk packs its expert's two weight
/// matrices again: 512 rows (d 256, ff 1024, 8192 tokens, E = 8: forward 21.4 ms) beat 256 rows,
/// whose hidden block (256 x F) stays in L2 (22.6 ms); 1024 rows gain nothing more and balance
/// the workers worse. In the backward every extra chunk of an expert adds a partial weight
/// gradient to sum.
inline int64_t forward_rows(int64_t) { return 512; }
inline int64_t backward_rows(int64_t S) { return std::clamp<int64_t>(S / (2 * int64_t(num_threads())), 256, 2048); }

/// The order tasks are handed out in: biggest first (the longest-processing-time rule, so the
/// workers finish together), ties in task order. Results never depend on it.
inline std::vector<int64_t> schedule(const std::vector<Segment>& segs) {
    std::vector<int64_t> order(segs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return segs[a].r1 - segs[a].r0 > segs[b].r1 - segs[b].r0;
    });
    return order;
}

}  // namespace detail

// ---- the grouped expert FFN ------------------------------------------------------------------------
/// ys[rows of e] = act(xs[rows of e] @ w1[e]^T + b1[e]) @ w2[e]^T + b2[e] for every expert e, over
/// the contiguous row blocks of the plan: one GEMM per expert and layer.
/// xs: (S, D) -> ys: (S, D). Backward per expert (dY = its rows of the gradient):
///   db2 = colsum(dY), dW2 = dY^T A, dA = dY W2, dH = dA * act'(H), db1 = colsum(dH),
///   dW1 = dH^T X, dX = dH W1.
template <class T>
Tensor<T> expert_ffn(const Tensor<T>& xs, const PlanPtr& plan, const ExpertWeights<T>& w,
                     nn::Activation act = nn::Activation::ReLU) {
    MOEKD_CHECK(plan, "expert_ffn: no dispatch plan");
    const int64_t E = plan->num_experts;
    MOEKD_CHECK(w.num_experts() == E, "expert_ffn: ", w.num_experts(), " experts' weights for a plan over ", E, " experts");
    const int64_t F = w.ffn_dim(), D = w.d_model(), S = plan->rows();
    MOEKD_CHECK(xs.dim() == 2 && xs.size(0) == S && xs.size(1) == D, "expert_ffn: xs ", xs.shape(), " must be (S, D) = (",
                S, ", ", D, ")");
    // inputs: xs, then w1, b1, w2, b2 of each expert (per-expert form) or the four stacked tensors
    std::vector<Tensor<T>> inputs{xs};
    auto expect = [&](const Tensor<T>& t, const Shape& s, const char* what, int64_t e, bool optional) {
        if (optional && !t.defined()) return;
        MOEKD_CHECK(t.defined() && t.shape() == s, "expert_ffn: ", what, e >= 0 ? msg(" of expert ", e) : std::string(),
                    " is ", t.defined() ? msg(t.shape()) : std::string("undefined"), ", expected ", s);
        MOEKD_CHECK(t.device() == xs.device(), "expert_ffn: ", what, e >= 0 ? msg(" of expert ", e) : std::string(),
                    " is on ", t.device(), ", xs ", xs.shape(), " on ", xs.device(), " (operands on different devices)");
    };
    if (w.stacked()) {
        expect(w.W1, {E, F, D}, "W1", -1, false);
        expect(w.B1, {E, F}, "B1", -1, true);
        expect(w.W2, {E, D, F}, "W2", -1, false);
        expect(w.B2, {E, D}, "B2", -1, true);
        inputs.insert(inputs.end(), {w.W1, w.B1, w.W2, w.B2});
    } else {
        MOEKD_CHECK(w.b1.size() == w.w1.size() && w.w2.size() == w.w1.size() && w.b2.size() == w.w1.size(),
                    "expert_ffn: per-expert lists differ in length (w1 ", w.w1.size(), ", b1 ", w.b1.size(), ", w2 ",
                    w.w2.size(), ", b2 ", w.b2.size(), "); use undefined tensors for absent biases");
        for (int64_t e = 0; e < E; ++e) {
            expect(w.w1[e], {F, D}, "fc1 weight", e, false);
            expect(w.b1[e], {F}, "fc1 bias", e, true);
            expect(w.w2[e], {D, F}, "fc2 weight", e, false);
            expect(w.b2[e], {D}, "fc2 bias", e, true);
            inputs.insert(inputs.end(), {w.w1[e], w.b1[e], w.w2[e], w.b2[e]});
        }
    }
    // contiguous views of every weight and raw pointers per expert
    std::vector<Tensor<T>> held;
    for (size_t i = 1; i < inputs.size(); ++i)
        held.push_back(inputs[i].defined() ? moekd::detail::contiguous_data(inputs[i]) : Tensor<T>());
    if (xs.device() != Device::CPU) {
        detail::ExpertPtrs<T> W;
        W.held = std::move(held);
        W.stacked = w.stacked();
        W.F = F;
        W.D = D;
        return detail::expert_ffn_device(xs, plan, inputs, W, act == nn::Activation::GELU);
    }
    struct Ptr {
        const T *w1, *b1, *w2, *b2;
        std::shared_ptr<const void> o1, o2;  // W1's and W2's storage when they are parameters (bf16 copy cache)
    };
    std::vector<Ptr> P(E);
    for (int64_t e = 0; e < E; ++e) {
        auto at = [&](int which, int64_t per) -> const T* {
            const Tensor<T>& h = w.stacked() ? held[which] : held[e * 4 + which];
            if (!h.defined()) return nullptr;
            return h.data() + (w.stacked() ? e * per : 0);
        };
        const auto owner = [&](int which) {
            return moekd::detail::param_owner(w.stacked() ? inputs[1 + which] : inputs[1 + e * 4 + which]);
        };
        P[e] = {at(0, F * D), at(1, F), at(2, D * F), at(3, D), owner(0), owner(2)};
    }

    const bool gelu = act == nn::Activation::GELU;
    const Tensor<T> xc = moekd::detail::contiguous_data(xs);
    Tensor<T> A = Tensor<T>::empty({S, F});                           // activations
    Tensor<T> H = gelu ? Tensor<T>::empty({S, F}) : Tensor<T>();      // pre-activations (GELU only)
    Tensor<T> ys = Tensor<T>::empty({S, D});
    const auto segs = detail::split_rows(plan->offsets, detail::forward_rows(S));
    const auto order = detail::schedule(segs);
    moekd::detail::run_tasks(static_cast<int64_t>(segs.size()), true, [&](int64_t i, int) {
        const auto& sg = segs[order[i]];
        const int64_t n = sg.r1 - sg.r0;
        const Ptr& q = P[sg.e];
        T* h = (gelu ? H : A).data() + sg.r0 * F;
        T* a = A.data() + sg.r0 * F;
        // biases are written first and the GEMM adds onto them (beta = 1), as linear() does
        if (q.b1)
            for (int64_t i = 0; i < n; ++i) std::copy_n(q.b1, F, h + i * F);
        moekd::detail::gemm_auto(T(1), detail::CMat<T>{xc.data() + sg.r0 * D, n, D, D, 1},
                                 detail::CMat<T>{q.w1, F, D, D, 1}.t(), q.b1 ? T(1) : T(0),
                                 detail::MMat<T>{h, n, F, F, 1}, nullptr, q.o1);
        for (int64_t i = 0; i < n; ++i) {
            if (gelu) kern::bias_act_row<kern::Gelu>(h + i * F, static_cast<const T*>(nullptr), F, a + i * F);
            else kern::bias_act_row<kern::Relu>(h + i * F, static_cast<const T*>(nullptr), F, a + i * F);
        }
        T* y = ys.data() + sg.r0 * D;
        if (q.b2)
            for (int64_t i = 0; i < n; ++i) std::copy_n(q.b2, D, y + i * D);
        moekd::detail::gemm_auto(T(1), detail::CMat<T>{a, n, F, F, 1}, detail::CMat<T>{q.w2, D, F, F, 1}.t(),
                                 q.b2 ? T(1) : T(0), detail::MMat<T>{y, n, D, D, 1}, nullptr, q.o2);
    });

    const bool stacked = w.stacked();
    return record<T>(
        ys, "expert_ffn", inputs,
        [plan, inputs, held, P, F, D, E, S, gelu, stacked, prec = moekd::detail::tl_precision, xd = xc.detach(), A,
         H](const Tensor<T>& g) {
            moekd::detail::PrecisionGuard pg(prec);  // the backward's GEMMs in the forward's precision
            const Tensor<T> dy = moekd::detail::contiguous_data(g);
            const bool direct = detail::direct_leaf_grads_setting();
            const bool need_x = needs_grad(inputs[0]);
            // gradient sinks, one per weight input (stacked: 4; per expert: 4 E)
            // (a tensor given twice, e.g. experts sharing a weight, goes through the engine, which
            // sums its two gradients)
            std::vector<detail::GradSink<T>> sink(inputs.size());
            for (size_t i = 1; i < inputs.size(); ++i) {
                const bool empty_expert = !stacked && plan->kept[(i - 1) / 4] == 0;
                bool repeated = false;
                for (size_t j = 1; j < inputs.size() && inputs[i].defined(); ++j)
                    repeated = repeated || (j != i && inputs[j].is_same(inputs[i]));
                if (!empty_expert) sink[i] = detail::make_sink(inputs[i], direct && !repeated);
            }
            auto sink_of = [&](int64_t e, int which) -> detail::GradSink<T>& {
                return sink[stacked ? 1 + which : 1 + e * 4 + which];
            };
            auto per = [&](int which) { return which == 0 || which == 2 ? F * D : which == 1 ? F : D; };
            // where expert e's gradient `which` lives inside its sink
            auto dst = [&](int64_t e, int which) { return sink_of(e, which).data + (stacked ? e * per(which) : 0); };
            // a fresh stacked gradient must be zero for experts that got no rows
            if (stacked)
                for (int which = 0; which < 4; ++which) {
                    auto& s = sink[1 + which];
                    if (!s.active() || s.beta != T(0)) continue;
                    for (int64_t e = 0; e < E; ++e)
                        if (plan->kept[e] == 0) std::fill_n(s.data + e * per(which), per(which), T(0));
                }

            Tensor<T> dxs = need_x ? Tensor<T>::empty({S, D}) : Tensor<T>();
            const auto segs = detail::split_rows(plan->offsets, detail::backward_rows(S));
            const auto order = detail::schedule(segs);
            // a task that does not start its expert's block writes its weight gradients to
            // scratch, added to the expert's after all tasks end (in task order: deterministic)
            using Acc = moekd::detail::Acc<T>;
            struct SegOut {
                std::vector<Acc> db1, db2;
                Tensor<T> dw1, dw2;  // scratch for a continuation segment
            };
            std::vector<SegOut> outs(segs.size());
            std::vector<Tensor<T>> scratch(static_cast<size_t>(num_threads()));  // per worker: dA, then dH
            moekd::detail::run_tasks(static_cast<int64_t>(segs.size()), true, [&](int64_t i, int worker) {
                const int64_t task = order[i];
                const auto& sg = segs[task];
                SegOut& o = outs[task];
                const int64_t e = sg.e, n = sg.r1 - sg.r0;
                Tensor<T>& buf = scratch[worker];  // from the caching allocator: no fresh pages per step
                if (!buf.defined() || buf.numel() < n * F) buf = Tensor<T>::empty({n, F});
                const bool cont = sg.r0 != plan->offsets[e];
                const Ptr& q = P[e];
                auto& s_w1 = sink_of(e, 0);
                auto& s_b1 = sink_of(e, 1);
                auto& s_w2 = sink_of(e, 2);
                auto& s_b2 = sink_of(e, 3);
                const T* gy = dy.data() + sg.r0 * D;
                const T* a = A.data() + sg.r0 * F;
                // in bf16, dY's and dH's copies are made once for their two products each
                moekd::detail::Bf16Operand gy16t, da16t;
                if (s_b2.active()) {
                    o.db2.assign(D, Acc(0));
                    for (int64_t i = 0; i < n; ++i)
                        for (int64_t d = 0; d < D; ++d) o.db2[d] += static_cast<Acc>(gy[i * D + d]);
                }
                if (s_w2.active()) {  // dW2 = dY^T A: (D, n) @ (n, F)
                    T* out = dst(e, 2);
                    T beta = s_w2.beta;
                    if (cont) o.dw2 = Tensor<T>::empty({D, F}), out = o.dw2.data(), beta = T(0);
                    moekd::detail::gemm_auto(T(1), detail::CMat<T>{gy, n, D, D, 1}.t(), detail::CMat<T>{a, n, F, F, 1},
                                             beta, detail::MMat<T>{out, D, F, F, 1}, nullptr, nullptr, &gy16t);
                }
                if (!(s_w1.active() || s_b1.active() || need_x)) return;
                T* da = buf.data();  // dA = dY W2: (n, D) @ (D, F)
                moekd::detail::Bf16Operand gy16 = moekd::detail::transposed(gy16t);
                moekd::detail::gemm_auto(T(1), detail::CMat<T>{gy, n, D, D, 1}, detail::CMat<T>{q.w2, D, F, F, 1}, T(0),
                                         detail::MMat<T>{da, n, F, F, 1}, nullptr, q.o2, &gy16);
                if (s_b1.active()) o.db1.assign(F, Acc(0));
                Acc* db1 = s_b1.active() ? o.db1.data() : nullptr;
                const T* h = (gelu ? H : A).data() + sg.r0 * F;
                for (int64_t i = 0; i < n; ++i) {
                    if (gelu) kern::act_backward_row<kern::Gelu>(h + i * F, a + i * F, da + i * F, F, db1);
                    else kern::act_backward_row<kern::Relu>(h + i * F, a + i * F, da + i * F, F, db1);
                }
                const T* x = xd.data() + sg.r0 * D;
                if (s_w1.active()) {  // dW1 = dH^T X: (F, n) @ (n, D)
                    T* out = dst(e, 0);
                    T beta = s_w1.beta;
                    if (cont) o.dw1 = Tensor<T>::empty({F, D}), out = o.dw1.data(), beta = T(0);
                    moekd::detail::gemm_auto(T(1), detail::CMat<T>{da, n, F, F, 1}.t(), detail::CMat<T>{x, n, D, D, 1},
                                             beta, detail::MMat<T>{out, F, D, D, 1}, nullptr, nullptr, &da16t);
                }
                if (need_x) {  // dX = dH W1: (n, F) @ (F, D)
                    moekd::detail::Bf16Operand da16 = moekd::detail::transposed(da16t);
                    moekd::detail::gemm_auto(T(1), detail::CMat<T>{da, n, F, F, 1}, detail::CMat<T>{q.w1, F, D, D, 1}, T(0),
                                             detail::MMat<T>{dxs.data() + sg.r0 * D, n, D, D, 1}, nullptr, q.o1, &da16);
                }
            });
            // join: continuation parts and bias sums, expert by expert in row order
            std::vector<std::vector<Acc>> b1sum(E), b2sum(E);
            for (size_t task = 0; task < segs.size(); ++task) {
                const auto& sg = segs[task];
                SegOut& o = outs[task];
                const int64_t e = sg.e;
                if (o.dw1.defined()) {
                    T* out = dst(e, 0);
                    for (int64_t i = 0; i < F * D; ++i) out[i] += o.dw1.data()[i];
                }
                if (o.dw2.defined()) {
                    T* out = dst(e, 2);
                    for (int64_t i = 0; i < F * D; ++i) out[i] += o.dw2.data()[i];
                }
                auto fold = [](std::vector<Acc>& acc, const std::vector<Acc>& v) {
                    if (v.empty()) return;
                    if (acc.empty()) acc = v;
                    else
                        for (size_t i = 0; i < v.size(); ++i) acc[i] += v[i];
                };
                fold(b1sum[e], o.db1);
                fold(b2sum[e], o.db2);
            }
            for (int64_t e = 0; e < E; ++e) {
                auto put = [&](int which, const std::vector<Acc>& v) {
                    if (v.empty()) return;
                    T* out = dst(e, which);
                    const T beta = sink_of(e, which).beta;
                    for (size_t i = 0; i < v.size(); ++i)
                        out[i] = beta == T(0) ? static_cast<T>(v[i]) : out[i] + static_cast<T>(v[i]);
                };
                put(1, b1sum[e]);
                put(3, b2sum[e]);
            }
            std::vector<Tensor<T>> grads(inputs.size());
            grads[0] = dxs;
            for (size_t i = 1; i < inputs.size(); ++i) grads[i] = detail::finish_sink(sink[i]);
            return grads;
        });
}

}  // namespace moekd::moe
