// softmax.cuh — per-row math of softmax, log_softmax and the fused cross-entropy, shared by CPU
// and GPU.
//
// Part 1 (always compiled): MOEKD_HD row functions. ops/softmax.hpp and ops/loss.hpp call them
// in CPU loops, one call per row. A "row" is n elements at row[0], row[stride], ...,
// row[(n-1) * stride]: for a contiguous tensor of shape (outer, n, inner) reduced over the middle
// dim, the row of (o, i) starts at o * n * inner + i with stride inner, so no dim needs to be
// moved last (stride 1 is the usual last-dim case).
// Part 2 (MOEKD_CUDA_KERNELS: nvcc, and the emulated build): __global__ kernels doing the same
// math, and host launchers (the device table's entries, in kernels/softmax.cu; nll_loss's reduction
// in kernels/index.cu).
// Contiguous rows (the last dim, inner == 1): a warp per row for n <= 1024 (8 rows a block of
// 256), a block of 256 per row above (e.g. a 32k vocabulary); lanes stride over the row and
// reduce by shuffles, then across warps through shared memory. Strided rows (inner > 1): one
// thread per row calling the row functions above (adjacent threads take adjacent i, so strided
// rows are read coalesced).
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

namespace {  // internal linkage: V may be a 64-byte vector (see "host SIMD" below)
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
}  // namespace

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
// Linkage: the helpers below (and exp_fast_core above) take and return 64-byte vectors by value,
// which cross a call in a zmm register with AVX-512 and through memory without, under the same
// mangled name. With vague linkage (plain inline, templates) a program linking a -mavx512f unit and
// a non-AVX-512 one keeps one copy for both, and the other unit calls it by the wrong convention:
// garbage values (seen at -O0, where nothing is inlined), or SIGILL on a CPU without AVX-512. So
// they have internal linkage (an unnamed namespace, which nvcc takes for exp_fast_core too): each
// unit calls its own copy. The row functions that call them pass only pointers and scalars, so
// whichever copy of those the linker keeps computes the same values (though a copy built for
// AVX-512 still needs an AVX-512 CPU). tests/simd_linkage_test.cpp links two such units.
#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define MOEKD_HOST_SIMD 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors without AVX-512: internal linkage, no ABI crossed
namespace simd {
using f32x16 = float __attribute__((vector_size(64)));
using i32x16 = int32_t __attribute__((vector_size(64)));
constexpr int kLanes = 16;
namespace {  // internal linkage: see above
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
}  // namespace
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

// ---- warp / block reductions -------------------------------------------------------------------
// Every reduction has a fixed shape (a butterfly of __shfl_xor_sync within a warp, then the warp
// results read from shared memory in warp order), so the same input gives the same bits whatever
// the scheduling. The xor butterfly leaves the identical value in every lane (each step adds
// the same two operands in both lanes of a pair, and + is commutative). Callers guarantee that
// every lane of the warp (every thread of the block) calls the reduction: blockDim is a multiple
// of 32 and no thread returns early.

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kWarp = 32;
/// Threads per block of the warp-per-row kernels (8 rows per block) and of the block-per-row
/// kernels (a power of two, a multiple of 32).
inline constexpr int kRowsBlock = 256;
inline constexpr int kRowBlock = 256;
/// Rows up to this length take a warp each; longer rows take a block each.
inline constexpr int64_t kWarpRowMax = 1024;

struct SumOp {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return a + b;
    }
};
/// max that propagates NaN (as row_max: once one side is NaN the result is NaN).
struct MaxOp {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return (b > a || b != b) ? b : a;
    }
};

