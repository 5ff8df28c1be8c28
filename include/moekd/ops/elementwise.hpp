// elementwise.hpp — unary math (exp, log, gelu, silu ...) and the four binary ops with NumPy
// broadcasting, each with its backward right below it, plus the C++ operators.
//
// The per-element math is the MOEKD_HD functors of kernels/elementwise.cuh, the same code the
// CUDA kernels run. Fast paths: contiguous same-shape operands, and a scalar operand; anything
// else walks the broadcast strides with detail::strided_loop (the reference path).
#pragma once

#include "../autograd/node.hpp"
#include "../core/parallel.hpp"
#include "../kernels/elementwise.cuh"
#include "reduce_to.hpp"

namespace moekd {
namespace detail {

/// For the ops that have no device implementation yet (the backend-ops test lists them).
template <class T>
void require_cpu(const Tensor<T>& x, const char* op) {
    MOEKD_CHECK(x.device() == Device::CPU, op, ": tensor of shape ", x.shape(), " is on ", x.device(), "; ", op,
                " has no CUDA implementation yet (copy with .to(Device::CPU))");
}

/// The UnaryOp of a kern:: functor (the device table takes the op as a value).
template <class F>
constexpr UnaryOp unary_id() {
    if constexpr (std::is_same_v<F, kern::Neg>) return UnaryOp::Neg;
    else if constexpr (std::is_same_v<F, kern::Exp>) return UnaryOp::Exp;
    else if constexpr (std::is_same_v<F, kern::Log>) return UnaryOp::Log;
    else if constexpr (std::is_same_v<F, kern::Sqrt>) return UnaryOp::Sqrt;
    else if constexpr (std::is_same_v<F, kern::Rsqrt>) return UnaryOp::Rsqrt;
    else if constexpr (std::is_same_v<F, kern::Abs>) return UnaryOp::Abs;
    else if constexpr (std::is_same_v<F, kern::Tanh>) return UnaryOp::Tanh;
    else if constexpr (std::is_same_v<F, kern::Sigmoid>) return UnaryOp::Sigmoid;
    else if constexpr (std::is_same_v<F, kern::Relu>) return UnaryOp::Relu;
    else {
        static_assert(std::is_same_v<F, kern::Gelu>, "a unary functor without a UnaryOp");
        return UnaryOp::Gelu;
    }
}

/// Device half of unary_op: y = F(x) and its backward, through the device table.
template <class F, class T>
Tensor<T> unary_op_device(const Tensor<T>& x, const char* name) {
    const DeviceOps<T>& ops = DeviceOps<T>::cuda();
    Tensor<T> xc = contiguous_data(x);
    Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
    if (y.numel() > 0) device_entry(ops.unary, name, x.shape())(unary_id<F>(), xc.data(), y.data(), y.numel());
    return record<T>(y, name, {x}, [xc, yd = y.detach(), name](const Tensor<T>& g) {
        Tensor<T> gc = contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(xc.shape(), xc.device());
        if (gx.numel() > 0)
            device_entry(DeviceOps<T>::cuda().unary_backward, name, xc.shape())(unary_id<F>(), xc.data(), yd.data(),
                                                                                gc.data(), gx.data(), gx.numel());
        return std::vector<Tensor<T>>{gx};
    });
}

/// A 0-dim CPU tensor meeting a device tensor moves to its device (as a Python scalar does in
/// PyTorch: x_cuda * 2); any other mix of devices is an error naming the op and both devices.
template <class T>
Tensor<T> to_common_device(const Tensor<T>& x, const Tensor<T>& other) {
    if (x.device() == other.device() || x.dim() != 0 || x.device() != Device::CPU) return x;
    return x.detach().to(other.device());
}

template <class T>
void require_same_device(const Tensor<T>& a, const Tensor<T>& b, const char* op) {
    MOEKD_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.shape(), " on ",
                a.device(), ", ", b.shape(), " on ", b.device(), ")");
}

/// y = F::fwd(x) elementwise; x contiguous.
constexpr int64_t kGrainElems = 32768;  // elements per chunk below which a loop stays on one thread
template <class F, class T>
Tensor<T> unary_map(const Tensor<T>& x) {
    Tensor<T> y = Tensor<T>::empty(x.shape());
    const T* px = x.data();
    T* py = y.data();
    parallel_for(x.numel(), kGrainElems, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) py[i] = F::fwd(px[i]);
    });
    return y;
}

