// select.hpp — comparisons that make masks (eq, ne, lt, le, gt, ge -> Tensor<uint8_t>), mask
// logic, and the ops that pick values by mask: where(cond, a, b) and masked_fill(x, mask, v).
//
// Reference-grade CPU code on detail::strided_loop with NumPy broadcasting; on CUDA tensors the
// device table's compare / where / mask logic (kernels/index.cu) run the same loops. Masks are uint8
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

/// compare_map's device op: a CompareOp, or kLogic + a LogicOp (mask logic, T = uint8_t).
constexpr int kLogic = 16;
template <class T>
void device_compare(int cmp, uint8_t* c, const T* a, const T* b, const LoopPlan& plan, const Shape& shape,
                    const char* op) {
    if constexpr (std::is_same_v<T, uint8_t>) {
        if (cmp >= kLogic) {
            device_entry(DeviceMaskOps::cuda().logic, op, shape)(static_cast<LogicOp>(cmp - kLogic), c, a, b, plan);
            return;
        }
    }
    device_entry(DeviceOps<T>::cuda().compare, op, shape)(static_cast<CompareOp>(cmp), c, a, b, plan);
}

/// c = f(a, b) ? 1 : 0 with broadcasting; a fresh contiguous uint8 tensor. On the device the op
/// is `cmp` (see device_compare).
template <class T, class F>
Tensor<uint8_t> compare_map(const Tensor<T>& a_in, const Tensor<T>& b_in, F f, int cmp, const char* op) {
    const Tensor<T> a = to_common_device(a_in, b_in), b = to_common_device(b_in, a_in);
    require_same_device(a, b, op);
    const Shape out_shape = a.shape() == b.shape() ? a.shape() : broadcast_shapes(a.shape(), b.shape(), op);
    Tensor<uint8_t> c = Tensor<uint8_t>::empty(out_shape, a.device());
    const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
    if (a.device() != Device::CPU) {
        const Shape* st[3] = {&c.strides(), &sa, &sb};
        const int64_t off[3] = {0, a.offset(), b.offset()};
        if (c.numel() > 0)
            device_compare<T>(cmp, c.data(), a.impl()->storage->data(), b.impl()->storage->data(),
                              make_loop_plan(out_shape, st, off, op), out_shape, op);
        return c;
    }
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
    Tensor<T> r = Tensor<T>::empty(out_shape, g.device());
    const Shape sm = broadcast_strides(mask, out_shape);
    if (g.device() != Device::CPU) {
        if (r.numel() == 0) return r;
        const Shape* st[4] = {&r.strides(), &sm, &g.strides(), &g.strides()};
        const int64_t off[4] = {0, mask.offset(), g.offset(), g.offset()};
        const T* pg = g.impl()->storage->data();
        device_entry(DeviceOps<T>::cuda().where, "where", out_shape)(
            r.data(), mask.impl()->storage->data(), keep_when ? pg : nullptr, keep_when ? nullptr : pg, T(0), T(0),
            make_loop_plan(out_shape, st, off, "where"));
        return r;
    }
    const uint8_t* bm = mask.impl()->storage->data();
    const T* bg = g.impl()->storage->data();
    T* pr = r.impl()->storage->data();
    strided_loop<3>(out_shape, {&sm, &g.strides(), &r.strides()}, {mask.offset(), g.offset(), r.offset()},
                    [&](auto o) { pr[o[2]] = (bm[o[0]] != 0) == keep_when ? bg[o[1]] : T(0); });
    return r;
}

}  // namespace detail