template <class T, class Op>
__device__ inline T warp_allreduce(T v, Op op) {
    for (int o = kWarp / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}

/// Block-wide reduction; every thread gets the result. smem: at least blockDim.x / 32 slots.
template <class T, class Op>
__device__ inline T block_allreduce(T v, T* smem, Op op) {
    v = warp_allreduce(v, op);
    const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
    const int nwarps = static_cast<int>(blockDim.x) / kWarp;
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    T r = smem[0];
    for (int w = 1; w < nwarps; ++w) r = op(r, smem[w]);
    __syncthreads();  // smem may be reused by the next reduction
    return r;
}

/// The reduction of a row: over the lanes of a warp (Block = false) or the block (Block = true).
template <bool Block, class T, class Op>
__device__ inline T row_allreduce(T v, T* smem, Op op) {
    if constexpr (Block) return block_allreduce(v, smem, op);
    else return warp_allreduce(v, op);
}

/// Blocks of the warp-per-row kernels for `rows` rows (kRowsBlock / 32 rows a block).
inline unsigned warp_rows_grid(int64_t rows) { return grid_1d((rows + kRowsBlock / kWarp - 1) / (kRowsBlock / kWarp)); }

/// Calls f(row, lane, lanes) for the rows this warp (Block = false: rows of kRowsBlock / 32
/// warps a block) or this block (Block = true) owns, grid-stride. The row index is uniform across
/// the warp / block, so the collectives inside f are reached by all of its threads.
template <bool Block, class F>
__device__ inline void for_rows(int64_t rows, F&& f) {
    if constexpr (Block) {
        for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) f(r, int64_t(threadIdx.x), int64_t(blockDim.x));
    } else {
        const int64_t wpb = blockDim.x / kWarp;
        const int64_t warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
        for (int64_t r = blockIdx.x * wpb + warp; r < rows; r += int64_t(gridDim.x) * wpb) f(r, lane, int64_t(kWarp));
    }
}

// ---- softmax / log_softmax, contiguous rows (inner == 1) ----------------------------------------
// The math of softmax_row / log_softmax_row: m = max, s = sum exp(x - m), y = exp(x - m) / s or
// (x - m) - log s. The sums are per-lane strided partial sums then the tree above (the CPU sums 16
// interleaved lanes in order), and the exponential is the device exp (the CPU's float softmax
// uses exp_fast, < 2 ulp apart): equal to float rounding, not bit for bit. x is read three times
// (max, sum, output); rows of a warp kernel are short enough to stay in L1/L2.

/// x, y: (rows, n) contiguous. One warp (Block = false) or one block (Block = true) per row.
template <bool Block, class T>
__global__ void softmax_fwd_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n, bool log) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        T m = -INFINITY;
        for (int64_t i = t; i < n; i += step) m = MaxOp{}(m, xr[i]);
        m = row_allreduce<Block>(m, red, MaxOp{});
        T s = T(0);
        for (int64_t i = t; i < n; i += step) s += std::exp(xr[i] - m);
        s = row_allreduce<Block>(s, red, SumOp{});
        if (log) {
            const T ls = std::log(s);
            for (int64_t i = t; i < n; i += step) yr[i] = (xr[i] - m) - ls;
        } else {
            const T inv = T(1) / s;
            for (int64_t i = t; i < n; i += step) yr[i] = std::exp(xr[i] - m) * inv;
        }
    });
}

/// y: the forward output (softmax, or log_softmax when `log`), g: its gradient; all (rows, n).
/// softmax_backward_row: gx = y (g - sum g y); log_softmax_backward_row: gx = g - exp(y) sum g.
template <bool Block, class T>
__global__ void softmax_bwd_rows_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gx,
                                        int64_t rows, int64_t n, bool log) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        const T* yr = y + r * n;
        const T* gr = g + r * n;
        T* gxr = gx + r * n;
        T d = T(0);
        if (log)
            for (int64_t i = t; i < n; i += step) d += gr[i];
        else
            for (int64_t i = t; i < n; i += step) d += gr[i] * yr[i];
        d = row_allreduce<Block>(d, red, SumOp{});
        if (log)
            for (int64_t i = t; i < n; i += step) gxr[i] = gr[i] - std::exp(yr[i]) * d;
        else
            for (int64_t i = t; i < n; i += step) gxr[i] = yr[i] * (gr[i] - d);
    });
}