/// Strides of `x` viewed as `out_shape` under broadcasting (0 where x is broadcast).
template <class T>
Shape broadcast_strides(const Tensor<T>& x, const Shape& out_shape) {
    Shape st(out_shape.rank(), 0);
    const int64_t lead = out_shape.rank() - x.dim();
    for (int64_t i = 0; i < x.dim(); ++i)
        st[lead + i] = x.shape()[i] == 1 ? 0 : x.strides()[i];
    return st;
}

/// c = f(a, b) with broadcasting; returns a fresh contiguous tensor.
template <class T, class F>
Tensor<T> binary_map(const Tensor<T>& a_in, const Tensor<T>& b_in, F f, BinaryOp id, const char* op) {
    const Tensor<T> a = to_common_device(a_in, b_in), b = to_common_device(b_in, a_in);
    require_same_device(a, b, op);
    const Shape out_shape = a.shape() == b.shape() ? a.shape() : broadcast_shapes(a.shape(), b.shape(), op);
    if (a.device() != Device::CPU) {  // one strided kernel: broadcasting through stride 0
        Tensor<T> c = Tensor<T>::empty(out_shape, a.device());
        if (c.numel() == 0) return c;
        const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
        const Shape* st[3] = {&c.strides(), &sa, &sb};
        const int64_t off[3] = {0, a.offset(), b.offset()};
        device_entry(DeviceOps<T>::cuda().binary, op, out_shape)(id, c.data(), a.impl()->storage->data(),
                                                                b.impl()->storage->data(),
                                                                make_loop_plan(out_shape, st, off, op));
        return c;
    }
    Tensor<T> c = Tensor<T>::empty(out_shape);
    T* pc = c.data();
    const int64_t n = c.numel();
    if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
        const T *pa = a.data(), *pb = b.data();
        parallel_for(n, kGrainElems, [&](int64_t s, int64_t e) {
            for (int64_t i = s; i < e; ++i) pc[i] = f(pa[i], pb[i]);
        });
    } else if (b.numel() == 1 && a.shape() == out_shape && a.is_contiguous()) {
        const T *pa = a.data(), sb = b.data()[0];
        parallel_for(n, kGrainElems, [&](int64_t s, int64_t e) {
            for (int64_t i = s; i < e; ++i) pc[i] = f(pa[i], sb);
        });
    } else if (a.numel() == 1 && b.shape() == out_shape && b.is_contiguous()) {
        const T *pb = b.data(), sa = a.data()[0];
        parallel_for(n, kGrainElems, [&](int64_t s, int64_t e) {
            for (int64_t i = s; i < e; ++i) pc[i] = f(sa, pb[i]);
        });
    } else {
        const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
        const Shape& sc = c.strides();
        const T* ba = a.impl()->storage->data();
        const T* bb = b.impl()->storage->data();
        strided_loop<3>(out_shape, {&sa, &sb, &sc}, {a.offset(), b.offset(), int64_t(0)},
                        [&](auto o) { pc[o[2]] = f(ba[o[0]], bb[o[1]]); });
    }
    return c;
}

template <class F, class T>
Tensor<T> unary_op(const Tensor<T>& x, const char* name) {
    if (x.device() != Device::CPU) return unary_op_device<F>(x, name);
    Tensor<T> xc = contiguous_data(x);
    Tensor<T> y = unary_map<F>(xc);
    return record<T>(y, name, {x}, [xc, yd = y.detach()](const Tensor<T>& g) {
        Tensor<T> gc = contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(xc.shape());
        const T *px = xc.data(), *py = yd.data(), *pg = gc.data();
        T* pgx = gx.data();
        parallel_for(gx.numel(), kGrainElems, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) pgx[i] = F::bwd(px[i], py[i], pg[i]);
        });
        return std::vector<Tensor<T>>{gx};
    });
}

}  // namespace detail