// ---- comparisons: Tensor<T> vs Tensor<T> (broadcast) or vs a scalar -> Tensor<uint8_t> -------------
#define MOEKD_COMPARISON(name, id, expr)                                                                       \
    template <class T>                                                                                     \
    Tensor<uint8_t> name(const Tensor<T>& a, const Tensor<T>& b) {                                         \
        return detail::compare_map(a, b, [](T x, T y) { return expr; }, int(CompareOp::id), #name);        \
    }                                                                                                      \
    template <class T>                                                                                     \
    Tensor<uint8_t> name(const Tensor<T>& a, std::type_identity_t<T> s) {                                  \
        return detail::compare_map(a, Tensor<T>::scalar(s), [](T x, T y) { return expr; }, int(CompareOp::id), \
                                   #name);                                                                 \
    }
MOEKD_COMPARISON(eq, Eq, x == y)
MOEKD_COMPARISON(ne, Ne, x != y)
MOEKD_COMPARISON(lt, Lt, x < y)
MOEKD_COMPARISON(le, Le, x <= y)
MOEKD_COMPARISON(gt, Gt, x > y)
MOEKD_COMPARISON(ge, Ge, x >= y)
#undef MOEKD_COMPARISON

// ---- mask logic ---------------------------------------------------------------------------------
/// 1 where mask is 0, else 0.
inline Tensor<uint8_t> logical_not(const Tensor<uint8_t>& mask) {
    if (mask.device() != Device::CPU) {
        Tensor<uint8_t> out = Tensor<uint8_t>::empty(mask.shape(), mask.device());
        if (out.numel() == 0) return out;
        const Shape* st[3] = {&out.strides(), &mask.strides(), nullptr};
        const int64_t off[3] = {0, mask.offset(), 0};
        detail::device_entry(DeviceMaskOps::cuda().logic, "logical_not", mask.shape())(
            LogicOp::Not, out.data(), mask.impl()->storage->data(), nullptr,
            make_loop_plan(mask.shape(), st, off, "logical_not"));
        return out;
    }
    Tensor<uint8_t> m = detail::contiguous_data(mask);
    Tensor<uint8_t> out = Tensor<uint8_t>::empty(mask.shape());
    for (int64_t i = 0, n = out.numel(); i < n; ++i) out.data()[i] = m.data()[i] == 0 ? 1 : 0;
    return out;
}
/// Broadcasting AND / OR of two masks.
inline Tensor<uint8_t> logical_and(const Tensor<uint8_t>& a, const Tensor<uint8_t>& b) {
    return detail::compare_map(a, b, [](uint8_t x, uint8_t y) { return x != 0 && y != 0; }, detail::kLogic + int(LogicOp::And),
                               "logical_and");
}
inline Tensor<uint8_t> logical_or(const Tensor<uint8_t>& a, const Tensor<uint8_t>& b) {
    return detail::compare_map(a, b, [](uint8_t x, uint8_t y) { return x != 0 || y != 0; }, detail::kLogic + int(LogicOp::Or),
                               "logical_or");
}

// ---- where --------------------------------------------------------------------------------------
/// out = cond ? a : b elementwise, all three broadcast together.
/// cond: Sc, a: Sa, b: Sb -> broadcast(Sc, Sa, Sb). Gradients: a gets g where cond, b where not.
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, const Tensor<T>& a, const Tensor<T>& b) {
    detail::require_same_device(a, b, "where");
    MOEKD_CHECK(cond.device() == a.device(), "where: cond of shape ", cond.shape(), " on ", cond.device(), ", a of shape ",
                a.shape(), " on ", a.device(), " (operands on different devices)");
    Shape out_shape;
    try {
        out_shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
    } catch (const Error&) {
        throw Error(msg("where: cond ", cond.shape(), ", a ", a.shape(), " and b ", b.shape(),
                        " do not broadcast to one shape"));
    }
    Tensor<T> out = Tensor<T>::empty(out_shape, a.device());
    const Shape sc = detail::broadcast_strides(cond, out_shape), sa = detail::broadcast_strides(a, out_shape),
                sb = detail::broadcast_strides(b, out_shape);
    const uint8_t* bc = cond.impl()->storage->data();
    const T* ba = a.impl()->storage->data();
    const T* bb = b.impl()->storage->data();
    T* po = out.data();
    if (a.device() != Device::CPU) {
        const Shape* st[4] = {&out.strides(), &sc, &sa, &sb};
        const int64_t off[4] = {0, cond.offset(), a.offset(), b.offset()};
        if (out.numel() > 0)
            detail::device_entry(DeviceOps<T>::cuda().where, "where", out_shape)(
                po, bc, ba, bb, T(0), T(0), make_loop_plan(out_shape, st, off, "where"));
    } else {
        detail::strided_loop<4>(out_shape, {&sc, &sa, &sb, &out.strides()},
                                {cond.offset(), a.offset(), b.offset(), int64_t(0)},
                                [&](auto o) { po[o[3]] = bc[o[0]] != 0 ? ba[o[1]] : bb[o[2]]; });
    }
    return record<T>(out, "where", {a, b}, [cc = cond.detach(), a, b](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{
            needs_grad(a) ? sum_to(detail::mask_route(cc, g, true), a.shape()) : Tensor<T>(),
            needs_grad(b) ? sum_to(detail::mask_route(cc, g, false), b.shape()) : Tensor<T>()};
    });
}
/// where with a scalar for either branch (e.g. where(mask, x, 0.0)).
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, const Tensor<T>& a, std::type_identity_t<T> b) {
    return where(cond, a, Tensor<T>::full({}, b, a.device()));
}
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, std::type_identity_t<T> a, const Tensor<T>& b) {
    return where(cond, Tensor<T>::full({}, a, b.device()), b);
}

// ---- masked_fill --------------------------------------------------------------------------------
/// out = mask ? value : x, out of place; mask broadcasts to x's shape (not beyond it).
/// x: S, mask: broadcastable to S -> S. Gradient: g where mask is 0, zero where it is set.
template <class T>
Tensor<T> masked_fill(const Tensor<T>& x, const Tensor<uint8_t>& mask, std::type_identity_t<T> value) {
    MOEKD_CHECK(mask.device() == x.device(), "masked_fill: x of shape ", x.shape(), " on ", x.device(),
                ", mask of shape ", mask.shape(), " on ", mask.device(), " (operands on different devices)");
    bool ok = mask.dim() <= x.dim();
    for (int64_t i = 0; ok && i < mask.dim(); ++i) {
        const int64_t m = mask.shape()[i], s = x.shape()[x.dim() - mask.dim() + i];
        ok = m == s || m == 1;
    }
    MOEKD_CHECK(ok, "masked_fill: mask of shape ", mask.shape(), " does not broadcast to x of shape ", x.shape());
    Tensor<T> out = Tensor<T>::empty(x.shape(), x.device());
    const Shape sm = detail::broadcast_strides(mask, x.shape());
    const uint8_t* bm = mask.impl()->storage->data();
    const T* bx = x.impl()->storage->data();
    T* po = out.data();
    if (x.device() != Device::CPU) {
        const Shape* st[4] = {&out.strides(), &sm, nullptr, &x.strides()};
        const int64_t off[4] = {0, mask.offset(), 0, x.offset()};
        if (out.numel() > 0)
            detail::device_entry(DeviceOps<T>::cuda().where, "masked_fill", x.shape())(
                po, bm, nullptr, bx, value, T(0), make_loop_plan(x.shape(), st, off, "masked_fill"));
    } else {
        detail::strided_loop<3>(x.shape(), {&sm, &x.strides(), &out.strides()}, {mask.offset(), x.offset(), int64_t(0)},
                                [&](auto o) { po[o[2]] = bm[o[0]] != 0 ? value : bx[o[1]]; });
    }
    return record<T>(out, "masked_fill", {x}, [mc = mask.detach()](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{detail::mask_route(mc, g, false)};
    });
}

}  // namespace moekd
