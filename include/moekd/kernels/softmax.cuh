// softmax.cuh — per-row math of softmax, log_softmax and the fused cross-entropy, shared by CPU
// and GPU.
//
// Part 1 (always compiled): MOEKD_HD row functions. ops/softmax.hpp and ops/loss.hpp call them
// in CPU loops, one call per row. A "row" is n elements at row[0], row[stride], ...,
// row[(n-1) * stride]: for a contiguous tensor of shape (outer, n, inner) reduced over the middle
// dim, the row of (o, i) starts at o * n * inner + i with stride inner, so no dim needs to be
// moved last (stride 1 is the usual last-dim case).
// Part 2 (nvcc only): simple one-thread-per-row __global__ kernels calling the same functions, and
// host launchers. Adjacent threads take adjacent i, so strided rows are read coalesced.
//
// Every row function is numerically stable: it subtracts the row max before exponentiating, so
// logits of +1000 give exact probabilities, not inf/NaN. A row that is all -inf gives NaN, as
// in PyTorch. Callers guarantee n >= 1.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"

namespace moekd::kern {

/// max over the row; NaN propagates (once m is NaN it stays NaN).
template <class T>
MOEKD_HD T row_max(const T* x, int64_t n, int64_t stride = 1) {
    T m = x[0];
    for (int64_t i = 1; i < n; ++i) {
        const T v = x[i * stride];
        if (v > m || v != v) m = v;
    }
    return m;
}

/// sum_i exp(x_i - m).
template <class T>
MOEKD_HD T row_sum_exp(const T* x, int64_t n, T m, int64_t stride = 1) {
    T s = T(0);
    for (int64_t i = 0; i < n; ++i) s += std::exp(x[i * stride] - m);
    return s;
}

/// log(sum_i exp(x_i)), stable.
template <class T>
MOEKD_HD T row_logsumexp(const T* x, int64_t n, int64_t stride = 1) {
    const T m = row_max(x, n, stride);
    return m + std::log(row_sum_exp(x, n, m, stride));
}

/// exp_fast's core: e^(xc - k ln 2) for the clamped argument xc and k = floor(xc / ln 2 + 1/2), by
/// Cody-Waite reduction and a degree-5 polynomial. V: float, or a host SIMD vector of floats (the
/// same operations lane by lane).
template <class V>
MOEKD_HD inline V exp_fast_core(V xc, V k) {
    V r = xc - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    const V z = r * r;
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * z + r + 1.0f;
}

/// exp(x) for float without a libm call, so loops over it vectorize (Cephes expf: Cody-Waite
/// reduction by ln 2, degree-5 polynomial, 2^k through the exponent bits; relative error < 2 ulp).
/// x < -87.3 (and -inf) gives exactly 0, as masked attention scores need; x > 88.7 gives +inf;
/// NaN gives NaN.
MOEKD_HD inline float exp_fast(float x) {
    const float hi = 88.7228f, lo = -87.3365f;
    const float xc = x > hi ? hi : (x < lo ? lo : x);
    const float k = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    const float p = exp_fast_core(xc, k);
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof(scale));
    float e = p * scale;
    e = x < lo ? 0.0f : e;
    e = x > hi ? __builtin_inff() : e;
    return x != x ? x : e;
}