// ---- unary ops --------------------------------------------------------------------------------
template <class T> Tensor<T> neg(const Tensor<T>& x) { return detail::unary_op<kern::Neg>(x, "neg"); }
template <class T> Tensor<T> exp(const Tensor<T>& x) { return detail::unary_op<kern::Exp>(x, "exp"); }
template <class T> Tensor<T> log(const Tensor<T>& x) { return detail::unary_op<kern::Log>(x, "log"); }
template <class T> Tensor<T> sqrt(const Tensor<T>& x) { return detail::unary_op<kern::Sqrt>(x, "sqrt"); }
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) { return detail::unary_op<kern::Rsqrt>(x, "rsqrt"); }
template <class T> Tensor<T> abs(const Tensor<T>& x) { return detail::unary_op<kern::Abs>(x, "abs"); }
template <class T> Tensor<T> tanh(const Tensor<T>& x) { return detail::unary_op<kern::Tanh>(x, "tanh"); }
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) { return detail::unary_op<kern::Sigmoid>(x, "sigmoid"); }
template <class T> Tensor<T> relu(const Tensor<T>& x) { return detail::unary_op<kern::Relu>(x, "relu"); }
template <class T> Tensor<T> gelu(const Tensor<T>& x) { return detail::unary_op<kern::Gelu>(x, "gelu"); }

/// y = x * sigmoid(x) (SiLU, swish)   x: any shape, on any device
/// Written out in full, with its own device-table entries, as docs/adding_an_op.md's example.
template <class T>
Tensor<T> silu(const Tensor<T>& x) {
    const char* op = "silu";
    const Tensor<T> xc = detail::contiguous_data(x).detach();  // no copy when contiguous; on x's device
    Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
    if (x.device() != Device::CPU) {
        detail::device_entry(DeviceOps<T>::cuda().silu, op, x.shape())(xc.data(), y.data(), y.numel());
    } else {
        const T* px = xc.data();
        T* py = y.data();
        detail::parallel_for(y.numel(), detail::kGrainElems, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) py[i] = kern::Silu::fwd(px[i]);
        });
    }
    return record<T>(y, op, {x}, [xc, yd = y.detach(), op](const Tensor<T>& g) {
        // one gradient per input, shaped like that input, on its device; Tensor<T>() where none is needed
        const Tensor<T> gc = detail::contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(xc.shape(), xc.device());
        if (xc.device() != Device::CPU) {
            detail::device_entry(DeviceOps<T>::cuda().silu_backward, op, xc.shape())(
                xc.data(), yd.data(), gc.data(), gx.data(), gx.numel());
        } else {
            const T *px = xc.data(), *py = yd.data(), *pg = gc.data();
            T* pgx = gx.data();
            detail::parallel_for(gx.numel(), detail::kGrainElems, [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; ++i) pgx[i] = kern::Silu::bwd(px[i], py[i], pg[i]);
            });
        }
        return std::vector<Tensor<T>>{gx};
    });
}

/// x ** p for a scalar exponent. The gradient at x = 0 follows PyTorch (0 for p >= 1).
template <class T>
Tensor<T> pow(const Tensor<T>& x, T p) {
    if (x.device() != Device::CPU) {  // kernels/index.cu, the same kern::Pow
        Tensor<T> xc = detail::contiguous_data(x).detach();
        Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
        detail::device_entry(DeviceOps<T>::cuda().pow, "pow", x.shape())(xc.data(), p, y.data(), y.numel());
        return record<T>(y, "pow", {x}, [xc, p](const Tensor<T>& g) {
            Tensor<T> gc = detail::contiguous_data(g);
            Tensor<T> gx = Tensor<T>::empty(xc.shape(), xc.device());
            detail::device_entry(DeviceOps<T>::cuda().pow_backward, "pow", xc.shape())(xc.data(), p, gc.data(),
                                                                                    gx.data(), gx.numel());
            return std::vector<Tensor<T>>{gx};
        });
    }
    Tensor<T> xc = detail::contiguous_data(x);
    Tensor<T> y = Tensor<T>::empty(x.shape());
    for (int64_t i = 0, n = y.numel(); i < n; ++i) y.data()[i] = kern::Pow::fwd(xc.data()[i], p);
    return record<T>(y, "pow", {x}, [xc, p](const Tensor<T>& g) {
        Tensor<T> gc = detail::contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(xc.shape());
        for (int64_t i = 0, n = gx.numel(); i < n; ++i) gx.data()[i] = kern::Pow::bwd(xc.data()[i], p, gc.data()[i]);
        return std::vector<Tensor<T>>{gx};
    });
}

