// norm.cuh — per-row math of layer norm (forward, backward for x, weight/bias contributions),
// shared by CPU and GPU.
//
// Part 1 (always compiled): MOEKD_HD row functions over one contiguous row of n elements (the
// normalised dims flattened). ops/norm.hpp calls them in a CPU loop, one call per row.
// Part 2 (MOEKD_CUDA_KERNELS: nvcc, and the emulated build): __global__ kernels and launchers
// (the device table's layer_norm entries, in kernels/norm.cu). Forward and the x gradient:
// a warp per row for N <= 1024 (8 rows a block), a block of 256 per row above; the weight / bias
// gradients: a two-pass deterministic column reduction in double (no atomics).
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
#include "softmax.cuh"  // the warp / block reductions and row loops of part 2 (kern::cuda)

namespace moekd::kern::cuda {


// ---- forward and x gradient: a warp per row (N <= 1024) or a block per row ----------------------
// layer_norm_stats_row: mean = sum x / N, then var = sum (x - mean)^2 / N (two passes, T
// accumulators as the CPU), rstd = 1 / sqrt(var + eps). The sums are per-lane strided partials
// then the fixed shuffle / shared-memory tree (the CPU sums 16 interleaved lanes in order):
// equal to float rounding, not bit for bit. y per element is layer_norm_fwd_row on one element,
// the CPU's expression.

/// x, y: (M, N) contiguous; mean, rstd: (M) saved for the backward. w, b: (N) or null.
template <bool Block, class T>
__global__ void layer_norm_fwd_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                           T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, int64_t M,
                                           int64_t N, T eps) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(M, [&](int64_t r, int64_t t, int64_t step) {
        const T* xr = x + r * N;
        T* yr = y + r * N;
        T s = T(0);
        for (int64_t i = t; i < N; i += step) s += xr[i];
        const T mu = row_allreduce<Block>(s, red, SumOp{}) / T(N);
        T v = T(0);
        for (int64_t i = t; i < N; i += step) {
            const T d = xr[i] - mu;
            v += d * d;
        }
        v = row_allreduce<Block>(v, red, SumOp{});
        const T rs = T(1) / std::sqrt(v / T(N) + eps);
        if (t == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        for (int64_t i = t; i < N; i += step)
            layer_norm_fwd_row(xr + i, w ? w + i : nullptr, b ? b + i : nullptr, yr + i, 1, mu, rs);
    });
}

/// layer_norm_bwd_row: gh = g w (g without weight), gx = rstd (gh - mean(gh) - xh mean(gh xh)),
/// both sums in one pass. g, gx: (M, N).
template <bool Block, class T>
__global__ void layer_norm_bwd_x_rows_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                             const T* __restrict__ g, const T* __restrict__ mean,
                                             const T* __restrict__ rstd, T* __restrict__ gx, int64_t M, int64_t N) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(M, [&](int64_t r, int64_t t, int64_t step) {
        const T* xr = x + r * N;
        const T* gr = g + r * N;
        T* gxr = gx + r * N;
        const T mu = mean[r], rs = rstd[r];
        T sg = T(0), sgx = T(0);
        for (int64_t i = t; i < N; i += step) {
            const T gh = w ? gr[i] * w[i] : gr[i];
            sg += gh;
            sgx += gh * (xr[i] - mu) * rs;
        }
        sg = row_allreduce<Block>(sg, red, SumOp{});
        sgx = row_allreduce<Block>(sgx, red, SumOp{});
        const T a = sg / T(N), c = sgx / T(N);
        for (int64_t i = t; i < N; i += step) {
            const T gh = w ? gr[i] * w[i] : gr[i];
            const T xh = (xr[i] - mu) * rs;
            gxr[i] = rs * (gh - a - xh * c);
        }
    });
}

// ---- weight / bias gradients: a deterministic column reduction (no atomics) ----------------------
// gw[j] = sum_r g[r, j] xh[r, j], gb[j] = sum_r g[r, j], each term layer_norm_param_grad_row's (in
// T, then widened), accumulated in double as the CPU. Pass 1: block (bx, by) of 32 x 8 threads
// owns columns bx * 32 + tx and the row chunk by; thread (tx, ty) sums rows ty, ty + 8, ... of the
// chunk in order, then the 8 partials of a column are added in ty order -> partial[by][j]. Pass
// 2: one thread per column adds the chunks' partials in chunk order and rounds to T. The grouping
// depends only on M and N, never on scheduling, so one input gives the same bits every run; it
// differs from the CPU's single running sum over rows, which in double changes at most the last
// bit of the rounded float.

inline constexpr int kParamCols = 32;  // threadIdx.x: columns (coalesced)
inline constexpr int kParamRows = 8;   // threadIdx.y: rows within a chunk
/// Row chunks of the parameter-gradient pass 1 (gridDim.y) for M rows: about 256 rows each, at
/// most 256 chunks.
inline int64_t layer_norm_param_chunks(int64_t M) {
    int64_t c = (M + 255) / 256;
    return c < 1 ? 1 : (c > 256 ? 256 : c);
}

