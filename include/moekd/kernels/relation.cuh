// relation.cuh — per-row math of the cosine-relation losses (losses/relation.hpp): L2 row
// normalisation and its backward, and the squared Gram difference, shared by the CPU path and
// the CUDA kernels below. Optimised code (the naive reference is in losses/relation.hpp).
//
// A row x of n entries is normalised as y = x / nrm with nrm = max(||x||, eps), so the cosine of
// two rows is the dot product of their normalised rows (torch's F.cosine_similarity divides by
// max(||x|| ||y||, eps); the two agree whenever the norms exceed eps). Backward:
//   ||x|| > eps:  gx = (g - y (g . y)) / nrm      (the projection off y, scaled)
//   ||x|| <= eps: gx = g / eps                     (y = x / eps is linear in x there)
//
// Part 1 (always compiled): MOEKD_HD row functions; the CPU loops call them.
// Part 2 (MOEKD_CUDA_KERNELS: nvcc, and the emulated build): the same math with a warp or a block
// per row (shuffle / shared-memory reductions), and launchers.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.cuh"

namespace moekd::kern {

/// y = x / max(||x||, eps) over one contiguous row of n; returns the divisor max(||x||, eps).
/// y may alias x.
template <class T>
MOEKD_HD inline T l2_normalize_row(const T* x, T* y, int64_t n, T eps) {
    constexpr int L = 8;
    T acc[L] = {};
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) acc[l] += x[i + l] * x[i + l];
    for (; i < n; ++i) acc[0] += x[i] * x[i];
    T ss = T(0);
    for (int l = 0; l < L; ++l) ss += acc[l];
    const T nrm = std::sqrt(ss);
    const T d = nrm > eps ? nrm : eps;
    const T inv = T(1) / d;
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] * inv;
    return d;
}

/// Backward of l2_normalize_row: y the normalised row, g its gradient, d the divisor the forward
/// returned, clamped = (the row norm was <= eps). Writes gx (may alias g, not y).
template <class T>
MOEKD_HD inline void l2_normalize_backward_row(const T* y, const T* g, T* gx, int64_t n, T d, bool clamped) {
    const T inv = T(1) / d;
    if (clamped) {
        for (int64_t j = 0; j < n; ++j) gx[j] = g[j] * inv;
        return;
    }
    constexpr int L = 8;
    T acc[L] = {};
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) acc[l] += g[i + l] * y[i + l];
    for (; i < n; ++i) acc[0] += g[i] * y[i];
    T dot = T(0);
    for (int l = 0; l < L; ++l) dot += acc[l];
    for (int64_t j = 0; j < n; ++j) gx[j] = (g[j] - y[j] * dot) * inv;
}

/// In place over one row of n Gram entries: e = gs - gt (e holds gs on entry), returning
/// sum(e^2). The backward reuses e: d loss / d gs = 2 * scale * e.
template <class T>
MOEKD_HD inline T relation_diff_row(T* e, const T* gt, int64_t n) {
    constexpr int L = 8;
    T acc[L] = {};
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) {
            const T v = e[i + l] - gt[i + l];
            e[i + l] = v;
            acc[l] += v * v;
        }
    for (; i < n; ++i) {
        const T v = e[i] - gt[i];
        e[i] = v;
        acc[0] += v * v;
    }
    T s = T(0);
    for (int l = 0; l < L; ++l) s += acc[l];
    return s;
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
#include "softmax.cuh"  // the warp / block row reductions (row_allreduce, for_rows)