// ---- host SIMD ---------------------------------------------------------------------------------
// GCC / Clang vector extensions for the CPU path (never under nvcc, whose device code keeps the
// scalar functions). Each lane does exactly what the scalar function does, so a vector loop gives
// the scalar loop's bits (exp, softmax; a sum of products may differ by where the compiler
// contracts to FMA); only the compiler's instruction choice changes (AVX-512 at
// -march=native, narrower vectors elsewhere). GCC does not vectorise the scalar lanes below on
// its own: max reductions and the exp's float -> int conversion stay scalar. Because both paths
// give the same bits, a program linking nvcc-compiled and host-compiled units gets the same values
// whichever copy of an inline row function the linker keeps. tests/simd_kernels_test.cpp checks.
#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define MOEKD_HOST_SIMD 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors without AVX-512: all inline, no ABI crossed
namespace simd {
using f32x16 = float __attribute__((vector_size(64)));
using i32x16 = int32_t __attribute__((vector_size(64)));
constexpr int kLanes = 16;
inline f32x16 load(const float* p) {
    f32x16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
inline void store(float* p, f32x16 v) { __builtin_memcpy(p, &v, sizeof v); }
inline f32x16 splat(float s) { return f32x16{} + s; }
/// max over the lanes in lane order, from `m` (the scalar loop's order).
inline float max_lanes(f32x16 v, float m) {
    for (int l = 0; l < kLanes; ++l) m = v[l] > m ? v[l] : m;
    return m;
}
/// sum of the lanes in lane order, from `s`.
inline float sum_lanes(f32x16 v, float s) {
    for (int l = 0; l < kLanes; ++l) s += v[l];
    return s;
}
/// exp_fast (below) lane by lane: the same clamp, reduction, polynomial and exponent bits.
inline f32x16 exp_fast(f32x16 x) {
    const f32x16 hi = splat(88.7228f), lo = splat(-87.3365f);
    const f32x16 xc = x > hi ? hi : (x < lo ? lo : x);
    const f32x16 t = xc * 1.44269504088896341f + 0.5f;
    f32x16 k = __builtin_convertvector(__builtin_convertvector(t, i32x16), f32x16);  // trunc
    k = k > t ? k - 1.0f : k;                                                         // floor
    const f32x16 p = exp_fast_core(xc, k);
    const i32x16 bits = (__builtin_convertvector(k, i32x16) + 127) << 23;
    f32x16 e = p * (f32x16)bits;  // a vector cast keeps the bits
    e = x < lo ? splat(0.0f) : e;
    e = x > hi ? splat(__builtin_inff()) : e;
    return x != x ? x : e;
}
}  // namespace simd
#pragma GCC diagnostic pop
#endif

// ---- softmax ---------------------------------------------------------------------------------
/// Contiguous float row: max, exp and sum in 16 independent lanes (host SIMD vectors where
/// available; the scalar lanes elsewhere give the same values).
MOEKD_HD inline void softmax_row_contig(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    constexpr int W = 16;
    int64_t i = 0;
    float m = -__builtin_inff();
#if defined(MOEKD_HOST_SIMD)
    {
        simd::f32x16 mv = simd::splat(-__builtin_inff());
        for (; i + W <= n; i += W) {
            const simd::f32x16 v = simd::load(x + i);
            mv = v > mv ? v : mv;
        }
        m = simd::max_lanes(mv, m);
    }
#else
    float mv[W];
    for (int l = 0; l < W; ++l) mv[l] = -__builtin_inff();
    for (; i + W <= n; i += W)
        for (int l = 0; l < W; ++l) mv[l] = x[i + l] > mv[l] ? x[i + l] : mv[l];
    for (int l = 0; l < W; ++l) m = mv[l] > m ? mv[l] : m;
#endif
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    // a NaN anywhere propagates through exp and the sum to the whole row (as the scalar path)
    if (m == -__builtin_inff()) m = 0.0f;  // an all -inf row: exp(-inf - 0) = 0, 0/0 = NaN (torch)
    float s = 0.0f;
    i = 0;
#if defined(MOEKD_HOST_SIMD)
    {
        simd::f32x16 sv = simd::splat(0.0f);
        for (; i + W <= n; i += W) {
            const simd::f32x16 e = simd::exp_fast(simd::load(x + i) - m);
            simd::store(y + i, e);
            sv += e;
        }
        s = simd::sum_lanes(sv, s);
    }
#else
    float sv[W] = {};
    for (; i + W <= n; i += W)
        for (int l = 0; l < W; ++l) {
            const float e = exp_fast(x[i + l] - m);
            y[i + l] = e;
            sv[l] += e;
        }
    for (int l = 0; l < W; ++l) s += sv[l];
#endif
    for (; i < n; ++i) {
        const float e = exp_fast(x[i] - m);
        y[i] = e;
        s += e;
    }
    const float inv = 1.0f / s;
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

/// y = exp(x - max) / sum(exp(x - max)). y may alias x.
template <class T>
MOEKD_HD void softmax_row(const T* x, T* y, int64_t n, int64_t stride = 1) {
    if constexpr (sizeof(T) == 4) {
        if (stride == 1 && x != y) return softmax_row_contig(x, y, n);
    }
    const T m = row_max(x, n, stride);
    T s = T(0);
    for (int64_t i = 0; i < n; ++i) {
        const T e = std::exp(x[i * stride] - m);
        y[i * stride] = e;
        s += e;
    }
    const T inv = T(1) / s;
    for (int64_t i = 0; i < n; ++i) y[i * stride] *= inv;
}

/// g_x = y * (g - sum(g * y)), with y = softmax(x).
template <class T>
MOEKD_HD void softmax_backward_row(const T* y, const T* g, T* gx, int64_t n, int64_t stride = 1) {
    if (stride == 1) {  // 16 independent partial sums (host SIMD vectors for float)
        constexpr int W = 16;
        int64_t i = 0;
        T dot = T(0);
#if defined(MOEKD_HOST_SIMD)
        if constexpr (std::is_same_v<T, float>) {
            simd::f32x16 dv = simd::splat(0.0f);
            for (; i + W <= n; i += W) dv += simd::load(g + i) * simd::load(y + i);
            dot = simd::sum_lanes(dv, dot);
        } else
#endif
        {
            T dv[W] = {};
            for (; i + W <= n; i += W)
                for (int l = 0; l < W; ++l) dv[l] += g[i + l] * y[i + l];
            for (int l = 0; l < W; ++l) dot += dv[l];
        }
        for (; i < n; ++i) dot += g[i] * y[i];
        for (int64_t j = 0; j < n; ++j) gx[j] = y[j] * (g[j] - dot);
        return;
    }
    T dot = T(0);
    for (int64_t i = 0; i < n; ++i) dot += g[i * stride] * y[i * stride];
    for (int64_t i = 0; i < n; ++i) gx[i * stride] = y[i * stride] * (g[i * stride] - dot);
}

// ---- log_softmax -----------------------------------------------------------------------------
/// y = (x - max) - log(sum(exp(x - max))). y may alias x.
template <class T>
MOEKD_HD void log_softmax_row(const T* x, T* y, int64_t n, int64_t stride = 1) {
    const T m = row_max(x, n, stride);
    const T ls = std::log(row_sum_exp(x, n, m, stride));
    for (int64_t i = 0; i < n; ++i) y[i * stride] = (x[i * stride] - m) - ls;
}

/// g_x = g - softmax(x) * sum(g), with y = log_softmax(x) so softmax(x) = exp(y).
template <class T>
MOEKD_HD void log_softmax_backward_row(const T* y, const T* g, T* gx, int64_t n, int64_t stride = 1) {
    T sg = T(0);
    for (int64_t i = 0; i < n; ++i) sg += g[i * stride];
    for (int64_t i = 0; i < n; ++i) gx[i * stride] = g[i * stride] - std::exp(y[i * stride]) * sg;
}

// ---- cross-entropy (fused log_softmax + nll + label smoothing) --------------------------------
/// Loss of one row of n class logits with class `target` in [0, n) and label smoothing e:
///   (1 - e) * (lse - x[target]) + e * (lse - mean(x))        lse = logsumexp(x) = m + ls
/// which is torch's (1 - e) * nll + e * mean over classes of -log p. Writes the row max m and
/// ls = log(sum(exp(x - m))) for the backward; keeping them apart (rather than lse = m + ls)
/// keeps float precision when |m| is large. Every term is formed from x - m. The smoothing term
/// is skipped when e == 0, so -inf logits (masked classes) stay harmless without smoothing.
template <class T>
MOEKD_HD T cross_entropy_row(const T* x, int64_t n, int64_t target, T smoothing, T* max_out, T* logsum_out) {
    const T m = row_max(x, n);
    const T ls = std::log(row_sum_exp(x, n, m));
    *max_out = m;
    *logsum_out = ls;
    T loss = (T(1) - smoothing) * ((m - x[target]) + ls);
    if (smoothing != T(0)) {
        T s = T(0);
        for (int64_t i = 0; i < n; ++i) s += x[i] - m;
        loss += smoothing * (ls - s / T(n));
    }
    return loss;
}

/// gx[c] = scale * (softmax(x)[c] - (1 - e) * [c == target] - e / n): the gradient of
/// cross_entropy_row times `scale` (the upstream gradient, divided by the count for a mean).
/// m and ls are what cross_entropy_row wrote.
template <class T>
MOEKD_HD void cross_entropy_backward_row(const T* x, int64_t n, int64_t target, T smoothing, T m, T ls, T scale,
                                         T* gx) {
    const T off = smoothing / T(n);
    for (int64_t i = 0; i < n; ++i) gx[i] = scale * (std::exp((x[i] - m) - ls) - off);
    gx[target] -= scale * (T(1) - smoothing);
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
namespace moekd::kern::cuda {

inline unsigned softmax_grid(int64_t rows, unsigned block) {
    const int64_t g = (rows + block - 1) / block;
    return static_cast<unsigned>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

/// x, y: contiguous (outer, n, inner); one thread per (o, i) row, reduced over n.
template <class T>
__global__ void softmax_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n,
                                   int64_t inner, bool log) {
    const int64_t rows = outer * inner;
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
        const int64_t base = (r / inner) * n * inner + r % inner;
        if (log)
            log_softmax_row(x + base, y + base, n, inner);
        else
            softmax_row(x + base, y + base, n, inner);
    }
}

/// y: the forward output (softmax or log_softmax), g: its gradient; all (outer, n, inner).
template <class T>
__global__ void softmax_bwd_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gx,
                                   int64_t outer, int64_t n, int64_t inner, bool log) {
    const int64_t rows = outer * inner;
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
        const int64_t base = (r / inner) * n * inner + r % inner;
        if (log)
            log_softmax_backward_row(y + base, g + base, gx + base, n, inner);
        else
            softmax_backward_row(y + base, g + base, gx + base, n, inner);
    }
}

/// logits: (N, C) contiguous; targets: (N); loss, rmax, lsum: (N). Ignored rows get loss 0.
template <class T>
__global__ void cross_entropy_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                         T* __restrict__ loss, T* __restrict__ rmax, T* __restrict__ lsum, int64_t N,
                                         int64_t C, int64_t ignore_index, T smoothing) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < N; r += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = targets[r];
        if (t == ignore_index || t < 0 || t >= C) {  // the host validates targets before launching
            loss[r] = T(0);
            rmax[r] = T(0);
            lsum[r] = T(0);
            continue;
        }
        loss[r] = cross_entropy_row(logits + r * C, C, t, smoothing, rmax + r, lsum + r);
    }
}

