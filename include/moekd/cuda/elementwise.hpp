// cuda/elementwise.hpp — unary and binary elementwise ops on contiguous device tensors.
//
// The per-element math is the MOEKD_HD functors of kernels/elementwise.cuh — the very code the
// CPU ops (ops/elementwise.hpp) run in their loops; here the __global__ kernels of that header
// apply it. No autograd and no broadcasting: these are the device launch layer that device ops
// will be built on; unary_backward gives the backward of a unary op explicitly.
//
//   Tensor<float> y  = cuda::unary<kern::Gelu>(x);              // x: any shape, on the GPU
//   Tensor<float> gx = cuda::unary_backward<kern::Gelu>(x, y, g); // g = dL/dy, same shape
//   Tensor<float> c  = cuda::binary<kern::Mul>(a, b);            // a, b: same shape
//
// From a host-compiled (g++) file the launchers for the functors listed below, in float and
// double, come from the moekd::cuda library (kernels/elementwise.cu). A file compiled by nvcc
// also sees their definitions, so it may use functors of its own.
#pragma once

#include <cstdint>

#include "../core/tensor.hpp"
#include "../kernels/elementwise.cuh"
#include "allocator.hpp"
#include "error.hpp"

// The functors the library instantiates (each in float and double).
#define MOEKD_CUDA_UNARY_FUNCTORS(X) X(Neg) X(Exp) X(Log) X(Sqrt) X(Rsqrt) X(Abs) X(Tanh) X(Sigmoid) X(Relu) X(Gelu)
#define MOEKD_CUDA_BINARY_FUNCTORS(X) X(Add) X(Sub) X(Mul) X(Div) X(Pow)

namespace moekd::cuda {
namespace detail {

// Raw launchers over n contiguous device elements; they throw moekd::Error if the launch fails.
template <class F, class T> void unary_fwd(const T* x, T* y, int64_t n);
template <class F, class T> void unary_bwd(const T* x, const T* y, const T* g, T* gx, int64_t n);
template <class F, class T> void binary_fwd(const T* a, const T* b, T* c, int64_t n);

#if defined(MOEKD_CUDA_KERNELS)
template <class F, class T>
void unary_fwd(const T* x, T* y, int64_t n) {
    if (n > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_unary_fwd<F, T>(x, y, n)));
}
template <class F, class T>
void unary_bwd(const T* x, const T* y, const T* g, T* gx, int64_t n) {
    if (n > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_unary_bwd<F, T>(x, y, g, gx, n)));
}
template <class F, class T>
void binary_fwd(const T* a, const T* b, T* c, int64_t n) {
    if (n > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_binary_fwd<F, T>(a, b, c, n)));
}
#endif

// Instantiated once, in kernels/elementwise.cu.
#define MOEKD_CUDA_EXTERN_UNARY(F)                                                               \
    extern template void unary_fwd<kern::F, float>(const float*, float*, int64_t);               \
    extern template void unary_fwd<kern::F, double>(const double*, double*, int64_t);            \
    extern template void unary_bwd<kern::F, float>(const float*, const float*, const float*, float*, int64_t); \
    extern template void unary_bwd<kern::F, double>(const double*, const double*, const double*, double*, int64_t);
#define MOEKD_CUDA_EXTERN_BINARY(F)                                                              \
    extern template void binary_fwd<kern::F, float>(const float*, const float*, float*, int64_t); \
    extern template void binary_fwd<kern::F, double>(const double*, const double*, double*, int64_t);
MOEKD_CUDA_UNARY_FUNCTORS(MOEKD_CUDA_EXTERN_UNARY)
MOEKD_CUDA_BINARY_FUNCTORS(MOEKD_CUDA_EXTERN_BINARY)
#undef MOEKD_CUDA_EXTERN_UNARY
#undef MOEKD_CUDA_EXTERN_BINARY

template <class T>
void require_device_contiguous(const Tensor<T>& x, const char* op, const char* name) {
    MOEKD_CHECK(x.defined(), op, ": ", name, " is an undefined tensor");
    MOEKD_CHECK(x.device() == Device::CUDA, op, ": ", name, " of shape ", x.shape(), " is on ", x.device(),
                "; copy it with cuda::to_device() first");
    MOEKD_CHECK(x.is_contiguous(), op, ": ", name, " of shape ", x.shape(), " strides ", x.strides(),
                " is not contiguous (hint: make it contiguous on the CPU before to_device())");
}

template <class T>
void require_same_shape(const Tensor<T>& a, const Tensor<T>& b, const char* op, const char* na, const char* nb) {
    MOEKD_CHECK(a.shape() == b.shape(), op, ": ", na, " of shape ", a.shape(), " vs ", nb, " of shape ", b.shape(),
                " (the device kernels do not broadcast)");
}

/// x is defined and has shape s (the device entries of gating/dispatch/experts/kl/relation.hpp).
template <class T>
void require_shape(const Tensor<T>& x, const Shape& s, const char* op, const char* name) {
    MOEKD_CHECK(x.defined(), op, ": ", name, " is an undefined tensor (expected shape ", s, ")");
    MOEKD_CHECK(x.shape() == s, op, ": ", name, " has shape ", x.shape(), ", expected ", s);
}

}  // namespace detail

/// y = F::fwd(x) elementwise.  x: any shape, contiguous, on the GPU.
template <class F, class T>
Tensor<T> unary(const Tensor<T>& x) {
    detail::require_device_contiguous(x, "cuda::unary", "x");
    Tensor<T> y = Tensor<T>::empty(x.shape(), Device::CUDA);
    detail::unary_fwd<F, T>(x.data(), y.data(), x.numel());
    return y;
}

/// gx = F::bwd(x, y, g) = g * dy/dx elementwise, where y = F::fwd(x).  x, y, g: same shape.
template <class F, class T>
Tensor<T> unary_backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& g) {
    const char* op = "cuda::unary_backward";
    detail::require_device_contiguous(x, op, "x");
    detail::require_device_contiguous(y, op, "y");
    detail::require_device_contiguous(g, op, "grad");
    detail::require_same_shape(x, y, op, "x", "y");
    detail::require_same_shape(x, g, op, "x", "grad");
    Tensor<T> gx = Tensor<T>::empty(x.shape(), Device::CUDA);
    detail::unary_bwd<F, T>(x.data(), y.data(), g.data(), gx.data(), x.numel());
    return gx;
}

/// c = F::fwd(a, b) elementwise.  a, b: same shape, contiguous, on the GPU.
template <class F, class T>
Tensor<T> binary(const Tensor<T>& a, const Tensor<T>& b) {
    const char* op = "cuda::binary";
    detail::require_device_contiguous(a, op, "a");
    detail::require_device_contiguous(b, op, "b");
    detail::require_same_shape(a, b, op, "a", "b");
    Tensor<T> c = Tensor<T>::empty(a.shape(), Device::CUDA);
    detail::binary_fwd<F, T>(a.data(), b.data(), c.data(), a.numel());
    return c;
}

}  // namespace moekd::cuda