/// partial_w, partial_b: (chunks, N) doubles (either may be null: that gradient is not wanted).
template <class T>
__global__ void layer_norm_param_partial_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                                const T* __restrict__ mean, const T* __restrict__ rstd,
                                                double* __restrict__ partial_w, double* __restrict__ partial_b,
                                                int64_t M, int64_t N, int64_t chunks) {
    __shared__ double sw[kParamRows][kParamCols];
    __shared__ double sb[kParamRows][kParamCols];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t rows_per_chunk = (M + chunks - 1) / chunks;
    for (int64_t cb = blockIdx.x; cb * kParamCols < N; cb += gridDim.x) {  // uniform across the block
        const int64_t j = cb * kParamCols + tx;
        for (int64_t ch = blockIdx.y; ch < chunks; ch += gridDim.y) {
            const int64_t r0 = ch * rows_per_chunk;
            const int64_t r1 = r0 + rows_per_chunk < M ? r0 + rows_per_chunk : M;
            double aw = 0, ab = 0;
            if (j < N)
                for (int64_t r = r0 + ty; r < r1; r += kParamRows)
                    layer_norm_param_grad_row<T, double>(x + r * N + j, g + r * N + j, &aw, &ab, 1, mean[r], rstd[r]);
            sw[ty][tx] = aw;
            sb[ty][tx] = ab;
            __syncthreads();
            if (ty == 0 && j < N) {
                double tw = sw[0][tx], tb = sb[0][tx];
                for (int k = 1; k < kParamRows; ++k) {
                    tw += sw[k][tx];
                    tb += sb[k][tx];
                }
                if (partial_w) partial_w[ch * N + j] = tw;
                if (partial_b) partial_b[ch * N + j] = tb;
            }
            __syncthreads();
        }
    }
}

/// gw[j] / gb[j] (either may be null) = the chunks' partials of column j summed in chunk order.
template <class T>
__global__ void layer_norm_param_finish_kernel(const double* __restrict__ partial_w,
                                               const double* __restrict__ partial_b, T* __restrict__ gw,
                                               T* __restrict__ gb, int64_t N, int64_t chunks) {
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < N; j += int64_t(gridDim.x) * blockDim.x) {
        double tw = 0, tb = 0;
        for (int64_t c = 0; c < chunks; ++c) {
            if (gw) tw += partial_w[c * N + j];
            if (gb) tb += partial_b[c * N + j];
        }
        if (gw) gw[j] = static_cast<T>(tw);
        if (gb) gb[j] = static_cast<T>(tb);
    }
}

template <class T>
cudaError_t launch_layer_norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N,
                                  T eps, cudaStream_t s = 0) {
    if (N <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(M), kRowsBlock, 0, s, layer_norm_fwd_rows_kernel<false, T>)(x, w, b, y, mean, rstd,
                                                                                               M, N, eps);
    else
        MOEKD_LAUNCH(grid_1d(M), kRowBlock, 0, s, layer_norm_fwd_rows_kernel<true, T>)(x, w, b, y, mean, rstd, M, N,
                                                                                      eps);
    return cudaGetLastError();
}

/// gx (or null): the x gradient. gw, gb (either may be null): the parameter gradients, through
/// `partial` (device doubles, (gw ? 1 : 0) + (gb ? 1 : 0) times layer_norm_param_chunks(M) * N).
template <class T>
cudaError_t launch_layer_norm_bwd(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw,
                                  T* gb, double* partial, int64_t M, int64_t N, cudaStream_t s = 0) {
    if (gx) {
        if (N <= kWarpRowMax)
            MOEKD_LAUNCH(warp_rows_grid(M), kRowsBlock, 0, s, layer_norm_bwd_x_rows_kernel<false, T>)(x, w, g, mean,
                                                                                                     rstd, gx, M, N);
        else
            MOEKD_LAUNCH(grid_1d(M), kRowBlock, 0, s, layer_norm_bwd_x_rows_kernel<true, T>)(x, w, g, mean, rstd, gx, M,
                                                                                            N);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (gw || gb) {
        const int64_t chunks = layer_norm_param_chunks(M);
        double* pw = gw ? partial : nullptr;
        double* pb = gb ? (gw ? partial + chunks * N : partial) : nullptr;
        const dim3 grid(grid_1d((N + kParamCols - 1) / kParamCols), static_cast<unsigned>(chunks));
        MOEKD_LAUNCH(grid, dim3(kParamCols, kParamRows), 0, s, layer_norm_param_partial_kernel<T>)(x, g, mean, rstd, pw,
                                                                                                  pb, M, N, chunks);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
        MOEKD_LAUNCH(grid_for(N, 256), 256, 0, s, layer_norm_param_finish_kernel<T>)(pw, pb, gw, gb, N, chunks);
    }
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
