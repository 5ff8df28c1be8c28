// dispatch.hpp — moving tokens to their experts and back, as two differentiable ops over a
// dispatch plan (plan.hpp):
//   permute_tokens  x (N, D) -> xs (S, D)              rows grouped by expert (a gather)
//   combine_tokens  ys (S, D), gates (N, k) -> (N, D)  y[t] = sum_j gates[t, j] * ys[slot(t, j)]
// each with its backward in closed form. The experts between them are expert_ffn.hpp.
//
// The per-row math is kernels/dispatch.cuh (the GPU kernels run the same functions). On CUDA
// tensors, permute / combine and their backward are gather kernels through the device table in
// which every output element sums its contributions in a fixed order (no atomics: the same input
// gives the same bits); the plan must then come from routing on that device.
#pragma once

#include <vector>

#include "../core/parallel.hpp"
#include "../kernels/dispatch.cuh"
#include "plan.hpp"

namespace moekd::moe {

/// xs[s] = x[slot_token[s]]: the rows of x grouped by expert.   x: (N, D) -> xs: (S, D)
/// Backward: dx[t] = sum over kept choices j (in order) of dxs[slot(t, j)]; 0 for pad / dropped.
namespace detail {
/// permute_tokens' device half: a gather of rows forward, and backward the sum of each token's
/// kept rows in choice order (one writer per output element).
template <class T>
Tensor<T> permute_tokens_device(const Tensor<T>& x, const PlanPtr& plan) {
    require_device_plan(*plan, x, "permute_tokens", "x");
    const int64_t D = x.size(1), S = plan->rows();
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> xs = Tensor<T>::empty({S, D}, x.device());
    moekd::detail::device_entry(dev_ops<T>().moe_permute, "permute_tokens", x.shape())(
        xc.data(), plan->dev(plan->dev_slot_token), xs.data(), S, D);
    return record<T>(xs, "permute_tokens", {x}, [plan, D, dev = x.device()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        Tensor<T> dx = Tensor<T>::empty({plan->num_tokens, D}, dev);
        moekd::detail::device_entry(dev_ops<T>().moe_permute_backward, "permute_tokens", g.shape())(
            gc.data(), plan->dev(plan->dev_slot_of), dx.data(), plan->num_tokens, plan->top_k, D);
        return std::vector<Tensor<T>>{dx};
    });
}

/// combine_tokens' device half: forward and backward through the device table; dgates sums in
/// double, every row of dys has one writer.
template <class T>
Tensor<T> combine_tokens_device(const Tensor<T>& ys, const Tensor<T>& gates, const PlanPtr& plan) {
    require_device_plan(*plan, ys, "combine_tokens", "ys");
    same_device(ys, gates, "combine_tokens", "ys", "gates");
    const int64_t N = plan->num_tokens, k = plan->top_k, D = ys.size(1);
    const Tensor<T> yc = moekd::detail::contiguous_data(ys), gc = moekd::detail::contiguous_data(gates);
    Tensor<T> y = Tensor<T>::empty({N, D}, ys.device());
    moekd::detail::device_entry(dev_ops<T>().moe_combine, "combine_tokens", ys.shape())(
        yc.data(), plan->dev(plan->dev_slot_of), gc.data(), y.data(), N, k, D);
    const bool need_ys = needs_grad(ys), need_g = needs_grad(gates);
    return record<T>(y, "combine_tokens", {ys, gates},
                     [plan, need_ys, need_g, D, yd = yc.detach(), gd = gc.detach()](const Tensor<T>& g) {
                         const Tensor<T> dy = moekd::detail::contiguous_data(g);
                         const int64_t N = plan->num_tokens, k = plan->top_k;
                         Tensor<T> dys = need_ys ? Tensor<T>::empty({plan->rows(), D}, yd.device()) : Tensor<T>();
                         Tensor<T> dg = need_g ? Tensor<T>::empty({N, k}, yd.device()) : Tensor<T>();
                         moekd::detail::device_entry(dev_ops<T>().moe_combine_backward, "combine_tokens", g.shape())(
                             dy.data(), yd.data(), plan->dev(plan->dev_slot_of), gd.data(),
                             need_ys ? dys.data() : nullptr, need_g ? dg.data() : nullptr, N, k, D);
                         return std::vector<Tensor<T>>{dys, dg};
                     });
}
}  // namespace detail

template <class T>
Tensor<T> permute_tokens(const Tensor<T>& x, const PlanPtr& plan) {
    MOEKD_CHECK(plan, "permute_tokens: no dispatch plan");
    MOEKD_CHECK(x.dim() == 2 && x.size(0) == plan->num_tokens, "permute_tokens: x ", x.shape(), " must be (N, D) with N = ",
                plan->num_tokens, " tokens, as the dispatch plan");
    if (x.device() != Device::CPU) return detail::permute_tokens_device(x, plan);
    const int64_t D = x.size(1), S = plan->rows();
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> xs = Tensor<T>::empty({S, D});
    moekd::detail::parallel_chunks(S, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t s = lo; s < hi; ++s) kern::copy_row(xc.data() + plan->slot_token[s] * D, D, xs.data() + s * D);
    });
    return record<T>(xs, "permute_tokens", {x}, [plan, D](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = plan->num_tokens, k = plan->top_k;
        Tensor<T> dx = Tensor<T>::empty({N, D});
        moekd::detail::parallel_chunks(N, 256, [&](int64_t lo, int64_t hi) {
            for (int64_t t = lo; t < hi; ++t)
                kern::permute_backward_row(gc.data(), plan->slot_of.data() + t * k, k, D, dx.data() + t * D);
        });
        return std::vector<Tensor<T>>{dx};
    });
}

