// index.hpp — ops that read or write tensors through integer index tensors: embedding,
// index_select, gather, scatter_add (all differentiable), and argmax / topk that produce the
// indices MoE routing dispatches on.
//
// Reference-grade CPU code. Every index value is range-checked before any memory is touched, and
// the error names the op, the bad value, its position in the index tensor and the shapes. Index
// tensors are copied when a backward closure keeps them, so changing one after the forward can
// never make the backward read out of bounds. Scatters accumulate in index order (deterministic).
// On CUDA tensors the same ops run the device table's gather / scatter_add / argmax / topk
// (kernels/index.cu); the indices are checked on a host copy first, with the same messages.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "../kernels/common.cuh"
#include "../kernels/index.cuh"
#include "elementwise.hpp"
#include "view.hpp"

namespace moekd {
namespace detail {

using kern::topk_before;

/// A contiguous copy owned by the caller (never aliases `idx`), on idx's device.
inline Tensor<int64_t> index_copy_of(const Tensor<int64_t>& idx) {
    Tensor<int64_t> c = Tensor<int64_t>::empty(idx.shape(), idx.device());
    copy_into(c, idx);
    return c;
}

template <class T>
void require_index_device(const Tensor<T>& x, const Tensor<int64_t>& idx, const char* op, const char* what) {
    MOEKD_CHECK(x.device() == idx.device(), op, ": x of shape ", x.shape(), " on ", x.device(), ", ", what,
                " of shape ", idx.shape(), " on ", idx.device(), " (operands on different devices)");
}

/// Checks 0 <= v < n for every value of the contiguous `idx`; the error names the first bad value
/// (`what`: "id", "index"), its position in idx (called `holder`), and the context pieces after.
template <class... Ctx>
void check_indices(const Tensor<int64_t>& idx_any, int64_t n, const char* op, const char* what, const char* holder,
                   const Ctx&... ctx) {
    const Tensor<int64_t> idx = idx_any.to(Device::CPU);  // a device index is checked on a host copy
    const int64_t* p = idx.data();
    for (int64_t i = 0, m = idx.numel(); i < m; ++i)
        if (p[i] < 0 || p[i] >= n)
            throw Error(msg(op, ": ", what, " ", p[i], " at position ", unravel_index(i, idx.shape()), " of ",
                            holder, " of shape ", idx.shape(), " is out of range [0, ", n, ")", ctx...));
}

/// (outer, n, inner) sizes of `shape` around dim d: the layout every per-dim loop here uses.
struct DimLayout {
    int64_t outer = 1, n = 1, inner = 1;
};
inline DimLayout dim_layout(const Shape& s, int64_t d) {
    DimLayout l;
    for (int64_t i = 0; i < s.rank(); ++i) (i < d ? l.outer : i == d ? l.n : l.inner) *= s[i];
    return l;
}

/// dst[p] = x[p with p[dim] replaced by idx[p]] for every position p of idx (validated) and of
/// dst (shaped like idx, any strides). No autograd.
template <class T>
void gather_into(Tensor<T>& dst, const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& idx) {
    Shape xs = x.strides();
    const int64_t sd = xs[dim];
    xs[dim] = 0;
    const T* bx = x.impl()->storage->data();
    const int64_t* bi = idx.impl()->storage->data();
    T* bd = dst.impl()->storage->data();
    if (x.device() != Device::CPU) {
        const Shape* st[3] = {&dst.strides(), &xs, &idx.strides()};
        const int64_t off[3] = {dst.offset(), x.offset(), idx.offset()};
        device_entry(DeviceOps<T>::cuda().gather, "gather", x.shape())(bd, bx, bi, sd,
                                                                      make_loop_plan(idx.shape(), st, off, "gather"));
        return;
    }
    strided_loop<3>(idx.shape(), {&xs, &idx.strides(), &dst.strides()}, {x.offset(), idx.offset(), dst.offset()},
                    [&](auto o) { bd[o[2]] = bx[o[0] + bi[o[1]] * sd]; });
}

/// dst[p with p[dim] replaced by idx[p]] += src[p] for every position p of idx (validated; src
/// at least as large as idx in every dim). Accumulates in row-major order of idx. No autograd.
/// On the device, skip (an index value, -1: none) leaves those elements out (embedding's padding_idx).
template <class T>
void scatter_add_into(Tensor<T>& dst, int64_t dim, const Tensor<int64_t>& idx, const Tensor<T>& src,
                      int64_t skip = -1) {
    Shape ds = dst.strides();
    const int64_t sd = ds[dim];
    ds[dim] = 0;
    T* bd = dst.impl()->storage->data();
    const int64_t* bi = idx.impl()->storage->data();
    const T* bs = src.impl()->storage->data();
    if (dst.device() != Device::CPU) {
        const Shape* st[3] = {&ds, &idx.strides(), &src.strides()};
        const int64_t off[3] = {dst.offset(), idx.offset(), src.offset()};
        device_entry(DeviceOps<T>::cuda().scatter_add, "scatter_add", dst.shape())(
            bd, bi, bs, sd, static_cast<int>(dim), skip, make_loop_plan(idx.shape(), st, off, "scatter_add"));
        return;
    }
    MOEKD_CHECK(skip == -1, "scatter_add_into: skip is a device-path argument");
    strided_loop<3>(idx.shape(), {&ds, &idx.strides(), &src.strides()}, {dst.offset(), idx.offset(), src.offset()},
                    [&](auto o) { bd[o[0] + bi[o[1]] * sd] += bs[o[2]]; });
}

/// Shared shape checks of gather / scatter_add: same rank, index no larger than `x` off `dim`.
template <class T>
int64_t check_gather_shapes(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index, const char* op) {
    require_index_device(x, index, op, "index");
    MOEKD_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), op);
    MOEKD_CHECK(index.dim() == x.dim(), op, ": index of shape ", index.shape(), " must have the rank of x ",
                x.shape(), " (", index.dim(), " vs ", x.dim(), ")");
    for (int64_t i = 0; i < x.dim(); ++i)
        MOEKD_CHECK(i == d || index.shape()[i] <= x.shape()[i], op, ": index of shape ", index.shape(),
                    " is larger than x of shape ", x.shape(), " in dim ", i, " (only dim ", d, " may differ)");
    return d;
}

