// norm.hpp — layer_norm over the last k dims, with optional elementwise affine, and its backward
// right below.
//
// The per-row math is kernels/norm.cuh (the same functions the CUDA kernels run): x is read as a
// contiguous (M, N) block, N = numel(normalized_shape), one row per normalised group. Mean and
// rstd per row are saved for the backward. detail::layer_norm_reference is the naive
// double-precision loop the tests hold this to.
#pragma once

#include <vector>

#include "../kernels/norm.cuh"
#include "elementwise.hpp"

namespace moekd {
namespace detail {

/// Checks layer_norm's arguments; returns N = numel(normalized_shape).
template <class T>
int64_t check_layer_norm(const Tensor<T>& x, const Shape& ns, const Tensor<T>& weight, const Tensor<T>& bias,
                         double eps, const char* op) {
    const int64_t k = ns.rank();
    MOEKD_CHECK(k >= 1 && k <= x.dim(), op, ": normalized_shape ", ns, " must name 1 to ", x.dim(),
                " trailing dims of the input ", x.shape(), ". HINT: for x: (B, T, D) pass {D}");
    for (int64_t i = 0; i < k; ++i)
        MOEKD_CHECK(x.shape()[x.dim() - k + i] == ns[i], op, ": normalized_shape ", ns,
                    " does not match the trailing dims of the input ", x.shape(),
                    ". HINT: normalized_shape is the last k dims of x, e.g. {D} for x: (B, T, D)");
    for (const Tensor<T>* p : {&weight, &bias}) {
        if (!p->defined()) continue;
        const char* what = p == &weight ? "weight" : "bias";
        MOEKD_CHECK(p->shape() == ns, op, ": ", what, " of shape ", p->shape(), " for normalized_shape ", ns,
                    " (input ", x.shape(), ")");
        require_same_device(x, *p, op);
    }
    MOEKD_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
    const int64_t N = moekd::numel(ns);
    MOEKD_CHECK(N > 0, op, ": normalized_shape ", ns, " has no elements");
    return N;
}

/// Naive reference: plain double loops over row-major copies, no autograd.
template <class T>
Tensor<T> layer_norm_reference(const Tensor<T>& x, const Shape& ns, const Tensor<T>& weight = Tensor<T>(),
                               const Tensor<T>& bias = Tensor<T>(), double eps = 1e-5) {
    const int64_t N = check_layer_norm(x, ns, weight, bias, eps, "layer_norm_reference");
    const int64_t M = x.numel() / N;
    const std::vector<T> v = x.to_vector();
    const std::vector<T> w = weight.defined() ? weight.to_vector() : std::vector<T>(N, T(1));
    const std::vector<T> b = bias.defined() ? bias.to_vector() : std::vector<T>(N, T(0));
    Tensor<T> y = Tensor<T>::empty(x.shape());
    for (int64_t r = 0; r < M; ++r) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < N; ++i) mu += v[r * N + i];
        mu /= N;
        for (int64_t i = 0; i < N; ++i) var += (v[r * N + i] - mu) * (v[r * N + i] - mu);
        var /= N;
        for (int64_t i = 0; i < N; ++i)
            y.data()[r * N + i] = static_cast<T>((v[r * N + i] - mu) / std::sqrt(var + eps) * w[i] + b[i]);
    }
    return y;
}

/// layer_norm's device half: rows through the device table, mean and rstd kept on the device.
template <class T>
Tensor<T> layer_norm_device(const Tensor<T>& x, const Shape& ns, const Tensor<T>& weight, const Tensor<T>& bias,
                            double eps, int64_t M, int64_t N) {
    const char* op = "layer_norm";
    const Tensor<T> xc = contiguous_data(x).detach();
    const Tensor<T> wc = weight.defined() ? contiguous_data(weight).detach() : Tensor<T>();
    const Tensor<T> bc = bias.defined() ? contiguous_data(bias).detach() : Tensor<T>();
    Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
    Tensor<T> mean = Tensor<T>::empty({M}, x.device()), rstd = Tensor<T>::empty({M}, x.device());
    if (M > 0)
        device_entry(DeviceOps<T>::cuda().layer_norm, op, x.shape())(
            xc.data(), wc.defined() ? wc.data() : nullptr, bc.defined() ? bc.data() : nullptr, y.data(), mean.data(),
            rstd.data(), M, N, static_cast<T>(eps));
    const bool need_x = x.requires_grad(), need_w = needs_grad(weight), need_b = needs_grad(bias);
    return record<T>(y, op, {x, weight, bias},
                     [xc, wc, mean, rstd, M, N, ns, need_x, need_w, need_b, op](const Tensor<T>& g) {
                         const Tensor<T> gc = contiguous_data(g);
                         const Device dev = xc.device();
                         Tensor<T> gx = need_x ? Tensor<T>::empty(xc.shape(), dev) : Tensor<T>();
                         Tensor<T> gw = need_w ? Tensor<T>::empty(ns, dev) : Tensor<T>();
                         Tensor<T> gb = need_b ? Tensor<T>::empty(ns, dev) : Tensor<T>();
                         if (M == 0) {
                             for (Tensor<T>* t : {&gw, &gb})
                                 if (t->defined()) *t = Tensor<T>::zeros(ns, dev);
                         } else if (need_x || need_w || need_b) {
                             device_entry(DeviceOps<T>::cuda().layer_norm_backward, op, xc.shape())(
                                 xc.data(), wc.defined() ? wc.data() : nullptr, gc.data(), mean.data(), rstd.data(),
                                 need_x ? gx.data() : nullptr, need_w ? gw.data() : nullptr,
                                 need_b ? gb.data() : nullptr, M, N);
                         }
                         return std::vector<Tensor<T>>{gx, gw, gb};
                     });
}

}  // namespace detail