/// scale: (N) per-row upstream gradient (already divided by the count for a mean).
template <class T>
__global__ void cross_entropy_bwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                         const T* __restrict__ rmax, const T* __restrict__ lsum,
                                         const T* __restrict__ scale, T* __restrict__ gx,
                                         int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < N; r += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = targets[r];
        if (t == ignore_index || t < 0 || t >= C) {
            for (int64_t c = 0; c < C; ++c) gx[r * C + c] = T(0);
            continue;
        }
        cross_entropy_backward_row(logits + r * C, C, t, smoothing, rmax[r], lsum[r], scale[r], gx + r * C);
    }
}

template <class T>
cudaError_t launch_softmax_fwd(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log,
                               cudaStream_t s = 0) {
    MOEKD_LAUNCH(softmax_grid(outer * inner, 128), 128, 0, s, softmax_fwd_kernel<T>)(x, y, outer, n, inner, log);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_softmax_bwd(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log,
                               cudaStream_t s = 0) {
    MOEKD_LAUNCH(softmax_grid(outer * inner, 128), 128, 0, s, softmax_bwd_kernel<T>)(y, g, gx, outer, n, inner, log);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_cross_entropy_fwd(const T* logits, const int64_t* targets, T* loss, T* rmax, T* lsum, int64_t N,
                                     int64_t C, int64_t ignore_index, T smoothing, cudaStream_t s = 0) {
    MOEKD_LAUNCH(softmax_grid(N, 128), 128, 0, s, cross_entropy_fwd_kernel<T>)(logits, targets, loss, rmax, lsum, N, C,
                                                                     ignore_index, smoothing);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_cross_entropy_bwd(const T* logits, const int64_t* targets, const T* rmax, const T* lsum,
                                     const T* scale, T* gx, int64_t N, int64_t C, int64_t ignore_index, T smoothing,
                                     cudaStream_t s = 0) {
    MOEKD_LAUNCH(softmax_grid(N, 128), 128, 0, s, cross_entropy_bwd_kernel<T>)(logits, targets, rmax, lsum, scale, gx, N, C,
                                                                     ignore_index, smoothing);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