/// embedding on the device: a gather of rows (the ids read as an (n, D) index with stride 0
/// along D) and, backward, a scatter-add of the gradient rows into zeros (V, D), a thread per
/// column walking the ids in order (the CPU's order) and skipping padding_idx.
template <class T>
Tensor<T> embedding_device(const Tensor<T>& weight, const Tensor<int64_t>& idc, const Shape& out_shape, int64_t V,
                           int64_t D, int64_t padding_idx) {
    const int64_t n = idc.numel();
    const Device dev = weight.device();
    Tensor<T> out = Tensor<T>::empty(out_shape, dev);
    {
        Tensor<T> o2 = as_strided(out, {n, D}, {D, 1}, 0);
        Tensor<T> w = weight.detach();
        Tensor<int64_t> i2 = as_strided(idc, {n, D}, {1, 0}, 0);
        gather_into(o2, w, 0, i2);
    }
    return record<T>(out, "embedding", {weight}, [idc, V, D, n, padding_idx, dev](const Tensor<T>& g) {
        Tensor<T> gw = Tensor<T>::zeros({V, D}, dev);
        const Tensor<T> gcont = contiguous_data(g);
        Tensor<T> gc = as_strided(gcont, {n, D}, {D, 1}, gcont.offset());
        scatter_add_into(gw, 0, as_strided(idc, {n, D}, {1, 0}, 0), gc, padding_idx);
        return std::vector<Tensor<T>>{gw};
    });
}

}  // namespace detail