/// y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the last k dims of x
/// (k = normalized_shape.rank()), variance biased as torch.nn.functional.layer_norm.
/// x: (..., *normalized_shape); weight, bias: normalized_shape, or undefined Tensor<T>() for none.
template <class T>
Tensor<T> layer_norm(const Tensor<T>& x, const Shape& normalized_shape, const Tensor<T>& weight = Tensor<T>(),
                     const Tensor<T>& bias = Tensor<T>(), double eps = 1e-5) {
    const int64_t N = detail::check_layer_norm(x, normalized_shape, weight, bias, eps, "layer_norm");
    const int64_t M = x.numel() / N;
    if (x.device() != Device::CPU) return detail::layer_norm_device(x, normalized_shape, weight, bias, eps, M, N);
    // saved without history (the closure must not keep the graph alive through them)
    const Tensor<T> xc = detail::contiguous_data(x).detach();
    const Tensor<T> wc = weight.defined() ? detail::contiguous_data(weight).detach() : Tensor<T>();
    const Tensor<T> bc = bias.defined() ? detail::contiguous_data(bias).detach() : Tensor<T>();
    Tensor<T> y = Tensor<T>::empty(x.shape());
    Tensor<T> mean = Tensor<T>::empty({M}), rstd = Tensor<T>::empty({M});
    {
        const T *px = xc.data(), *pw = wc.defined() ? wc.data() : nullptr, *pb = bc.defined() ? bc.data() : nullptr;
        T *py = y.data(), *pm = mean.data(), *pr = rstd.data();
        detail::parallel_for(M, std::max<int64_t>(1, detail::kGrainElems / N), [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) {
                kern::layer_norm_stats_row(px + r * N, N, static_cast<T>(eps), pm + r, pr + r);
                kern::layer_norm_fwd_row(px + r * N, pw, pb, py + r * N, N, pm[r], pr[r]);
            }
        });
    }
    const bool need_x = x.requires_grad(), need_w = needs_grad(weight), need_b = needs_grad(bias);
    const Shape ns = normalized_shape;
    return record<T>(y, "layer_norm", {x, weight, bias},
                     [xc, wc, mean, rstd, M, N, ns, need_x, need_w, need_b](const Tensor<T>& g) {
        Tensor<T> gc = detail::contiguous_data(g);
        const T *px = xc.data(), *pg = gc.data(), *pw = wc.defined() ? wc.data() : nullptr;
        const T *pm = mean.data(), *pr = rstd.data();
        Tensor<T> gx, gw, gb;
        if (need_x) {
            gx = Tensor<T>::empty(xc.shape());
            T* pgx = gx.data();
            detail::parallel_for(M, std::max<int64_t>(1, detail::kGrainElems / N), [&](int64_t b, int64_t e) {
                for (int64_t r = b; r < e; ++r)
                    kern::layer_norm_bwd_row(px + r * N, pw, pg + r * N, pgx + r * N, N, pm[r], pr[r]);
            });
        }
        if (need_w || need_b) {
            std::vector<double> aw(need_w ? N : 0, 0.0), ab(need_b ? N : 0, 0.0);
            double* paw = need_w ? aw.data() : nullptr;
            double* pab = need_b ? ab.data() : nullptr;
            // columns split across threads: each thread sums its columns over all rows
            detail::parallel_for(N, 64, [&](int64_t c0, int64_t c1) {
                for (int64_t r = 0; r < M; ++r)
                    kern::layer_norm_param_grad_row(px + r * N + c0, pg + r * N + c0, paw ? paw + c0 : nullptr,
                                                    pab ? pab + c0 : nullptr, c1 - c0, pm[r], pr[r]);
            });
            if (need_w) {
                gw = Tensor<T>::empty(ns);
                for (int64_t i = 0; i < N; ++i) gw.data()[i] = static_cast<T>(aw[i]);
            }
            if (need_b) {
                gb = Tensor<T>::empty(ns);
                for (int64_t i = 0; i < N; ++i) gb.data()[i] = static_cast<T>(ab[i]);
            }
        }
        return std::vector<Tensor<T>>{gx, gw, gb};
    });
}

}  // namespace moekd