// ---- binary ops with broadcasting --------------------------------------------------------------
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> c = detail::binary_map(a, b, [](T x, T y) { return kern::Add::fwd(x, y); }, BinaryOp::Add, "add");
    const Shape sa = a.shape(), sb = b.shape();
    return record<T>(c, "add", {a, b}, [a, b, sa, sb](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{needs_grad(a) ? sum_to(g, sa) : Tensor<T>(),
                                      needs_grad(b) ? sum_to(g, sb) : Tensor<T>()};
    });
}

template <class T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> c = detail::binary_map(a, b, [](T x, T y) { return kern::Sub::fwd(x, y); }, BinaryOp::Sub, "sub");
    return record<T>(c, "sub", {a, b}, [a, b](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{needs_grad(a) ? sum_to(g, a.shape()) : Tensor<T>(),
                                      needs_grad(b) ? sum_to(neg(g), b.shape()) : Tensor<T>()};
    });
}

template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> c = detail::binary_map(a, b, [](T x, T y) { return kern::Mul::fwd(x, y); }, BinaryOp::Mul, "mul");
    // saved without history: the closure must not keep a's graph alive twice
    return record<T>(c, "mul", {a, b}, [a, b, ad = a.detach(), bd = b.detach()](const Tensor<T>& g) {
        return std::vector<Tensor<T>>{needs_grad(a) ? sum_to(mul(g, bd), a.shape()) : Tensor<T>(),
                                      needs_grad(b) ? sum_to(mul(g, ad), b.shape()) : Tensor<T>()};
    });
}

template <class T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> c = detail::binary_map(a, b, [](T x, T y) { return kern::Div::fwd(x, y); }, BinaryOp::Div, "div");
    return record<T>(c, "div", {a, b}, [a, b, bd = b.detach(), cd = c.detach()](const Tensor<T>& g) {
        // d(a/b)/db = -a/b^2 = -c/b
        return std::vector<Tensor<T>>{
            needs_grad(a) ? sum_to(div(g, bd), a.shape()) : Tensor<T>(),
            needs_grad(b) ? sum_to(neg(div(mul(g, cd), bd)), b.shape()) : Tensor<T>()};
    });
}

// ---- operators ----------------------------------------------------------------------------------
template <class T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
template <class T> Tensor<T> operator-(const Tensor<T>& a) { return neg(a); }
// A scalar operand becomes a 0-dim tensor without history (the scalar fast path handles it).
template <class T> Tensor<T> operator+(const Tensor<T>& a, std::type_identity_t<T> s) { return add(a, Tensor<T>::scalar(s)); }
template <class T> Tensor<T> operator+(std::type_identity_t<T> s, const Tensor<T>& a) { return add(Tensor<T>::scalar(s), a); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, std::type_identity_t<T> s) { return sub(a, Tensor<T>::scalar(s)); }
template <class T> Tensor<T> operator-(std::type_identity_t<T> s, const Tensor<T>& a) { return sub(Tensor<T>::scalar(s), a); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, std::type_identity_t<T> s) { return mul(a, Tensor<T>::scalar(s)); }
template <class T> Tensor<T> operator*(std::type_identity_t<T> s, const Tensor<T>& a) { return mul(Tensor<T>::scalar(s), a); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, std::type_identity_t<T> s) { return div(a, Tensor<T>::scalar(s)); }
template <class T> Tensor<T> operator/(std::type_identity_t<T> s, const Tensor<T>& a) { return div(Tensor<T>::scalar(s), a); }

}  // namespace moekd