// ---- embedding ---------------------------------------------------------------------------------
/// out[..., :] = weight[ids[...], :].   weight: (V, D), ids: any shape -> out: (*ids.shape, D)
/// Rows at padding_idx (-1: none) get no gradient, as torch.nn.Embedding(padding_idx=...).
template <class T>
Tensor<T> embedding(const Tensor<T>& weight, const Tensor<int64_t>& ids, int64_t padding_idx = -1) {
    detail::require_index_device(weight, ids, "embedding", "ids");
    MOEKD_CHECK(weight.dim() == 2, "embedding: weight must be 2-D (V, D), got shape ", weight.shape());
    const int64_t V = weight.shape()[0], D = weight.shape()[1];
    MOEKD_CHECK(padding_idx == -1 || (padding_idx >= 0 && padding_idx < V), "embedding: padding_idx ", padding_idx,
                " out of range for weight of shape ", weight.shape(), " (use -1 for none)");
    Tensor<int64_t> idc = detail::index_copy_of(ids);
    detail::check_indices(idc, V, "embedding", "id", "ids", " for weight of shape ", weight.shape(), " (V = ", V, ")");
    Shape out_shape = ids.shape();
    out_shape.push_back(D);
    if (weight.device() != Device::CPU) return detail::embedding_device(weight, idc, out_shape, V, D, padding_idx);
    Tensor<T> wc = detail::contiguous_data(weight);
    Tensor<T> out = Tensor<T>::empty(out_shape);
    const int64_t* pi = idc.data();
    for (int64_t i = 0, n = idc.numel(); i < n; ++i) std::copy_n(wc.data() + pi[i] * D, D, out.data() + i * D);
    return record<T>(out, "embedding", {weight}, [idc, V, D, padding_idx](const Tensor<T>& g) {
        // gw: (V, D), rows scatter-added; repeated ids accumulate
        Tensor<T> gc = detail::contiguous_data(g);
        Tensor<T> gw = Tensor<T>::zeros({V, D});
        const int64_t* pi = idc.data();
        for (int64_t i = 0, n = idc.numel(); i < n; ++i) {
            if (pi[i] == padding_idx) continue;
            T* row = gw.data() + pi[i] * D;
            const T* src = gc.data() + i * D;
            for (int64_t j = 0; j < D; ++j) row[j] += src[j];
        }
        return std::vector<Tensor<T>>{gw};
    });
}

