// select.hpp — comparisons that make masks (eq, ne, lt, le, gt, ge -> Tensor<uint8_t>), mask
// logic, and the ops that pick values by mask: where(cond, a, b) and masked_fill(x, mask, v).
//
// Reference-grade CPU code on detail::strided_loop with NumPy broadcasting. Masks are uint8
// tensors; any non-zero value counts as true. Gradients are routed by the mask and summed back
// to each operand's shape (sum_to), so broadcast operands get correct gradients.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "elementwise.hpp"
#include "reduce.hpp"

namespace moekd {
namespace detail {

/// c = f(a, b) ? 1 : 0 with broadcasting; a fresh contiguous uint8 tensor.
template <class T, class F>
Tensor<uint8_t> compare_map(const Tensor<T>& a, const Tensor<T>& b, F f, const char* op) {
    require_cpu(a, op);
    require_same_device(a, b, op);
    const Shape out_shape = a.shape() == b.shape() ? a.shape() : broadcast_shapes(a.shape(), b.shape(), op);
    Tensor<uint8_t> c = Tensor<uint8_t>::empty(out_shape);
    const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
    const T* ba = a.impl()->storage->data();
    const T* bb = b.impl()->storage->data();
    uint8_t* pc = c.impl()->storage->data();
    strided_loop<3>(out_shape, {&sa, &sb, &c.strides()}, {a.offset(), b.offset(), c.offset()},
                    [&](auto o) { pc[o[2]] = f(ba[o[0]], bb[o[1]]) ? 1 : 0; });
    return c;
}

/// The gradient g (out_shape) kept where the mask (broadcast to out_shape) is `keep_when`, zero
/// elsewhere. A fresh contiguous tensor of out_shape.
template <class T>
Tensor<T> mask_route(const Tensor<uint8_t>& mask, const Tensor<T>& g, bool keep_when) {
    const Shape& out_shape = g.shape();
    Tensor<T> r = Tensor<T>::empty(out_shape);
    const Shape sm = broadcast_strides(mask, out_shape);
    const uint8_t* bm = mask.impl()->storage->data();
    const T* bg = g.impl()->storage->data();
    T* pr = r.impl()->storage->data();
    strided_loop<3>(out_shape, {&sm, &g.strides(), &r.strides()}, {mask.offset(), g.offset(), r.offset()},
                    [&](auto o) { pr[o[2]] = (bm[o[0]] != 0) == keep_when ? bg[o[1]] : T(0); });
    return r;
}

}  // namespace detail

// ---- comparisons: Tensor<T> vs Tensor<T> (broadcast) or vs a scalar -> Tensor<uint8_t> -------------
#define MOEKD_COMPARISON(name, expr)                                                                       \
    template <class T>                                                                                     \
    Tensor<uint8_t> name(const Tensor<T>& a, const Tensor<T>& b) {                                         \
        return detail::compare_map(a, b, [](T x, T y) { return expr; }, #name);                            \
    }                                                                                                      \
    template <class T>                                                                                     \
    Tensor<uint8_t> name(const Tensor<T>& a, std::type_identity_t<T> s) {                                  \
        return detail::compare_map(a, Tensor<T>::scalar(s), [](T x, T y) { return expr; }, #name);         \
    }
MOEKD_COMPARISON(eq, x == y)
MOEKD_COMPARISON(ne, x != y)
MOEKD_COMPARISON(lt, x < y)
MOEKD_COMPARISON(le, x <= y)
MOEKD_COMPARISON(gt, x > y)
MOEKD_COMPARISON(ge, x >= y)
#undef MOEKD_COMPARISON

// ---- mask logic ---------------------------------------------------------------------------------
/// 1 where mask is 0, else 0.
inline Tensor<uint8_t> logical_not(const Tensor<uint8_t>& mask) {
    detail::require_cpu(mask, "logical_not");
    Tensor<uint8_t> m = detail::contiguous_data(mask);
    Tensor<uint8_t> out = Tensor<uint8_t>::empty(mask.shape());
    for (int64_t i = 0, n = out.numel(); i < n; ++i) out.data()[i] = m.data()[i] == 0 ? 1 : 0;
    return out;
}
/// Broadcasting AND / OR of two masks.
inline Tensor<uint8_t> logical_and(const Tensor<uint8_t>& a, const Tensor<uint8_t>& b) {
    return detail::compare_map(a, b, [](uint8_t x, uint8_t y) { return x != 0 && y != 0; }, "logical_and");
}
inline Tensor<uint8_t> logical_or(const Tensor<uint8_t>& a, const Tensor<uint8_t>& b) {
    return detail::compare_map(a, b, [](uint8_t x, uint8_t y) { return x != 0 || y != 0; }, "logical_or");
}

// ---- where --------------------------------------------------------------------------------------
/// out = cond ? a : b elementwise, all three broadcast together.
/// cond: Sc, a: Sa, b: Sb -> broadcast(Sc, Sa, Sb). Gradients: a gets g where cond, b where not.
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, const Tensor<T>& a, const Tensor<T>& b) {
    detail::require_cpu(cond, "where");
    detail::require_cpu(a, "where");
    detail::require_same_device(a, b, "where");
    Shape out_shape;
    try {
        out_shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
    } catch (const Error&) {
        throw Error(msg("where: cond ", cond.shape(), ", a ", a.shape(), " and b ", b.shape(),
                        " do not broadcast to one shape"));
    }
    Tensor<T> out = Tensor<T>::empty(out_shape);
    const Shape sc = detail::broadcast_strides(cond, out_shape), sa = detail::broadcast_strides(a, out_shape),
                sb = detail::broadcast_strides(b, out_shape);
    const uint8_t* bc = cond.impl()->storage->data();
    const T* ba = a.impl()->storage->data();
    const T* bb = b.impl()->storage->data();
    T* po = out.data();
    detail::strided_loop<4>(out_shape, {&sc, &sa, &sb, &out.strides()},
                            {cond.offset(), a.offset(), b.offset(), int64_t(0)},
                            [&](auto o) { po[o[3]] = bc[o[0]] != 0 ? ba[o[1]] : bb[o[2]]; });
    return record<T>(out, "where", {a, b}, [cc = cond.detach(), a, b](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{
            needs_grad(a) ? sum_to(detail::mask_route(cc, g, true), a.shape()) : Tensor<T>(),
            needs_grad(b) ? sum_to(detail::mask_route(cc, g, false), b.shape()) : Tensor<T>()};
    });
}
/// where with a scalar for either branch (e.g. where(mask, x, 0.0)).
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, const Tensor<T>& a, std::type_identity_t<T> b) {
    return where(cond, a, Tensor<T>::scalar(b));
}
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, std::type_identity_t<T> a, const Tensor<T>& b) {
    return where(cond, Tensor<T>::scalar(a), b);
}

