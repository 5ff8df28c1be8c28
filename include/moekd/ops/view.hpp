// view.hpp — views that share storage (reshape, transpose, permute, narrow, expand, squeeze ...)
// with their backward rules, plus contiguous() and clone().
//
// A view never copies; only reshape of a non-contiguous tensor and contiguous() do (as PyTorch).
// Backward of every view maps the output gradient back to the input's geometry.
#pragma once

#include <numeric>

#include "../autograd/node.hpp"
#include "reduce_to.hpp"

namespace moekd {

namespace detail {
/// Resolves one -1 in a requested shape against numel.
inline Shape infer_shape(Shape s, int64_t numel, const char* op, const Shape& from) {
    int64_t known = 1, neg = -1;
    for (int64_t i = 0; i < s.rank(); ++i) {
        if (s[i] == -1) {
            MOEKD_CHECK(neg < 0, op, ": more than one -1 in shape ", s);
            neg = i;
        } else {
            MOEKD_CHECK(s[i] >= 0, op, ": negative size in shape ", s);
            known *= s[i];
        }
    }
    if (neg >= 0) {
        MOEKD_CHECK(known > 0 && numel % known == 0, op, ": cannot view ", from, " as ", s);
        s[neg] = numel / known;
    }
    MOEKD_CHECK(moekd::numel(s) == numel, op, ": shape ", s, " does not hold the ", numel, " elements of ", from);
    return s;
}
}  // namespace detail

template <class T>
Tensor<T> Tensor<T>::view(const Shape& shape_req) const {
    const Shape s = detail::infer_shape(shape_req, numel(), "view", shape());
    MOEKD_CHECK(is_contiguous(), "view: tensor of shape ", shape(), " with strides ", strides(),
                " is not contiguous. HINT: use reshape() (copies) or contiguous().view()");
    Tensor<T> out = detail::as_strided(*this, s, contiguous_strides(s), offset());
    const Shape in_shape = shape();
    return record<T>(out, "view", {*this}, [in_shape](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{g.reshape(in_shape)};
    });
}

template <class T>
Tensor<T> Tensor<T>::reshape(const Shape& s) const {
    return is_contiguous() ? view(s) : contiguous().view(s);
}

template <class T>
Tensor<T> Tensor<T>::flatten(int64_t start_dim, int64_t end_dim) const {
    if (dim() == 0) return reshape({1});
    const int64_t a = normalize_dim(start_dim, dim(), "flatten"), b = normalize_dim(end_dim, dim(), "flatten");
    MOEKD_CHECK(a <= b, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
    Shape s;
    for (int64_t i = 0; i < a; ++i) s.push_back(shape()[i]);
    int64_t m = 1;
    for (int64_t i = a; i <= b; ++i) m *= shape()[i];
    s.push_back(m);
    for (int64_t i = b + 1; i < dim(); ++i) s.push_back(shape()[i]);
    return reshape(s);
}

template <class T>
Tensor<T> Tensor<T>::permute(const Shape& dims) const {
    MOEKD_CHECK(dims.rank() == dim(), "permute: ", dims.rank(), " dims given for a tensor of shape ", shape());
    Shape s(dim()), st(dim()), inv(dim());
    std::vector<bool> used(dim(), false);
    for (int64_t i = 0; i < dim(); ++i) {
        int64_t d = normalize_dim(dims[i], dim(), "permute");
        MOEKD_CHECK(!used[d], "permute: dim ", d, " repeated in ", dims);
        used[d] = true;
        s[i] = shape()[d];
        st[i] = strides()[d];
        inv[d] = i;
    }
    Tensor<T> out = detail::as_strided(*this, s, st, offset());
    return record<T>(out, "permute", {*this}, [inv](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{g.permute(inv)};
    });
}

template <class T>
Tensor<T> Tensor<T>::transpose(int64_t d0, int64_t d1) const {
    Shape p(dim());
    std::iota(p.begin(), p.end(), 0);
    std::swap(p[normalize_dim(d0, dim(), "transpose")], p[normalize_dim(d1, dim(), "transpose")]);
    return permute(p);
}

template <class T>
Tensor<T> Tensor<T>::narrow(int64_t d, int64_t start, int64_t length) const {
    d = normalize_dim(d, dim(), "narrow");
    const int64_t n = shape()[d];
    if (start < 0) start += n;
    MOEKD_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: [", start, ", ", start + length,
                ") out of range for dim ", d, " of shape ", shape());
    Shape s = shape();
    s[d] = length;
    Tensor<T> out = detail::as_strided(*this, s, strides(), offset() + start * strides()[d]);
    const Shape in_shape = shape();
    return record<T>(out, "narrow", {*this}, [in_shape, d, start, length](const Tensor<T>& g) {
        Tensor<T> gx = Tensor<T>::zeros(in_shape, g.device());
        Tensor<T> dst = detail::as_strided(gx, g.shape(), gx.strides(), start * gx.strides()[d]);
        detail::copy_into(dst, g);
        (void)length;
        return std::vector<Tensor<T>>{gx};
    });
}

template <class T>
Tensor<T> Tensor<T>::slice(int64_t d, int64_t start, int64_t end) const {
    d = normalize_dim(d, dim(), "slice");
    const int64_t n = shape()[d];
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, start, n);
    return narrow(d, start, end - start);
}

template <class T>
Tensor<T> Tensor<T>::select(int64_t d, int64_t index) const {
    d = normalize_dim(d, dim(), "select");
    const int64_t n = shape()[d];
    MOEKD_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of shape ", shape());
    return narrow(d, index < 0 ? index + n : index, 1).squeeze(d);
}

template <class T>
Tensor<T> Tensor<T>::expand(const Shape& target) const {
    MOEKD_CHECK(target.rank() >= dim(), "expand: cannot expand shape ", shape(), " to fewer dims ", target);
    const int64_t lead = target.rank() - dim();
    Shape s(target.rank()), st(target.rank(), 0);
    for (int64_t i = 0; i < target.rank(); ++i) {
        if (i < lead) {
            MOEKD_CHECK(target[i] >= 0, "expand: size -1 not allowed for a new leading dim in ", target);
            s[i] = target[i];
            continue;
        }
        const int64_t have = shape()[i - lead];
        const int64_t want = target[i] == -1 ? have : target[i];
        MOEKD_CHECK(have == want || have == 1, "expand: shape ", shape(), " cannot be expanded to ", target,
                    " (dim ", i, ": ", have, " -> ", want, ")");
        s[i] = want;
        st[i] = have == want ? strides()[i - lead] : 0;
    }
    Tensor<T> out = detail::as_strided(*this, s, st, offset());
    const Shape in_shape = shape();
    return record<T>(out, "expand", {*this}, [in_shape](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{sum_to(g, in_shape)};
    });
}

template <class T>
Tensor<T> Tensor<T>::squeeze(int64_t d) const {
    d = normalize_dim(d, dim(), "squeeze");
    if (dim() == 0 || shape()[d] != 1) return *this;  // as PyTorch: squeezing a non-1 dim is a no-op
    Shape s = shape(), st = strides();
    s.erase(s.begin() + d);
    st.erase(st.begin() + d);
    Tensor<T> out = detail::as_strided(*this, s, st, offset());
    const Shape in_shape = shape();
    return record<T>(out, "squeeze", {*this}, [in_shape](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{g.reshape(in_shape)};
    });
}

template <class T>
Tensor<T> Tensor<T>::unsqueeze(int64_t d) const {
    d = normalize_dim(d, dim() + 1, "unsqueeze");
    Shape s = shape(), st = strides();
    const int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
    s.insert(s.begin() + d, 1);
    st.insert(st.begin() + d, stride);
    Tensor<T> out = detail::as_strided(*this, s, st, offset());
    const Shape in_shape = shape();
    return record<T>(out, "unsqueeze", {*this}, [in_shape](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{g.reshape(in_shape)};
    });
}

template <class T>
Tensor<T> Tensor<T>::contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
}

template <class T>
Tensor<T> Tensor<T>::clone() const {
    Tensor<T> out = Tensor<T>::empty(shape(), device());
    detail::copy_into(out, *this);
    return record<T>(out, "clone", {*this}, [](const Tensor<T>& g) { return std::vector<Tensor<T>>{g}; });
}

}  // namespace moekd