// ---- softmax / log_softmax, strided rows (inner > 1) --------------------------------------------
// One thread per (o, i) row calling the row functions themselves with stride inner (adjacent
// threads take adjacent i, so each step of the row loop reads coalesced). Simple rather than
// fast: a softmax over a non-last dim is rare in these models (the CPU does the same thing).

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

// ---- cross-entropy (logits (N, C) contiguous, class dim last) ------------------------------------
// cross_entropy_row: m = max, ls = log sum exp(x - m), loss = (1 - e)((m - x[t]) + ls) and, when
// e != 0, + e (ls - sum(x - m) / C). The two sums are taken in the same pass (per-lane partials,
// then the fixed tree); the smoothing sum only when e != 0 (-inf logits stay harmless without
// smoothing, as on the CPU). Ignored rows (t == ignore_index; the host validates the rest) get
// loss, max and log-sum 0. The branch is on the row's target, uniform across its warp / block.

/// logits: (N, C); targets: (N); loss, rmax, lsum: (N).
template <bool Block, class T>
__global__ void cross_entropy_fwd_rows_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                              T* __restrict__ loss, T* __restrict__ rmax, T* __restrict__ lsum,
                                              int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(N, [&](int64_t r, int64_t t, int64_t step) {
        const int64_t tg = targets[r];
        if (tg == ignore_index || tg < 0 || tg >= C) {
            if (t == 0) loss[r] = rmax[r] = lsum[r] = T(0);
            return;  // the whole warp / block: the row's target is uniform
        }
        const T* xr = logits + r * C;
        T m = -INFINITY;
        for (int64_t i = t; i < C; i += step) m = MaxOp{}(m, xr[i]);
        m = row_allreduce<Block>(m, red, MaxOp{});
        T s = T(0), sd = T(0);
        if (smoothing != T(0)) {
            for (int64_t i = t; i < C; i += step) {
                s += std::exp(xr[i] - m);
                sd += xr[i] - m;
            }
            sd = row_allreduce<Block>(sd, red, SumOp{});
        } else {
            for (int64_t i = t; i < C; i += step) s += std::exp(xr[i] - m);
        }
        s = row_allreduce<Block>(s, red, SumOp{});
        if (t == 0) {
            const T ls = std::log(s);
            T l = (T(1) - smoothing) * ((m - xr[tg]) + ls);
            if (smoothing != T(0)) l += smoothing * (ls - sd / T(C));
            loss[r] = l;
            rmax[r] = m;
            lsum[r] = ls;
        }
    });
}

/// cross_entropy_backward_row, one element per thread of the row's warp / block:
/// gx[c] = scale (exp((x - m) - ls) - e / C) - [c == t] scale (1 - e), the CPU's two steps.
/// scale(r) = g[r] when per_row (Reduction::None), else g[0] / divisor (divisor = the kept count
/// for a mean, 1 for a sum). Ignored rows get zeros.
template <bool Block, class T>
__global__ void cross_entropy_bwd_rows_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                              const T* __restrict__ rmax, const T* __restrict__ lsum,
                                              const T* __restrict__ g, bool per_row, T divisor, T* __restrict__ gx,
                                              int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    for_rows<Block>(N, [&](int64_t r, int64_t t, int64_t step) {
        const int64_t tg = targets[r];
        T* gr = gx + r * C;
        if (tg == ignore_index || tg < 0 || tg >= C) {
            for (int64_t i = t; i < C; i += step) gr[i] = T(0);
            return;
        }
        const T* xr = logits + r * C;
        const T m = rmax[r], ls = lsum[r];
        const T scale = per_row ? g[r] : g[0] / divisor;
        const T off = smoothing / T(C);
        for (int64_t i = t; i < C; i += step) {
            T v = scale * (std::exp((xr[i] - m) - ls) - off);
            if (i == tg) v -= scale * (T(1) - smoothing);
            gr[i] = v;
        }
    });
}

