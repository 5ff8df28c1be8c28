// reduce.hpp — sum, mean, max, min, var along dims (with keepdim), and sum_to for broadcasting.
//
// One layout trick serves all reductions: permute the kept dims to the front and the reduced
// dims to the back, make that contiguous, and each output element is then the reduction of one
// contiguous row. Float sums accumulate in double (cheap here, and far closer to exact).
#pragma once

#include <algorithm>
#include <limits>

#include "elementwise.hpp"
#include "view.hpp"

namespace moekd {
namespace detail {

/// The plan of one reduction: which dims go, the permutation, the output shapes.
struct ReducePlan {
    std::vector<bool> reduced;  // per input dim
    Shape perm;                 // kept dims then reduced dims
    Shape keep_shape;           // output shape with reduced dims as 1 (keepdim=true)
    Shape out_shape;            // output shape as returned
    int64_t outer = 1, inner = 1;
};

inline ReducePlan plan_reduce(const Shape& shape, const Shape& dims_req, bool keepdim, const char* op) {
    ReducePlan p;
    const int64_t r = shape.rank();
    p.reduced.assign(r, dims_req.empty());  // no dims given: reduce everything
    for (int64_t d : dims_req) {
        int64_t k = normalize_dim(d, r, op);
        if (r == 0) continue;
        MOEKD_CHECK(!p.reduced[k] || dims_req.empty(), op, ": dim ", d, " repeated in ", dims_req);
        p.reduced[k] = true;
    }
    for (int64_t i = 0; i < r; ++i)
        if (!p.reduced[i]) p.perm.push_back(i), p.outer *= shape[i];
    for (int64_t i = 0; i < r; ++i)
        if (p.reduced[i]) p.perm.push_back(i), p.inner *= shape[i];
    for (int64_t i = 0; i < r; ++i) {
        p.keep_shape.push_back(p.reduced[i] ? 1 : shape[i]);
        if (!p.reduced[i] || keepdim) p.out_shape.push_back(p.reduced[i] ? 1 : shape[i]);
    }
    return p;
}

/// x's data laid out as (outer, inner) rows per the plan, contiguous, no autograd.
template <class T>
Tensor<T> reduce_layout(const Tensor<T>& x, const ReducePlan& p) {
    NoGrad ng;
    return contiguous_data(x.dim() ? x.permute(p.perm) : x);
}

template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;

}  // namespace detail

/// Sum over `dims` (all dims when empty).
template <class T>
Tensor<T> sum(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
    const auto p = detail::plan_reduce(x.shape(), dims, keepdim, "sum");
    Tensor<T> xl = detail::reduce_layout(x, p);
    Tensor<T> y = Tensor<T>::empty(p.out_shape, x.device());
    if (x.device() != Device::CPU) {  // a block per output row on the device
        if (p.outer > 0 && p.inner == 0) {
            y = Tensor<T>::zeros(p.out_shape, x.device());
        } else if (p.outer > 0) {
            detail::device_entry(DeviceOps<T>::cuda().sum_rows, "sum", x.shape())(xl.data(), y.data(), p.outer,
                                                                                  p.inner);
        }
    } else {
        const T* px = xl.data();
        for (int64_t o = 0; o < p.outer; ++o) {
            detail::Acc<T> acc = 0;
            for (int64_t i = 0; i < p.inner; ++i) acc += px[o * p.inner + i];
            y.data()[o] = static_cast<T>(acc);
        }
    }
    const Shape in_shape = x.shape(), keep = p.keep_shape;
    return record<T>(y, "sum", {x}, [in_shape, keep](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{g.reshape(keep).expand(in_shape)};
    });
}

/// Mean over `dims` (all dims when empty).
template <class T>
Tensor<T> mean(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
    const auto p = detail::plan_reduce(x.shape(), dims, keepdim, "mean");
    MOEKD_CHECK(p.inner > 0, "mean: reducing ", x.shape(), " over an empty dim");
    return sum(x, dims, keepdim) / static_cast<T>(p.inner);
}

namespace detail {
/// max (sign = +1) or min (sign = -1) over dims. The gradient is shared evenly between tied
/// extremes (like torch.amax), so it is well defined at ties.
template <class T>
Tensor<T> extreme(const Tensor<T>& x, const Shape& dims, bool keepdim, bool is_max, const char* op) {
    const auto p = plan_reduce(x.shape(), dims, keepdim, op);
    MOEKD_CHECK(p.inner > 0, op, ": reducing ", x.shape(), " over an empty dim");
    Tensor<T> xl = reduce_layout(x, p);
    const Shape perm = p.perm;
    const int64_t outer = p.outer, inner = p.inner;
    auto unpermute = [perm](const Tensor<T>& gl) {
        Shape inv(perm.size());
        for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int64_t>(i);
        return gl.dim() ? gl.permute(inv).contiguous() : gl;
    };
    if (x.device() != Device::CPU) {  // a block per row, both ways (kernels/index.cu)
        Tensor<T> y = Tensor<T>::empty(p.out_shape, x.device());
        if (outer > 0) device_entry(DeviceOps<T>::cuda().extreme_rows, op, x.shape())(xl.data(), y.data(), outer, inner, is_max);
        return record<T>(y, op, {x}, [xl, yd = y.detach(), outer, inner, unpermute, op](const Tensor<T>& g) {
            Tensor<T> gc = contiguous_data(g);
            Tensor<T> gl = Tensor<T>::empty(xl.shape(), xl.device());
            if (outer > 0)
                device_entry(DeviceOps<T>::cuda().extreme_rows_backward, op, xl.shape())(xl.data(), yd.data(), gc.data(),
                                                                                       gl.data(), outer, inner);
            return std::vector<Tensor<T>>{unpermute(gl)};
        });
    }
    Tensor<T> y = Tensor<T>::empty(p.out_shape);
    const T* px = xl.data();
    for (int64_t o = 0; o < p.outer; ++o) {
        T best = px[o * p.inner];
        for (int64_t i = 1; i < p.inner; ++i) {
            T v = px[o * p.inner + i];
            if (is_max ? v > best : v < best) best = v;
            if (v != v) best = v;  // NaN propagates, as in PyTorch
        }
        y.data()[o] = best;
    }
    return record<T>(y, op, {x}, [xl, yd = y.detach(), outer, inner, unpermute](const Tensor<T>& g) {
        Tensor<T> gc = contiguous_data(g);
        Tensor<T> gl = Tensor<T>::zeros(xl.shape());  // gradient in the permuted layout
        for (int64_t o = 0; o < outer; ++o) {
            const T* row = xl.data() + o * inner;
            int64_t ties = 0;
            for (int64_t i = 0; i < inner; ++i) ties += row[i] == yd.data()[o];
            if (ties == 0) continue;  // NaN row: no gradient
            const T share = gc.data()[o] / static_cast<T>(ties);
            for (int64_t i = 0; i < inner; ++i)
                if (row[i] == yd.data()[o]) gl.data()[o * inner + i] = share;
        }
        return std::vector<Tensor<T>>{unpermute(gl)};
    });
}
}  // namespace detail

template <class T>
Tensor<T> max(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
    return detail::extreme(x, dims, keepdim, true, "max");
}
template <class T>
Tensor<T> min(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
    return detail::extreme(x, dims, keepdim, false, "min");
}

/// Variance over dims; unbiased (divide by n-1) by default, as torch.var.
template <class T>
Tensor<T> var(const Tensor<T>& x, const Shape& dims = {}, bool unbiased = true, bool keepdim = false) {
    const auto p = detail::plan_reduce(x.shape(), dims, keepdim, "var");
    const int64_t denom = p.inner - (unbiased ? 1 : 0);
    MOEKD_CHECK(denom > 0, "var: ", p.inner, " element(s) per reduction of ", x.shape(),
                unbiased ? " (unbiased needs at least 2)" : "");
    Tensor<T> d = x - mean(x, dims, true);
    return sum(d * d, dims, keepdim) / static_cast<T>(denom);
}

template <class T>
Tensor<T> sum_to(const Tensor<T>& x, const Shape& shape) {
    if (x.shape() == shape) return x;
    MOEKD_CHECK(x.dim() >= shape.rank(), "sum_to: cannot reduce ", x.shape(), " to ", shape);
    const int64_t lead = x.dim() - shape.rank();
    Shape dims;
    for (int64_t i = 0; i < x.dim(); ++i) {
        if (i < lead) { dims.push_back(i); continue; }
        const int64_t want = shape[i - lead];
        MOEKD_CHECK(want == x.shape()[i] || want == 1, "sum_to: cannot reduce ", x.shape(), " to ", shape);
        if (want == 1 && x.shape()[i] != 1) dims.push_back(i);
    }
    if (dims.empty()) return x.reshape(shape);
    return sum(x, dims, true).reshape(shape);
}

}  // namespace moekd