// ---- masked_fill --------------------------------------------------------------------------------
/// out = mask ? value : x, out of place; mask broadcasts to x's shape (not beyond it).
/// x: S, mask: broadcastable to S -> S. Gradient: g where mask is 0, zero where it is set.
template <class T>
Tensor<T> masked_fill(const Tensor<T>& x, const Tensor<uint8_t>& mask, std::type_identity_t<T> value) {
    detail::require_cpu(x, "masked_fill");
    detail::require_cpu(mask, "masked_fill");
    bool ok = mask.dim() <= x.dim();
    for (int64_t i = 0; ok && i < mask.dim(); ++i) {
        const int64_t m = mask.shape()[i], s = x.shape()[x.dim() - mask.dim() + i];
        ok = m == s || m == 1;
    }
    MOEKD_CHECK(ok, "masked_fill: mask of shape ", mask.shape(), " does not broadcast to x of shape ", x.shape());
    Tensor<T> out = Tensor<T>::empty(x.shape());
    const Shape sm = detail::broadcast_strides(mask, x.shape());
    const uint8_t* bm = mask.impl()->storage->data();
    const T* bx = x.impl()->storage->data();
    T* po = out.data();
    detail::strided_loop<3>(x.shape(), {&sm, &x.strides(), &out.strides()}, {mask.offset(), x.offset(), int64_t(0)},
                            [&](auto o) { po[o[2]] = bm[o[0]] != 0 ? value : bx[o[1]]; });
    return record<T>(out, "masked_fill", {x}, [mc = mask.detach()](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{detail::mask_route(mc, g, false)};
    });
}

}  // namespace moekd
