// norm.cuh — per-row math of layer norm (forward, backward for x, weight/bias contributions),
// shared by CPU and GPU.
//
// Part 1 (always compiled): MOEKD_HD row functions over one contiguous row of n elements (the
// normalised dims flattened). ops/norm.hpp calls them in a CPU loop, one call per row.
// Part 2 (nvcc only): simple __global__ kernels (one thread per row for forward and the x
// gradient, one thread per column for the weight/bias gradients, so no atomics) and launchers.
//
// Statistics are two-pass (mean first, then the mean of squared deviations), which stays
// accurate when |mean| >> std. The variance is biased (divide by n), as torch.nn.LayerNorm.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.cuh"

namespace moekd::kern {

/// mean and rstd = 1 / sqrt(var + eps) of one row x: (n).
/// Sum of n values in W independent lanes: no loop-carried dependence on one accumulator, so the
/// loop vectorizes without -ffast-math (and rounds more evenly than one running sum).
template <class T, class F>
MOEKD_HD T lane_sum(int64_t n, F&& term) {
    constexpr int W = 16;
    T acc[W] = {};
    int64_t i = 0;
    for (; i + W <= n; i += W)
        for (int l = 0; l < W; ++l) acc[l] += term(i + l);
    T s = T(0);
    for (; i < n; ++i) s += term(i);
    for (int l = 0; l < W; ++l) s += acc[l];
    return s;
}

template <class T>
MOEKD_HD void layer_norm_stats_row(const T* x, int64_t n, T eps, T* mean, T* rstd) {
    const T mu = lane_sum<T>(n, [&](int64_t i) { return x[i]; }) / T(n);
    const T v = lane_sum<T>(n, [&](int64_t i) {
        const T d = x[i] - mu;
        return d * d;
    });
    *mean = mu;
    *rstd = T(1) / std::sqrt(v / T(n) + eps);
}
/// y = (x - mean) * rstd * w + b; w and b may be null (no affine).
template <class T>
MOEKD_HD void layer_norm_fwd_row(const T* x, const T* w, const T* b, T* y, int64_t n, T mean, T rstd) {
    if (w && b) {
        for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
        return;
    }
    for (int64_t i = 0; i < n; ++i) {
        T v = (x[i] - mean) * rstd;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

/// g_x = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)), g_hat = g * w (w may be null).
template <class T>
MOEKD_HD void layer_norm_bwd_row(const T* x, const T* w, const T* g, T* gx, int64_t n, T mean, T rstd) {
    auto gh = [&](int64_t i) { return w ? g[i] * w[i] : g[i]; };
    const T sg = lane_sum<T>(n, gh);
    const T sgx = lane_sum<T>(n, [&](int64_t i) { return gh(i) * (x[i] - mean) * rstd; });
    const T a = sg / T(n), c = sgx / T(n);
    for (int64_t i = 0; i < n; ++i) {
        const T xh = (x[i] - mean) * rstd;
        gx[i] = rstd * (gh(i) - a - xh * c);
    }
}

/// Adds one row's contribution to the weight and bias gradients: gw += g * x_hat, gb += g.
/// A is the accumulator type (double on the CPU path); gw or gb may be null.
template <class T, class A>
MOEKD_HD void layer_norm_param_grad_row(const T* x, const T* g, A* gw, A* gb, int64_t n, T mean, T rstd) {
    if (gw && gb) {
        for (int64_t i = 0; i < n; ++i) {
            gw[i] += static_cast<A>(g[i] * ((x[i] - mean) * rstd));
            gb[i] += static_cast<A>(g[i]);
        }
        return;
    }
    for (int64_t i = 0; i < n; ++i) {
        if (gw) gw[i] += static_cast<A>(g[i] * ((x[i] - mean) * rstd));
        if (gb) gb[i] += static_cast<A>(g[i]);
    }
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
namespace moekd::kern::cuda {

inline unsigned norm_grid(int64_t items, unsigned block) {
    const int64_t g = (items + block - 1) / block;
    return static_cast<unsigned>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

/// x, y: (M, N) contiguous; mean, rstd: (M) saved for the backward. w, b: (N) or null.
template <class T>
__global__ void layer_norm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                      T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, int64_t M,
                                      int64_t N, T eps) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < M; r += int64_t(gridDim.x) * blockDim.x) {
        layer_norm_stats_row(x + r * N, N, eps, mean + r, rstd + r);
        layer_norm_fwd_row(x + r * N, w, b, y + r * N, N, mean[r], rstd[r]);
    }
}

/// g, gx: (M, N); one thread per row.
template <class T>
__global__ void layer_norm_bwd_x_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ g,
                                        const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ gx,
                                        int64_t M, int64_t N) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < M; r += int64_t(gridDim.x) * blockDim.x)
        layer_norm_bwd_row(x + r * N, w, g + r * N, gx + r * N, N, mean[r], rstd[r]);
}

/// gw, gb: (N) or null; one thread per column j sums over the M rows (float accumulates in float).
template <class T>
__global__ void layer_norm_bwd_params_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                             const T* __restrict__ mean, const T* __restrict__ rstd, T* gw, T* gb,
                                             int64_t M, int64_t N) {
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < N; j += int64_t(gridDim.x) * blockDim.x) {
        T aw = T(0), ab = T(0);
        for (int64_t r = 0; r < M; ++r) {
            T one_w = T(0), one_b = T(0);
            layer_norm_param_grad_row(x + r * N + j, g + r * N + j, &one_w, &one_b, 1, mean[r], rstd[r]);
            aw += one_w;
            ab += one_b;
        }
        if (gw) gw[j] = aw;
        if (gb) gb[j] = ab;
    }
}

template <class T>
cudaError_t launch_layer_norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N,
                                  T eps, cudaStream_t s = 0) {
    MOEKD_LAUNCH(norm_grid(M, 128), 128, 0, s, layer_norm_fwd_kernel<T>)(x, w, b, y, mean, rstd, M, N, eps);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_layer_norm_bwd(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw,
                                  T* gb, int64_t M, int64_t N, cudaStream_t s = 0) {
    if (gx) MOEKD_LAUNCH(norm_grid(M, 128), 128, 0, s, layer_norm_bwd_x_kernel<T>)(x, w, g, mean, rstd, gx, M, N);
    if (gw || gb) MOEKD_LAUNCH(norm_grid(N, 128), 128, 0, s, layer_norm_bwd_params_kernel<T>)(x, g, mean, rstd, gw, gb, M, N);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
