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
// Part 2 (nvcc only): one-thread-per-row kernels calling the same functions, and launchers.
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
namespace moekd::kern::cuda {

inline unsigned relation_grid(int64_t rows, unsigned block) {
    const int64_t g = (rows + block - 1) / block;
    return static_cast<unsigned>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

/// x, y: (rows, n) contiguous; nrm: (rows) receives each row's divisor max(||x||, eps).
template <class T>
__global__ void l2_normalize_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ nrm, int64_t rows,
                                        int64_t n, T eps) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x)
        nrm[r] = l2_normalize_row(x + r * n, y + r * n, n, eps);
}

/// y: the forward output, g: its gradient, nrm: the forward's divisors; all (rows, n) / (rows).
template <class T>
__global__ void l2_normalize_bwd_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gx,
                                        const T* __restrict__ nrm, int64_t rows, int64_t n, T eps) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x)
        l2_normalize_backward_row(y + r * n, g + r * n, gx + r * n, n, nrm[r], !(nrm[r] > eps));
}

/// e: (rows, n) holding gs, overwritten with gs - gt; sq: (rows) the per-row sums of squares.
template <class T>
__global__ void relation_diff_kernel(T* __restrict__ e, const T* __restrict__ gt, T* __restrict__ sq, int64_t rows,
                                     int64_t n) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x)
        sq[r] = relation_diff_row(e + r * n, gt + r * n, n);
}

template <class T>
cudaError_t launch_l2_normalize_fwd(const T* x, T* y, T* nrm, int64_t rows, int64_t n, T eps, cudaStream_t s = 0) {
    MOEKD_LAUNCH(relation_grid(rows, 128), 128, 0, s, l2_normalize_fwd_kernel<T>)(x, y, nrm, rows, n, eps);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_l2_normalize_bwd(const T* y, const T* g, T* gx, const T* nrm, int64_t rows, int64_t n, T eps,
                                    cudaStream_t s = 0) {
    MOEKD_LAUNCH(relation_grid(rows, 128), 128, 0, s, l2_normalize_bwd_kernel<T>)(y, g, gx, nrm, rows, n, eps);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_relation_diff(T* e, const T* gt, T* sq, int64_t rows, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(relation_grid(rows, 128), 128, 0, s, relation_diff_kernel<T>)(e, gt, sq, rows, n);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
