// join.hpp — joining tensors (concat, stack) and cutting them apart (split, chunk).
//
// concat copies into one fresh tensor and its backward hands each input its slice of the
// gradient. split and chunk return narrow() views that share storage with the input, so their
// autograd comes from narrow's; stack is concat of unsqueezed inputs. Semantics follow torch.cat,
// torch.stack, torch.split and torch.chunk (the last piece of a split may be smaller).
#pragma once

#include <vector>

#include "elementwise.hpp"
#include "view.hpp"

namespace moekd {

/// Joins tensors along an existing dim. All shapes must agree except on dim.
/// tensors[i]: (..., N_i, ...) -> (..., sum N_i, ...)
template <class T>
Tensor<T> concat(const std::vector<Tensor<T>>& tensors, int64_t dim = 0) {
    MOEKD_CHECK(!tensors.empty(), "concat: expects at least one tensor, got an empty list");
    const Tensor<T>& first = tensors[0];
    MOEKD_CHECK(first.defined(), "concat: tensor 0 is undefined");
    MOEKD_CHECK(first.dim() >= 1, "concat: tensors must have at least 1 dim, tensor 0 has shape ", first.shape());
    const int64_t d = normalize_dim(dim, first.dim(), "concat");
    int64_t total = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const Tensor<T>& t = tensors[i];
        MOEKD_CHECK(t.defined(), "concat: tensor ", i, " is undefined");
        MOEKD_CHECK(t.device() == first.device(), "concat: tensor ", i, " of shape ", t.shape(), " is on ", t.device(),
                    " but tensor 0 of shape ", first.shape(), " is on ", first.device());
        bool ok = t.dim() == first.dim();
        for (int64_t k = 0; ok && k < t.dim(); ++k) ok = k == d || t.shape()[k] == first.shape()[k];
        MOEKD_CHECK(ok, "concat: tensor ", i, " has shape ", t.shape(), " but tensor 0 has shape ", first.shape(),
                    "; shapes must agree except on dim ", d);
        total += t.shape()[d];
    }
    Shape out_shape = first.shape();
    out_shape[d] = total;
    Tensor<T> out = Tensor<T>::empty(out_shape, first.device());
    std::vector<int64_t> starts;
    int64_t off = 0;
    for (const Tensor<T>& t : tensors) {
        starts.push_back(off);
        Tensor<T> dst = detail::as_strided(out, t.shape(), out.strides(), off * out.strides()[d]);
        detail::copy_into(dst, t);
        off += t.shape()[d];
    }
    return record<T>(out, "concat", tensors, [tensors, starts, d](const Tensor<T>& g) {
        std::vector<Tensor<T>> gs(tensors.size());
        for (size_t i = 0; i < tensors.size(); ++i)
            if (needs_grad(tensors[i])) gs[i] = g.narrow(d, starts[i], tensors[i].shape()[d]);
        return gs;
    });
}

/// Joins same-shape tensors along a new dim. tensors[i]: S -> (..., len(tensors), ...) with the
/// new dim at `dim` (in [-(rank+1), rank]).
template <class T>
Tensor<T> stack(const std::vector<Tensor<T>>& tensors, int64_t dim = 0) {
    MOEKD_CHECK(!tensors.empty(), "stack: expects at least one tensor, got an empty list");
    for (size_t i = 0; i < tensors.size(); ++i) {
        MOEKD_CHECK(tensors[i].defined(), "stack: tensor ", i, " is undefined");
        MOEKD_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: tensor ", i, " has shape ", tensors[i].shape(),
                    " but tensor 0 has shape ", tensors[0].shape(), "; stack needs equal shapes");
    }
    const int64_t d = normalize_dim(dim, tensors[0].dim() + 1, "stack");
    std::vector<Tensor<T>> parts;
    parts.reserve(tensors.size());
    for (const Tensor<T>& t : tensors) parts.push_back(t.unsqueeze(d));
    return concat(parts, d);
}

/// Cuts x along dim into pieces of the given sizes (they must sum to x.size(dim)). Views.
template <class T>
std::vector<Tensor<T>> split(const Tensor<T>& x, const std::vector<int64_t>& sizes, int64_t dim = 0) {
    MOEKD_CHECK(x.dim() >= 1, "split: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "split");
    int64_t total = 0;
    for (int64_t s : sizes) {
        MOEKD_CHECK(s >= 0, "split: negative size ", s, " in sizes ", Shape(sizes), " for x of shape ", x.shape());
        total += s;
    }
    MOEKD_CHECK(total == x.shape()[d], "split: sizes ", Shape(sizes), " sum to ", total, " but dim ", d,
                " of x with shape ", x.shape(), " has ", x.shape()[d]);
    std::vector<Tensor<T>> out;
    out.reserve(sizes.size());
    int64_t off = 0;
    for (int64_t s : sizes) {
        out.push_back(x.narrow(d, off, s));
        off += s;
    }
    return out;
}

/// Cuts x along dim into pieces of split_size; the last one holds the remainder (torch.split).
/// (Pass sizes as std::vector<int64_t>{...} to pick the overload above.)
template <class T>
std::vector<Tensor<T>> split(const Tensor<T>& x, int64_t split_size, int64_t dim = 0) {
    MOEKD_CHECK(x.dim() >= 1, "split: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "split");
    const int64_t n = x.shape()[d];
    MOEKD_CHECK(split_size > 0 || (split_size == 0 && n == 0), "split: split_size ", split_size,
                " must be positive (0 only for an empty dim); x has shape ", x.shape());
    if (split_size == 0) return {x.narrow(d, 0, 0)};
    const int64_t pieces = std::max<int64_t>((n + split_size - 1) / split_size, 1);
    std::vector<int64_t> sizes(pieces, split_size);
    sizes.back() = n - split_size * (pieces - 1);
    return split(x, sizes, d);
}

/// Cuts x along dim into `chunks` pieces of ceil(n / chunks) each (torch.chunk): the last may be
/// smaller, and fewer than `chunks` pieces come back when n does not fill them all.
template <class T>
std::vector<Tensor<T>> chunk(const Tensor<T>& x, int64_t chunks, int64_t dim = 0) {
    MOEKD_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks, " for x of shape ", x.shape());
    MOEKD_CHECK(x.dim() >= 1, "chunk: x must have at least 1 dim, got shape ", x.shape());
    const int64_t d = normalize_dim(dim, x.dim(), "chunk");
    const int64_t n = x.shape()[d];
    if (n == 0) return split(x, std::vector<int64_t>(chunks, 0), d);  // torch: `chunks` empty pieces
    return split(x, (n + chunks - 1) / chunks, d);
}

}  // namespace moekd