namespace moekd::kern::cuda {

// A warp per row up to kWarpRowMax entries (head widths, hidden sizes, the N of a token group), a
// block per row above, with the fixed-shape reductions of softmax.cuh: the same input gives the
// same bits. The CPU row functions above add 8 interleaved lanes in order instead: the two agree
// to rounding, not bit for bit.

/// x, y: (rows, n) contiguous (y may be x); nrm: (rows) receives each row's divisor max(||x||, eps).
template <bool Block, class T>
__global__ void l2_normalize_fwd_kernel(const T* x, T* y, T* __restrict__ nrm, int64_t rows, int64_t n, T eps) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        T ss = T(0);
        for (int64_t i = t; i < n; i += step) ss += xr[i] * xr[i];
        ss = row_allreduce<Block>(ss, red, SumOp{});
        const T nr = std::sqrt(ss);
        const T d = nr > eps ? nr : eps;
        const T inv = T(1) / d;
        for (int64_t i = t; i < n; i += step) yr[i] = xr[i] * inv;
        if (t == 0) nrm[r] = d;
    });
}

/// y: the forward output, g: its gradient (times scale[0] when scale is not null), nrm: the
/// forward's divisors; gx may be g. l2_normalize_backward_row per row.
template <bool Block, class T>
__global__ void l2_normalize_bwd_kernel(const T* __restrict__ y, const T* g, const T* __restrict__ scale, T* gx,
                                        const T* __restrict__ nrm, int64_t rows, int64_t n, T eps) {
    __shared__ T red[kRowBlock / kWarp];
    const T s = scale ? scale[0] : T(1);
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        const T* yr = y + r * n;
        const T* gr = g + r * n;
        T* gxr = gx + r * n;
        const T d = nrm[r];
        const T inv = T(1) / d;
        if (!(d > eps)) {  // clamped: y = x / eps is linear in x (uniform across the row)
            for (int64_t i = t; i < n; i += step) gxr[i] = (s * gr[i]) * inv;
            return;
        }
        T dot = T(0);
        for (int64_t i = t; i < n; i += step) dot += (s * gr[i]) * yr[i];
        dot = row_allreduce<Block>(dot, red, SumOp{});
        for (int64_t i = t; i < n; i += step) gxr[i] = ((s * gr[i]) - yr[i] * dot) * inv;
    });
}

/// e: (rows, n) holding gs, overwritten with gs - gt; sq: (rows) the per-row sums of squares.
template <bool Block, class T>
__global__ void relation_diff_kernel(T* __restrict__ e, const T* __restrict__ gt, T* __restrict__ sq, int64_t rows,
                                     int64_t n) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        T* er = e + r * n;
        const T* gr = gt + r * n;
        T acc = T(0);
        for (int64_t i = t; i < n; i += step) {
            const T v = er[i] - gr[i];
            er[i] = v;
            acc += v * v;
        }
        acc = row_allreduce<Block>(acc, red, SumOp{});
        if (t == 0) sq[r] = acc;
    });
}

template <class T>
cudaError_t launch_l2_normalize_fwd(const T* x, T* y, T* nrm, int64_t rows, int64_t n, T eps, cudaStream_t s = 0) {
    if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(rows), kRowsBlock, 0, s, l2_normalize_fwd_kernel<false, T>)(x, y, nrm, rows, n,
                                                                                               eps);
    else
        MOEKD_LAUNCH(grid_1d(rows), kRowBlock, 0, s, l2_normalize_fwd_kernel<true, T>)(x, y, nrm, rows, n, eps);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_l2_normalize_bwd(const T* y, const T* g, const T* scale, T* gx, const T* nrm, int64_t rows,
                                    int64_t n, T eps, cudaStream_t s = 0) {
    if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(rows), kRowsBlock, 0, s, l2_normalize_bwd_kernel<false, T>)(y, g, scale, gx, nrm,
                                                                                               rows, n, eps);
    else
        MOEKD_LAUNCH(grid_1d(rows), kRowBlock, 0, s, l2_normalize_bwd_kernel<true, T>)(y, g, scale, gx, nrm, rows, n,
                                                                                      eps);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_relation_diff(T* e, const T* gt, T* sq, int64_t rows, int64_t n, cudaStream_t s = 0) {
    if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(rows), kRowsBlock, 0, s, relation_diff_kernel<false, T>)(e, gt, sq, rows, n);
    else
        MOEKD_LAUNCH(grid_1d(rows), kRowBlock, 0, s, relation_diff_kernel<true, T>)(e, gt, sq, rows, n);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