// ---- index_select ------------------------------------------------------------------------------
/// Picks entries index[j] along dim: out.size(dim) = index.numel(), other dims as x.
/// x: (..., N, ...), index: (M,) -> (..., M, ...). Backward adds g into zeros at the indices.
template <class T>
Tensor<T> index_select(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
    detail::require_index_device(x, index, "index_select", "index");
    MOEKD_CHECK(x.dim() >= 1, "index_select: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "index_select");
    MOEKD_CHECK(index.dim() <= 1, "index_select: index must be 1-D, got shape ", index.shape(), " (x ", x.shape(), ")");
    Tensor<int64_t> idc = detail::index_copy_of(index);
    const auto l = detail::dim_layout(x.shape(), d);
    detail::check_indices(idc, l.n, "index_select", "index", "index", " for dim ", d, " of x with shape ", x.shape());
    const int64_t m = idc.numel();
    Shape out_shape = x.shape();
    out_shape[d] = m;
    if (x.device() != Device::CPU) {
        // the 1-D index read along dim d of the output's shape (stride 0 elsewhere): a gather
        Shape is(out_shape.rank(), 0);
        is[d] = 1;
        const Tensor<int64_t> iv = detail::as_strided(idc, out_shape, is, 0);
        Tensor<T> out = Tensor<T>::empty(out_shape, x.device());
        detail::gather_into(out, x.detach(), d, iv);
        const Shape in_shape = x.shape();
        return record<T>(out, "index_select", {x}, [iv, in_shape, d](const Tensor<T>& g) {
            Tensor<T> gx = Tensor<T>::zeros(in_shape, g.device());
            detail::scatter_add_into(gx, d, iv, g);
            return std::vector<Tensor<T>>{gx};
        });
    }
    Tensor<T> xc = detail::contiguous_data(x);
    Tensor<T> out = Tensor<T>::empty(out_shape);
    const int64_t* pi = idc.data();
    for (int64_t o = 0; o < l.outer; ++o)
        for (int64_t j = 0; j < m; ++j)
            std::copy_n(xc.data() + (o * l.n + pi[j]) * l.inner, l.inner, out.data() + (o * m + j) * l.inner);
    const Shape in_shape = x.shape();
    return record<T>(out, "index_select", {x}, [idc, in_shape, l, m](const Tensor<T>& g) {
        Tensor<T> gc = detail::contiguous_data(g);
        Tensor<T> gx = Tensor<T>::zeros(in_shape);
        const int64_t* pi = idc.data();
        for (int64_t o = 0; o < l.outer; ++o)
            for (int64_t j = 0; j < m; ++j) {
                T* dst = gx.data() + (o * l.n + pi[j]) * l.inner;
                const T* src = gc.data() + (o * m + j) * l.inner;
                for (int64_t k = 0; k < l.inner; ++k) dst[k] += src[k];
            }
        return std::vector<Tensor<T>>{gx};
    });
}

// ---- gather / scatter_add ----------------------------------------------------------------------
/// out[i][j][k] = x[i][index[i][j][k]][k] for dim = 1 (torch.gather). out has index's shape;
/// index has x's rank and index.size(d) <= x.size(d) for d != dim. Backward: scatter_add.
template <class T>
Tensor<T> gather(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
    const int64_t d = detail::check_gather_shapes(x, dim, index, "gather");
    Tensor<int64_t> idc = detail::index_copy_of(index);
    detail::check_indices(idc, x.shape()[d], "gather", "index", "index", " for dim ", d, " of x with shape ",
                          x.shape());
    Tensor<T> out = Tensor<T>::empty(index.shape(), x.device());
    detail::gather_into(out, x, d, idc);
    const Shape in_shape = x.shape();
    return record<T>(out, "gather", {x}, [idc, in_shape, d](const Tensor<T>& g) {
        Tensor<T> gx = Tensor<T>::zeros(in_shape, g.device());
        detail::scatter_add_into(gx, d, idc, g);
        return std::vector<Tensor<T>>{gx};
    });
}

/// out = x, then out[i][index[i][j][k]][k] += src[i][j][k] for dim = 1 (torch.scatter_add,
/// out of place). index, src and x share a rank; index.size(d) <= src.size(d) for every d and
/// index.size(d) <= x.size(d) for d != dim. Gradients: x gets g, src gets gather(g, dim, index).
template <class T>
Tensor<T> scatter_add(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index, const Tensor<T>& src) {
    const int64_t d = detail::check_gather_shapes(x, dim, index, "scatter_add");
    detail::require_same_device(x, src, "scatter_add");
    MOEKD_CHECK(src.dim() == x.dim(), "scatter_add: src of shape ", src.shape(), " must have the rank of x ",
                x.shape());
    for (int64_t i = 0; i < x.dim(); ++i)
        MOEKD_CHECK(index.shape()[i] <= src.shape()[i], "scatter_add: index of shape ", index.shape(),
                    " is larger than src of shape ", src.shape(), " in dim ", i);
    Tensor<int64_t> idc = detail::index_copy_of(index);
    detail::check_indices(idc, x.shape()[d], "scatter_add", "index", "index", " for dim ", d, " of x with shape ",
                          x.shape());
    Tensor<T> out = Tensor<T>::empty(x.shape(), x.device());
    detail::copy_into(out, x);
    detail::scatter_add_into(out, d, idc, src);
    const Shape src_shape = src.shape();
    return record<T>(out, "scatter_add", {x, src}, [x, src, idc, src_shape, d](const Tensor<T>& g) {
        Tensor<T> gsrc;
        if (needs_grad(src)) {
            // positions of src that index does not cover get zero gradient
            gsrc = Tensor<T>::zeros(src_shape, g.device());
            Tensor<T> covered = detail::as_strided(gsrc, idc.shape(), gsrc.strides(), 0);
            detail::gather_into(covered, g, d, idc);
        }
        return std::vector<Tensor<T>>{needs_grad(x) ? g : Tensor<T>(), gsrc};
    });
}

// ---- argmax / topk (indices; no gradient of their own) -----------------------------------------
/// Position of the largest entry along dim (the first one on ties; NaN counts as largest).
/// x: (..., N, ...) -> (..., ...) or (..., 1, ...) with keepdim.
template <class T>
Tensor<int64_t> argmax(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
    MOEKD_CHECK(x.dim() >= 1, "argmax: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "argmax");
    MOEKD_CHECK(x.shape()[d] > 0, "argmax: dim ", d, " of x with shape ", x.shape(), " is empty");
    const auto l = detail::dim_layout(x.shape(), d);
    Tensor<T> xc = detail::contiguous_data(x);
    Shape out_shape = x.shape();
    if (keepdim) out_shape[d] = 1;
    else out_shape.erase(out_shape.begin() + d);
    Tensor<int64_t> out = Tensor<int64_t>::empty(out_shape, x.device());
    if (x.device() != Device::CPU) {
        detail::device_entry(DeviceOps<T>::cuda().argmax, "argmax", x.shape())(xc.data(), out.data(), l.outer, l.n, l.inner);
        return out;
    }
    for (int64_t o = 0; o < l.outer; ++o)
        for (int64_t k = 0; k < l.inner; ++k) {
            const T* col = xc.data() + o * l.n * l.inner + k;
            int64_t best = 0;
            for (int64_t j = 1; j < l.n; ++j)
                if (detail::topk_before(col[j * l.inner], j, col[best * l.inner], best)) best = j;
            out.data()[o * l.inner + k] = best;
        }
    return out;
}

/// The k largest entries along dim, sorted descending; ties go to the lower index, so the
/// result is deterministic. values: x's shape with size k at dim (differentiable, via gather);
/// indices: the same shape, positions along dim.
template <class T>
std::pair<Tensor<T>, Tensor<int64_t>> topk(const Tensor<T>& x, int64_t k, int64_t dim = -1) {
    MOEKD_CHECK(x.dim() >= 1, "topk: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "topk");
    MOEKD_CHECK(k >= 0 && k <= x.shape()[d], "topk: k = ", k, " out of range [0, ", x.shape()[d], "] for dim ", d,
                " of x with shape ", x.shape());
    const auto l = detail::dim_layout(x.shape(), d);
    Tensor<T> xc = detail::contiguous_data(x);
    Shape out_shape = x.shape();
    out_shape[d] = k;
    Tensor<int64_t> idx = Tensor<int64_t>::empty(out_shape, x.device());
    if (x.device() != Device::CPU) {
        detail::device_entry(DeviceOps<T>::cuda().topk, "topk", x.shape())(xc.data(), idx.data(), l.outer, l.n, l.inner, k);
        return {gather(x, d, idx), idx};
    }
    std::vector<int64_t> order(l.n);
    for (int64_t o = 0; o < l.outer; ++o)
        for (int64_t i = 0; i < l.inner; ++i) {
            const T* col = xc.data() + o * l.n * l.inner + i;
            for (int64_t j = 0; j < l.n; ++j) order[j] = j;
            // a total order (index breaks ties), so partial_sort's result is unique
            std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
                return detail::topk_before(col[a * l.inner], a, col[b * l.inner], b);
            });
            for (int64_t j = 0; j < k; ++j) idx.data()[(o * k + j) * l.inner + i] = order[j];
        }
    return {gather(x, d, idx), idx};
}

}  // namespace moekd