/// loss[0] = the per-row losses summed in double in a fixed order (thread i takes rows i, i + 256,
/// ..., then the block tree), divided by `divisor` (the kept count for a mean, 1 for a sum; 0
/// gives 0, the all-ignored mean). One block of kRowBlock threads.
template <class T>
__global__ void cross_entropy_reduce_kernel(const T* __restrict__ rows, T* __restrict__ loss, int64_t N,
                                            double divisor) {
    __shared__ double red[kRowBlock / kWarp];
    double s = 0;
    for (int64_t r = threadIdx.x; r < N; r += blockDim.x) s += static_cast<double>(rows[r]);
    s = block_allreduce(s, red, SumOp{});
    if (threadIdx.x == 0) loss[0] = static_cast<T>(divisor > 0 ? s / divisor : 0.0);
}

// ---- launchers ---------------------------------------------------------------------------------
/// x, y: contiguous (outer, n, inner). inner == 1: a warp per row for n <= 1024, a block per row
/// above; inner > 1: a thread per (o, i) row.
template <class T>
cudaError_t launch_softmax_fwd(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log,
                               cudaStream_t s = 0) {
    if (inner != 1)
        MOEKD_LAUNCH(grid_for(outer * inner, 128), 128, 0, s, softmax_fwd_kernel<T>)(x, y, outer, n, inner, log);
    else if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(outer), kRowsBlock, 0, s, softmax_fwd_rows_kernel<false, T>)(x, y, outer, n, log);
    else
        MOEKD_LAUNCH(grid_1d(outer), kRowBlock, 0, s, softmax_fwd_rows_kernel<true, T>)(x, y, outer, n, log);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_softmax_bwd(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log,
                               cudaStream_t s = 0) {
    if (inner != 1)
        MOEKD_LAUNCH(grid_for(outer * inner, 128), 128, 0, s, softmax_bwd_kernel<T>)(y, g, gx, outer, n, inner, log);
    else if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(outer), kRowsBlock, 0, s, softmax_bwd_rows_kernel<false, T>)(y, g, gx, outer, n, log);
    else
        MOEKD_LAUNCH(grid_1d(outer), kRowBlock, 0, s, softmax_bwd_rows_kernel<true, T>)(y, g, gx, outer, n, log);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_cross_entropy_fwd(const T* logits, const int64_t* targets, T* loss, T* rmax, T* lsum, int64_t N,
                                     int64_t C, int64_t ignore_index, T smoothing, cudaStream_t s = 0) {
    if (C <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(N), kRowsBlock, 0, s, cross_entropy_fwd_rows_kernel<false, T>)(
            logits, targets, loss, rmax, lsum, N, C, ignore_index, smoothing);
    else
        MOEKD_LAUNCH(grid_1d(N), kRowBlock, 0, s, cross_entropy_fwd_rows_kernel<true, T>)(
            logits, targets, loss, rmax, lsum, N, C, ignore_index, smoothing);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_cross_entropy_bwd(const T* logits, const int64_t* targets, const T* rmax, const T* lsum, const T* g,
                                     bool per_row, T divisor, T* gx, int64_t N, int64_t C, int64_t ignore_index,
                                     T smoothing, cudaStream_t s = 0) {
    if (C <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(N), kRowsBlock, 0, s, cross_entropy_bwd_rows_kernel<false, T>)(
            logits, targets, rmax, lsum, g, per_row, divisor, gx, N, C, ignore_index, smoothing);
    else
        MOEKD_LAUNCH(grid_1d(N), kRowBlock, 0, s, cross_entropy_bwd_rows_kernel<true, T>)(
            logits, targets, rmax, lsum, g, per_row, divisor, gx, N, C, ignore_index, smoothing);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_cross_entropy_reduce(const T* rows, T* loss, int64_t N, double divisor, cudaStream_t s = 0) {
    MOEKD_LAUNCH(1, kRowBlock, 0, s, cross_entropy_reduce_kernel<T>)(rows, loss, N, divisor);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
