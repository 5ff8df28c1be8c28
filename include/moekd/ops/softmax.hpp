// softmax.hpp — softmax and log_softmax along any dim, each with its backward right below.
//
// The per-row math is kernels/softmax.cuh (the same functions the CUDA kernels run). The input is
// read as a contiguous (outer, n, inner) block, n = size of `dim`; the row of (o, i) is strided by
// inner, so no dim is moved and the output comes back contiguous in x's shape.
// detail::softmax_reference is the naive double-precision loop that the tests hold these to.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../kernels/softmax.cuh"
#include "elementwise.hpp"

namespace moekd {
namespace detail {

/// x viewed as (outer, n, inner) around `dim`.
struct RowPlan {
    int64_t outer = 1, n = 1, inner = 1;
};

inline RowPlan plan_rows(const Shape& s, int64_t dim, const char* op) {
    RowPlan p;
    const int64_t d = normalize_dim(dim, s.rank(), op);
    if (s.rank() == 0) return p;  // a scalar is one row of one element (softmax gives 1)
    p.n = s[d];
    for (int64_t i = 0; i < d; ++i) p.outer *= s[i];
    for (int64_t i = d + 1; i < s.rank(); ++i) p.inner *= s[i];
    return p;
}

/// Calls f(row_offset) for each of the outer * inner rows of a (outer, n, inner) block.
template <class F>
void for_each_row(const RowPlan& p, F f) {
    parallel_for(p.outer, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, p.n * p.inner)),
                 [&](int64_t b, int64_t e) {
                     for (int64_t o = b; o < e; ++o)
                         for (int64_t i = 0; i < p.inner; ++i) f(o * p.n * p.inner + i);
                 });
}

/// softmax_impl's device half: the forward and the backward through the device table.
template <class T>
Tensor<T> softmax_device(const Tensor<T>& x, const RowPlan& p, bool is_log, const char* op) {
    const Tensor<T> xc = contiguous_data(x);
    Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
    if (y.numel() > 0)
        device_entry(DeviceOps<T>::cuda().softmax, op, x.shape())(xc.data(), y.data(), p.outer, p.n, p.inner, is_log);
    return record<T>(y, op, {x}, [p, is_log, op, yd = y.detach()](const Tensor<T>& g) {
        const Tensor<T> gc = contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(yd.shape(), yd.device());
        if (gx.numel() > 0)
            device_entry(DeviceOps<T>::cuda().softmax_backward, op, yd.shape())(yd.data(), gc.data(), gx.data(),
                                                                                p.outer, p.n, p.inner, is_log);
        return std::vector<Tensor<T>>{gx};
    });
}

/// Shared body of softmax (is_log = false) and log_softmax (is_log = true).
template <class T>
Tensor<T> softmax_impl(const Tensor<T>& x, int64_t dim, bool is_log) {
    const char* op = is_log ? "log_softmax" : "softmax";
    const RowPlan p = plan_rows(x.shape(), dim, op);
    if (x.device() != Device::CPU) return softmax_device(x, p, is_log, op);
    Tensor<T> xc = contiguous_data(x);
    Tensor<T> y = Tensor<T>::empty(x.shape());
    if (y.numel() > 0) {
        const T* px = xc.data();
        T* py = y.data();
        for_each_row(p, [&](int64_t b) {
            if (is_log)
                kern::log_softmax_row(px + b, py + b, p.n, p.inner);
            else
                kern::softmax_row(px + b, py + b, p.n, p.inner);
        });
    }
    return record<T>(y, op, {x}, [p, is_log, yd = y.detach()](const Tensor<T>& g) {
        Tensor<T> gc = contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(yd.shape());
        if (gx.numel() > 0) {
            const T *py = yd.data(), *pg = gc.data();
            T* pgx = gx.data();
            for_each_row(p, [&](int64_t b) {
                if (is_log)
                    kern::log_softmax_backward_row(py + b, pg + b, pgx + b, p.n, p.inner);
                else
                    kern::softmax_backward_row(py + b, pg + b, pgx + b, p.n, p.inner);
            });
        }
        return std::vector<Tensor<T>>{gx};
    });
}

/// Naive reference: plain loops in double over a row-major copy, no autograd.
template <class T>
Tensor<T> softmax_reference(const Tensor<T>& x, int64_t dim, bool is_log = false) {
    const RowPlan p = plan_rows(x.shape(), dim, "softmax_reference");
    const std::vector<T> v = x.to_vector();
    Tensor<T> y = Tensor<T>::empty(x.shape());
    for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t i = 0; i < p.inner; ++i) {
            auto at = [&](int64_t k) { return o * p.n * p.inner + k * p.inner + i; };
            double m = -INFINITY;
            for (int64_t k = 0; k < p.n; ++k) m = std::max(m, static_cast<double>(v[at(k)]));
            double s = 0;
            for (int64_t k = 0; k < p.n; ++k) s += std::exp(static_cast<double>(v[at(k)]) - m);
            for (int64_t k = 0; k < p.n; ++k) {
                const double z = static_cast<double>(v[at(k)]) - m;
                y.data()[at(k)] = static_cast<T>(is_log ? z - std::log(s) : std::exp(z) / s);
            }
        }
    return y;
}

}  // namespace detail

/// softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `dim` (negative counts from the end).
/// x: any shape; returns a contiguous tensor of x's shape. Stable for huge logits.
template <class T>
Tensor<T> softmax(const Tensor<T>& x, int64_t dim = -1) {
    return detail::softmax_impl(x, dim, false);
}

/// log_softmax(x)_i = x_i - logsumexp(x) along `dim`; more accurate than log(softmax(x)).
template <class T>
Tensor<T> log_softmax(const Tensor<T>& x, int64_t dim = -1) {
    return detail::softmax_impl(x, dim, true);
}

}  // namespace moekd