/// y[t] = sum over kept choices j (in order j = 0, 1, ...) of gates[t, j] * ys[slot(t, j)]; a
/// token with no kept choice (pad, or every choice over capacity) gets 0 (the residual carries it).
/// ys: (S, D), gates: (N, k) -> y: (N, D). Gradients: dys[slot(t, j)] = gates[t, j] dy[t],
/// dgates[t, j] = <dy[t], ys[slot(t, j)]> (0 for dropped / pad).
template <class T>
Tensor<T> combine_tokens(const Tensor<T>& ys, const Tensor<T>& gates, const PlanPtr& plan) {
    MOEKD_CHECK(plan, "combine_tokens: no dispatch plan");
    MOEKD_CHECK(ys.dim() == 2 && ys.size(0) == plan->rows(), "combine_tokens: ys ", ys.shape(), " must be (S, D) with S = ",
                plan->rows(), " rows, as the dispatch plan");
    MOEKD_CHECK(gates.dim() == 2 && gates.size(0) == plan->num_tokens && gates.size(1) == plan->top_k,
                "combine_tokens: gates ", gates.shape(), " must be (N, k) = (", plan->num_tokens, ", ", plan->top_k, ")");
    if (ys.device() != Device::CPU || gates.device() != Device::CPU) return detail::combine_tokens_device(ys, gates, plan);
    const int64_t N = plan->num_tokens, k = plan->top_k, D = ys.size(1);
    const Tensor<T> yc = moekd::detail::contiguous_data(ys), gc = moekd::detail::contiguous_data(gates);
    Tensor<T> y = Tensor<T>::empty({N, D});
    moekd::detail::parallel_chunks(N, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t)
            kern::combine_row(yc.data(), plan->slot_of.data() + t * k, gc.data() + t * k, k, D, y.data() + t * D);
    });
    const bool need_ys = needs_grad(ys), need_g = needs_grad(gates);
    return record<T>(y, "combine_tokens", {ys, gates},
                     [plan, need_ys, need_g, D, yd = yc.detach(), gd = gc.detach()](const Tensor<T>& g) {
                         const Tensor<T> dy = moekd::detail::contiguous_data(g);
                         const int64_t N = plan->num_tokens, k = plan->top_k;
                         Tensor<T> dys = need_ys ? Tensor<T>::empty({plan->rows(), D}) : Tensor<T>();
                         Tensor<T> dg = need_g ? Tensor<T>::empty({N, k}) : Tensor<T>();
                         moekd::detail::parallel_chunks(N, 256, [&](int64_t lo, int64_t hi) {
                             for (int64_t t = lo; t < hi; ++t)
                                 kern::combine_backward_row<T, moekd::detail::Acc<T>>(
                                     dy.data() + t * D, yd.data(), plan->slot_of.data() + t * k, gd.data() + t * k,
                                     k, D, need_ys ? dys.data() : nullptr, need_g ? dg.data() + t * k : nullptr);
                         });
                         return std::vector<Tensor<T>>{dys, dg};
                     });
}

}  // namespace moekd::moe
