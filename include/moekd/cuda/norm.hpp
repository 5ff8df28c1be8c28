// cuda/norm.hpp — layer norm on the GPU, forward and backward: the device twin of
// moekd::layer_norm (ops/norm.hpp), doing the math of its MOEKD_HD row functions (kernels/norm.cuh):
// a warp per row for rows of up to 1024 entries, a block per row above; the weight and bias
// gradients are a two-pass column reduction in double with a fixed grouping (no atomics), so the
// same input gives the same bits on every run.
//
//   auto f = cuda::layer_norm(x, w, b, 1e-5);          // x: (..., D); w, b: (D) or undefined
//   auto g = cuda::layer_norm_backward(x, w, f, dy);   // g.gx like x, g.gw / g.gb (D)
//
// The normalised dims are the last one (pass x reshaped so that they are one dim: (M, N)). No
// autograd. Launchers compiled for float and double in kernels/norm.cu.
#pragma once

#include <cstdint>

#include "../core/tensor.hpp"
#include "../kernels/norm.cuh"
#include "allocator.hpp"
#include "elementwise.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// What layer_norm returns and layer_norm_backward needs.
template <class T>
struct LayerNormForward {
    Tensor<T> y;     // like x
    Tensor<T> mean;  // (M) row means, M = numel(x) / N
    Tensor<T> rstd;  // (M) 1 / sqrt(var + eps)
};

template <class T>
struct LayerNormGrads {
    Tensor<T> gx;      // like x (undefined when not asked for)
    Tensor<T> gw, gb;  // (N), undefined when not asked for (or the parameter is undefined)
};

namespace detail {

// Raw launchers (kernels/norm.cu, float and double); they throw moekd::Error if a launch fails.
template <class T>
void layer_norm_fwd_raw(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N, T eps);
/// gx, gw, gb: each may be null (not wanted). Allocates the parameter-gradient workspace itself.
template <class T>
void layer_norm_bwd_raw(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw, T* gb,
                        int64_t M, int64_t N);

/// Checks the shapes of x (..., N) and the optional weight / bias (N); returns N.
template <class T>
int64_t check_layer_norm_shapes(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, const char* op) {
    MOEKD_CHECK(x.defined(), op, ": x is an undefined tensor");
    MOEKD_CHECK(x.dim() >= 1, op, ": x must be (..., N) with the normalised dim last, got a scalar");
    const int64_t N = x.shape()[x.dim() - 1];
    MOEKD_CHECK(N > 0, op, ": x of shape ", x.shape(), " has an empty last dim");
    if (w.defined())
        MOEKD_CHECK(w.shape() == Shape{N}, op, ": weight of shape ", w.shape(), " for x of shape ", x.shape(),
                    "; expected (", N, ")");
    if (b.defined())
        MOEKD_CHECK(b.shape() == Shape{N}, op, ": bias of shape ", b.shape(), " for x of shape ", x.shape(),
                    "; expected (", N, ")");
    return N;
}

template <class T>
void check_layer_norm_devices(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, const char* op) {
    require_device_contiguous(x, op, "x");
    if (w.defined()) require_device_contiguous(w, op, "weight");
    if (b.defined()) require_device_contiguous(b, op, "bias");
}

}  // namespace detail

/// y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim of x, as moekd::layer_norm
/// with normalized_shape = {N} (biased variance). x: (..., N); weight, bias: (N) or undefined; all
/// contiguous on the GPU.
template <class T>
LayerNormForward<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(),
                               const Tensor<T>& bias = Tensor<T>(), double eps = 1e-5) {
    const char* op = "cuda::layer_norm";
    const int64_t N = detail::check_layer_norm_shapes(x, weight, bias, op);
    MOEKD_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
    detail::check_layer_norm_devices(x, weight, bias, op);
    const int64_t M = x.numel() / N;
    LayerNormForward<T> f;
    f.y = Tensor<T>::empty(x.shape(), Device::CUDA);
    f.mean = Tensor<T>::empty({M}, Device::CUDA);
    f.rstd = Tensor<T>::empty({M}, Device::CUDA);
    if (M > 0)
        detail::layer_norm_fwd_raw(x.data(), weight.defined() ? weight.data() : static_cast<const T*>(nullptr),
                                   bias.defined() ? bias.data() : static_cast<const T*>(nullptr), f.y.data(),
                                   f.mean.data(), f.rstd.data(), M, N, static_cast<T>(eps));
    return f;
}

/// The gradients of sum(grad * y) wrt x, weight and bias, from the forward's mean and rstd.
/// need_w / need_b are ignored for an undefined weight / bias (that gradient stays undefined).
template <class T>
LayerNormGrads<T> layer_norm_backward(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias,
                                      const LayerNormForward<T>& f, const Tensor<T>& grad, bool need_x = true,
                                      bool need_w = true, bool need_b = true) {
    const char* op = "cuda::layer_norm_backward";
    const int64_t N = detail::check_layer_norm_shapes(x, weight, bias, op);
    const int64_t M = x.numel() / N;
    detail::require_shape(grad, x.shape(), op, "grad");
    detail::require_shape(f.mean, Shape{M}, op, "forward mean");
    detail::require_shape(f.rstd, Shape{M}, op, "forward rstd");
    detail::check_layer_norm_devices(x, weight, bias, op);
    detail::require_device_contiguous(grad, op, "grad");
    detail::require_device_contiguous(f.mean, op, "forward mean");
    detail::require_device_contiguous(f.rstd, op, "forward rstd");
    need_w = need_w && weight.defined();
    need_b = need_b && bias.defined();
    LayerNormGrads<T> g;
    if (need_x) g.gx = Tensor<T>::empty(x.shape(), Device::CUDA);
    if (need_w) g.gw = Tensor<T>::zeros({N}, Device::CUDA);
    if (need_b) g.gb = Tensor<T>::zeros({N}, Device::CUDA);
    if (M == 0 || (!need_x && !need_w && !need_b)) return g;
    detail::layer_norm_bwd_raw(x.data(), weight.defined() ? weight.data() : static_cast<const T*>(nullptr), grad.data(),
                               f.mean.data(), f.rstd.data(), need_x ? g.gx.data() : static_cast<T*>(nullptr),
                               need_w ? g.gw.data() : static_cast<T*>(nullptr),
                               need_b ? g.gb.data() : static_cast<T*>(nullptr), M, N);
    return g;
}

}  // namespace moekd::cuda
