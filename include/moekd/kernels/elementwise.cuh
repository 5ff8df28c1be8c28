// elementwise.cuh — per-element math of the unary and binary ops, shared by CPU and GPU.
//
// Part 1 (always compiled): MOEKD_HD functors. ops/elementwise.hpp runs them in CPU loops.
// Part 2 (MOEKD_CUDA_KERNELS: nvcc, and the emulated build): __global__ kernels that apply the
// unary functors over contiguous buffers, and host launchers (the device table's unary entries, in
// kernels/ops.cu, whose broadcasting binary kernel applies the binary functors through strides).
// Each unary functor has fwd(x) and bwd(x, y, g) = g * dy/dx where y = fwd(x), so the backward
// may use whichever of x and y is cheaper.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.cuh"

namespace moekd::kern {

// ---- unary ----------------------------------------------------------------------------------
struct Neg {
    template <class T> MOEKD_HD static T fwd(T x) { return -x; }
    template <class T> MOEKD_HD static T bwd(T, T, T g) { return -g; }
};
struct Exp {
    template <class T> MOEKD_HD static T fwd(T x) { return std::exp(x); }
    template <class T> MOEKD_HD static T bwd(T, T y, T g) { return g * y; }
};
struct Log {
    template <class T> MOEKD_HD static T fwd(T x) { return std::log(x); }
    template <class T> MOEKD_HD static T bwd(T x, T, T g) { return g / x; }
};
struct Sqrt {
    template <class T> MOEKD_HD static T fwd(T x) { return std::sqrt(x); }
    template <class T> MOEKD_HD static T bwd(T, T y, T g) { return g / (T(2) * y); }
};
struct Rsqrt {
    template <class T> MOEKD_HD static T fwd(T x) { return T(1) / std::sqrt(x); }
    template <class T> MOEKD_HD static T bwd(T x, T y, T g) { return g * T(-0.5) * y / x; }
};
struct Abs {
    template <class T> MOEKD_HD static T fwd(T x) { return x < T(0) ? -x : x; }
    template <class T> MOEKD_HD static T bwd(T x, T, T g) { return x > T(0) ? g : (x < T(0) ? -g : T(0)); }
};
struct Tanh {
    template <class T> MOEKD_HD static T fwd(T x) { return std::tanh(x); }
    template <class T> MOEKD_HD static T bwd(T, T y, T g) { return g * (T(1) - y * y); }
};
struct Sigmoid {  // stable for large |x|: never exponentiates a positive number
    template <class T> MOEKD_HD static T fwd(T x) {
        if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
        T e = std::exp(x);
        return e / (T(1) + e);
    }
    template <class T> MOEKD_HD static T bwd(T, T y, T g) { return g * y * (T(1) - y); }
};
struct Relu {
    template <class T> MOEKD_HD static T fwd(T x) { return x > T(0) ? x : T(0); }
    template <class T> MOEKD_HD static T bwd(T x, T, T g) { return x > T(0) ? g : T(0); }
};
struct Gelu {  // exact (erf) form, as torch.nn.functional.gelu's default and BERT
    template <class T> MOEKD_HD static T fwd(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440))); }
    template <class T> MOEKD_HD static T bwd(T x, T, T g) {
        const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
        const T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
        return g * (cdf + x * pdf);
    }
};
struct Silu {  // x * sigmoid(x) (SiLU, swish), through the stable Sigmoid
    template <class T> MOEKD_HD static T fwd(T x) { return x * Sigmoid::fwd(x); }
    // silu'(x) = s + x s (1 - s) = s + y (1 - s), s = sigmoid(x)
    template <class T> MOEKD_HD static T bwd(T x, T y, T g) {
        const T s = Sigmoid::fwd(x);
        return g * (s + y * (T(1) - s));
    }
};

// ---- binary ---------------------------------------------------------------------------------
struct Add {
    template <class T> MOEKD_HD static T fwd(T a, T b) { return a + b; }
};
struct Sub {
    template <class T> MOEKD_HD static T fwd(T a, T b) { return a - b; }
};
struct Mul {
    template <class T> MOEKD_HD static T fwd(T a, T b) { return a * b; }
};
struct Div {
    template <class T> MOEKD_HD static T fwd(T a, T b) { return a / b; }
};
struct Pow {  // x ** p for a scalar exponent p (the op pow(x, p))
    template <class T> MOEKD_HD static T fwd(T x, T p) { return std::pow(x, p); }
    template <class T> MOEKD_HD static T bwd(T x, T p, T g) { return p == T(0) ? T(0) : g * p * std::pow(x, p - T(1)); }
};

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
namespace moekd::kern::cuda {

template <class F, class T>
__global__ void unary_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = F::fwd(x[i]);
}
template <class F, class T>
__global__ void unary_bwd_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
                                 T* __restrict__ gx, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        gx[i] = F::bwd(x[i], y[i], g[i]);
}

/// Launchers over contiguous device buffers (the CUDA backend makes its inputs contiguous).
template <class F, class T>
cudaError_t launch_unary_fwd(const T* x, T* y, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(grid_for(n), 256, 0, s, unary_fwd_kernel<F, T>)(x, y, n);
    return cudaGetLastError();
}
template <class F, class T>
cudaError_t launch_unary_bwd(const T* x, const T* y, const T* g, T* gx, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(grid_for(n), 256, 0, s, unary_bwd_kernel<F, T>)(x, y, g, gx, n);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
