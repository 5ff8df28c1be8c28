// kl.cuh — per-row math of the fused KL losses (symmetric KL of TSJT, soft distillation of
// OneS), shared by the CPU path (losses/kd.hpp) and the CUDA kernels below. Optimised code.
//
// One row is two logit vectors a, b of n entries (contiguous). With p = softmax(a), q = softmax(b)
// and la = log p, lb = log q, everything the losses need comes from four per-row sums taken
// after subtracting the row maxima ma, mb:
//   d_i = (a_i - ma) - (b_i - mb)           (la_i - lb_i = d_i - c, c = log sa - log sb)
//   sa = sum e^(a_i - ma)   sb = sum e^(b_i - mb)   ua = sum e^(a_i - ma) d_i   ub = sum e^(b_i - mb) d_i
//   KL(p || q) = ua / sa - c        KL(q || p) = c - ub / sb
// Subtracting the maxima keeps d free of any common offset, so the two expectations do not
// cancel catastrophically. Gradients, derived in closed form (k indexes the vocabulary):
//   d/da_k [KL(p||q) + KL(q||p)] = p_k (la_k - lb_k - KL(p||q)) + p_k - q_k
//   d/db_k [KL(p||q) + KL(q||p)] = q_k (lb_k - la_k - KL(q||p)) + q_k - p_k
//   d/db_k KL(p||q)               = q_k - p_k            (soft distillation: b = student)
//
// Part 1 (always compiled): MOEKD_HD functions. The row loops keep kLanes independent
// accumulators so a host compiler vectorises them without -ffast-math, and use kern::exp_approx
// (a Cephes-style polynomial, ~2 ulp in float, written with plain arithmetic so it vectorises)
// instead of std::exp; on the device exp_approx is the CUDA exp.
// Part 2 (MOEKD_CUDA_KERNELS: nvcc, and the emulated build): a warp or a block per row (the
// shuffle / shared-memory row reductions of softmax.cuh), per-element backward kernels, and their
// launchers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common.cuh"

namespace moekd::kern {

/// Independent accumulators per row loop (one AVX-512 register of floats).
inline constexpr int kKlLanes = 16;

// GCC fully unrolls a 16-lane loop with a small body (a max) and then fails to vectorise the
// unrolled code; keeping it a loop lets the loop vectoriser turn it into one vmaxps.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define MOEKD_KL_LANES _Pragma("GCC unroll 1")
#else
#define MOEKD_KL_LANES
#endif

/// exp(x). float on the host: range reduction x = k ln2 + r, a degree-6 polynomial for e^r and
/// 2^k built in the exponent bits; x below -87.3 gives 0, x above 88 saturates (callers pass
/// x <= 0). NaN stays NaN. double, and any type on the device: the library exp.
template <class T>
MOEKD_HD inline T exp_approx(T x) {
#if defined(__CUDA_ARCH__)
    return exp(x);
#else
    if constexpr (std::is_same_v<T, float>) {
        const float lo = -87.33f, hi = 88.0f;
        const float xc = x > hi ? hi : (x < lo ? lo : x);
        // k = round(xc * log2(e)); its bits come from k + 1.5 * 2^23, whose low mantissa bits hold
        // k exactly (the sum is exact: k is an integer). Both come from the one rounded kr, so
        // they agree even when FMA contraction or -ffast-math rewrite the arithmetic.
        const float kr = std::nearbyint(xc * 1.44269504088896341f);
        const float kf = kr + 12582912.0f;
        uint32_t kbits;  // unsigned: a NaN input makes garbage bits here, never signed overflow
        std::memcpy(&kbits, &kf, sizeof kbits);
        const float r = (xc - kr * 0.693359375f) + kr * 2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        const float e = p * r * r + r + 1.0f;
        const uint32_t sbits = (kbits - 0x4B400000u + 127u) << 23;  // 2^k: biased exponent k + 127
        float scale;
        std::memcpy(&scale, &sbits, sizeof scale);
        const float y = e * scale;
        return x < lo ? 0.0f : y;  // NaN fails the test and keeps y (NaN, from r)
    } else {
        return std::exp(x);
    }
#endif
}

/// What one row's forward leaves for the backward.
template <class T>
struct KlRowStats {
    T ma, mb;    // row maxima of a and b
    T lsa, lsb;  // log sum e^(a - ma), log sum e^(b - mb)
    T kl_ab;     // KL(p || q)
    T kl_ba;     // KL(q || p)
};

/// ma = max(a), mb = max(b) over n >= 1 entries (NaN entries are skipped here; they make the
/// sums NaN in kl_row_sums, so the loss is NaN as in PyTorch).
template <class T>
MOEKD_HD inline void kl_row_max(const T* a, const T* b, int64_t n, T* ma, T* mb) {
    constexpr int L = kKlLanes;
    T am[L], bm[L];
    for (int l = 0; l < L; ++l) am[l] = bm[l] = -std::numeric_limits<T>::infinity();
    int64_t i = 0;
    for (; i + L <= n; i += L)
        MOEKD_KL_LANES
        for (int l = 0; l < L; ++l) {
            am[l] = a[i + l] > am[l] ? a[i + l] : am[l];
            bm[l] = b[i + l] > bm[l] ? b[i + l] : bm[l];
        }
    for (; i < n; ++i) {
        am[0] = a[i] > am[0] ? a[i] : am[0];
        bm[0] = b[i] > bm[0] ? b[i] : bm[0];
    }
    T ra = am[0], rb = bm[0];
    for (int l = 1; l < L; ++l) {
        ra = am[l] > ra ? am[l] : ra;
        rb = bm[l] > rb ? bm[l] : rb;
    }
    *ma = ra;
    *mb = rb;
}

/// log(sum e^(x_i)) of one row, stable (the max is subtracted first).
template <class T>
MOEKD_HD inline T kl_row_logsumexp(const T* x, int64_t n) {
    T m, unused;
    kl_row_max(x, x, n, &m, &unused);
    constexpr int L = kKlLanes;
    T s[L] = {};
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) s[l] += exp_approx(x[i + l] - m);
    for (; i < n; ++i) s[0] += exp_approx(x[i] - m);
    T t = T(0);
    for (int l = 0; l < L; ++l) t += s[l];
    return m + std::log(t);
}

/// The four sums of the top comment over one row: sa, sb, ua, ub (see there).
template <class T>
MOEKD_HD inline void kl_row_sums(const T* a, const T* b, int64_t n, T ma, T mb, T* sa, T* sb, T* ua, T* ub) {
    constexpr int L = kKlLanes;
    T s0[L] = {}, s1[L] = {}, u0[L] = {}, u1[L] = {};
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) {
            const T xa = a[i + l] - ma, xb = b[i + l] - mb;
            const T ea = exp_approx(xa), eb = exp_approx(xb), d = xa - xb;
            s0[l] += ea;
            s1[l] += eb;
            u0[l] += ea * d;
            u1[l] += eb * d;
        }
    for (; i < n; ++i) {
        const T xa = a[i] - ma, xb = b[i] - mb;
        const T ea = exp_approx(xa), eb = exp_approx(xb), d = xa - xb;
        s0[0] += ea;
        s1[0] += eb;
        u0[0] += ea * d;
        u1[0] += eb * d;
    }
    T r0 = 0, r1 = 0, r2 = 0, r3 = 0;
    for (int l = 0; l < L; ++l) r0 += s0[l], r1 += s1[l], r2 += u0[l], r3 += u1[l];
    *sa = r0;
    *sb = r1;
    *ua = r2;
    *ub = r3;
}

/// The row statistics from the maxima and the four sums.
template <class T>
MOEKD_HD inline KlRowStats<T> kl_row_finish(T ma, T mb, T sa, T sb, T ua, T ub) {
    KlRowStats<T> s;
    s.ma = ma;
    s.mb = mb;
    s.lsa = std::log(sa);
    s.lsb = std::log(sb);
    const T c = s.lsa - s.lsb;
    s.kl_ab = ua / sa - c;
    s.kl_ba = c - ub / sb;
    return s;
}

/// Forward of one row: the statistics (KL(p||q) + KL(q||p) is st.kl_ab + st.kl_ba).
template <class T>
MOEKD_HD inline KlRowStats<T> kl_forward_row(const T* a, const T* b, int64_t n) {
    T ma, mb, sa, sb, ua, ub;
    kl_row_max(a, b, n, &ma, &mb);
    kl_row_sums(a, b, n, ma, mb, &sa, &sb, &ua, &ub);
    return kl_row_finish(ma, mb, sa, sb, ua, ub);
}

/// The gradient of the symmetric KL at one vocabulary entry, scaled: ga = sa_scale * dL/da,
/// gb = sb_scale * dL/db (formulas at the top).
template <class T>
MOEKD_HD inline void kl_sym_grad_elem(T a, T b, const KlRowStats<T>& st, T sa_scale, T sb_scale, T* ga, T* gb) {
    const T la = (a - st.ma) - st.lsa, lb = (b - st.mb) - st.lsb;
    const T p = exp_approx(la), q = exp_approx(lb), d = la - lb;
    *ga = sa_scale * (p * (d - st.kl_ab) + (p - q));
    *gb = sb_scale * (q * (-d - st.kl_ba) + (q - p));
}

/// Backward of one row of the symmetric KL. ga / gb may be null (a detached side): nothing is
/// written there. scale: the upstream gradient divided by the token count.
template <class T>
MOEKD_HD inline void kl_sym_backward_row(const T* a, const T* b, int64_t n, const KlRowStats<T>& st, T scale, T* ga,
                                         T* gb) {
    if (ga && gb) {
        for (int64_t i = 0; i < n; ++i) kl_sym_grad_elem(a[i], b[i], st, scale, scale, ga + i, gb + i);
    } else if (ga) {
        for (int64_t i = 0; i < n; ++i) {
            T unused;
            kl_sym_grad_elem(a[i], b[i], st, scale, T(0), ga + i, &unused);
        }
    } else if (gb) {
        for (int64_t i = 0; i < n; ++i) {
            T unused;
            kl_sym_grad_elem(a[i], b[i], st, T(0), scale, &unused, gb + i);
        }
    }
}

/// d/db of KL(p || q) for one row (p = softmax(a) the target, q = softmax(b)), times scale:
/// gb_k = scale * (q_k - p_k).
template <class T>
MOEKD_HD inline void kl_target_backward_row(const T* a, const T* b, int64_t n, const KlRowStats<T>& st, T scale,
                                            T* gb) {
    for (int64_t i = 0; i < n; ++i) {
        const T p = exp_approx((a[i] - st.ma) - st.lsa), q = exp_approx((b[i] - st.mb) - st.lsb);
        gb[i] = scale * (q - p);
    }
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
#include "softmax.cuh"  // the warp / block row reductions (row_allreduce, for_rows)

namespace moekd::kern::cuda {

// ---- fused KL rows -------------------------------------------------------------------------------
// A warp per row up to kWarpRowMax entries, a block per row above (the row machinery of
// softmax.cuh: lane-strided partial sums, then a fixed butterfly and warp-order tree), so the same
// input gives the same bits on every run. The CPU's kl_row_sums adds 16 interleaved lanes in order
// instead: the two agree to rounding, not bit for bit (backend_ops_test holds them to 1e-10 in
// double). Padding rows are skipped by the whole warp / block (the branch is on the row index).

/// The max of kl_row_max: a NaN never replaces the running max (NaN entries are skipped there and
/// make the sums NaN instead), so the result does not depend on the order of the reduction.
struct KlMaxOp {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return b > a ? b : a;
    }
};

/// x * s rounded on its own (never contracted into an FMA with what follows), as the CPU's
/// soft_distill stores its scaled copies before using them.
template <class T>
__device__ inline T kl_scaled(T x, T s) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same_v<T, float>) return __fmul_rn(x, s);
    else return __dmul_rn(x, s);
#else
    volatile T v = x * s;
    return v;
#endif
}

/// a, b: (rows, n) contiguous logits, read as x * inv_t when Scaled (soft distillation's
/// temperature); mask (rows) or null: padding rows are skipped. Writes stats[r] of each kept row
/// (kl_row_finish of the maxima and the four sums of kl_row_sums).
template <bool Block, bool Scaled, class T>
__global__ void kl_fwd_kernel(const T* __restrict__ a, const T* __restrict__ b, const uint8_t* __restrict__ mask,
                              T inv_t, KlRowStats<T>* __restrict__ stats, int64_t rows, int64_t n) {
    __shared__ T red[kRowBlock / kWarp];
    for_rows<Block>(rows, [&](int64_t r, int64_t t, int64_t step) {
        if (mask && mask[r]) return;  // uniform across the row's warp / block
        const T* ar = a + r * n;
        const T* br = b + r * n;
        auto ld = [&](const T* p, int64_t i) { return Scaled ? kl_scaled(p[i], inv_t) : p[i]; };
        T ma = -INFINITY, mb = -INFINITY;
        for (int64_t i = t; i < n; i += step) {
            ma = KlMaxOp{}(ma, ld(ar, i));
            mb = KlMaxOp{}(mb, ld(br, i));
        }
        ma = row_allreduce<Block>(ma, red, KlMaxOp{});
        mb = row_allreduce<Block>(mb, red, KlMaxOp{});
        T sa = T(0), sb = T(0), ua = T(0), ub = T(0);
        for (int64_t i = t; i < n; i += step) {
            const T xa = ld(ar, i) - ma, xb = ld(br, i) - mb;
            const T ea = exp_approx(xa), eb = exp_approx(xb), d = xa - xb;
            sa += ea;
            sb += eb;
            ua += ea * d;
            ub += eb * d;
        }
        sa = row_allreduce<Block>(sa, red, SumOp{});
        sb = row_allreduce<Block>(sb, red, SumOp{});
        ua = row_allreduce<Block>(ua, red, SumOp{});
        ub = row_allreduce<Block>(ub, red, SumOp{});
        if (t == 0) stats[r] = kl_row_finish(ma, mb, sa, sb, ua, ub);
    });
}

/// Symmetric-KL backward, one thread per element (grid-stride; the row's stats are a broadcast
/// load): ga / gb (either may be null: a detached side) = scale * the gradient of kl_sym_grad_elem,
/// scale = g[0] / count[0] computed on the device (no host synchronisation); zeros for padding rows
/// and when no row is kept.
template <class T>
__global__ void kl_sym_bwd_kernel(const T* __restrict__ a, const T* __restrict__ b, const uint8_t* __restrict__ mask,
                                  const KlRowStats<T>* __restrict__ stats, const T* __restrict__ g,
                                  const int64_t* __restrict__ count, T* __restrict__ ga, T* __restrict__ gb,
                                  int64_t rows, int64_t n) {
    const int64_t c = count[0];
    const T scale = c ? g[0] / static_cast<T>(c) : T(0);
    const int64_t total = rows * n;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / n;
        T x = T(0), y = T(0);
        if (c && !(mask && mask[r])) kl_sym_grad_elem(a[i], b[i], stats[r], scale, scale, &x, &y);
        if (ga) ga[i] = x;
        if (gb) gb[i] = y;
    }
}

/// Soft-distillation backward (kl_target_backward_row per element): gs = scale * (q - p) with
/// p = softmax(teacher * inv_t), q = softmax(student * inv_t) from the forward's stats (ma, lsa:
/// the teacher's), scale = T(g[0] * temperature / rows) computed on the device.
template <class T>
__global__ void kl_target_bwd_kernel(const T* __restrict__ student, const T* __restrict__ teacher, T inv_t,
                                     const KlRowStats<T>* __restrict__ stats, const T* __restrict__ g,
                                     double temperature, T* __restrict__ gs, int64_t rows, int64_t n) {
    const T scale = static_cast<T>(static_cast<double>(g[0]) * temperature / static_cast<double>(rows));
    const int64_t total = rows * n;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const KlRowStats<T> st = stats[i / n];
        const T p = exp_approx((kl_scaled(teacher[i], inv_t) - st.ma) - st.lsa);
        const T q = exp_approx((kl_scaled(student[i], inv_t) - st.mb) - st.lsb);
        gs[i] = scale * (q - p);
    }
}

// ---- launchers ------------------------------------------------------------------------------------

inline unsigned kl_elems_grid(int64_t elems) { return grid_1d((elems + kRowBlock - 1) / kRowBlock); }

template <bool Scaled, class T>
void launch_kl_fwd_rows(const T* a, const T* b, const uint8_t* mask, T inv_t, KlRowStats<T>* stats, int64_t rows,
                        int64_t n, cudaStream_t s) {
    if (n <= kWarpRowMax)
        MOEKD_LAUNCH(warp_rows_grid(rows), kRowsBlock, 0, s, kl_fwd_kernel<false, Scaled, T>)(a, b, mask, inv_t, stats,
                                                                                              rows, n);
    else
        MOEKD_LAUNCH(grid_1d(rows), kRowBlock, 0, s, kl_fwd_kernel<true, Scaled, T>)(a, b, mask, inv_t, stats, rows, n);
}

/// The forward row kernel for (rows, n): a warp per row up to kWarpRowMax entries, else a block.
/// scaled: the logits are read as x * inv_t (soft distillation).
template <class T>
cudaError_t launch_kl_fwd(const T* a, const T* b, const uint8_t* mask, KlRowStats<T>* stats, int64_t rows, int64_t n,
                          cudaStream_t s = 0, bool scaled = false, T inv_t = T(1)) {
    if (scaled) launch_kl_fwd_rows<true>(a, b, mask, inv_t, stats, rows, n, s);
    else launch_kl_fwd_rows<false>(a, b, mask, inv_t, stats, rows, n, s);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_kl_sym_bwd(const T* a, const T* b, const uint8_t* mask, const KlRowStats<T>* stats, const T* g,
                              const int64_t* count, T* ga, T* gb, int64_t rows, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(kl_elems_grid(rows * n), kRowBlock, 0, s, kl_sym_bwd_kernel<T>)(a, b, mask, stats, g, count, ga, gb,
                                                                                  rows, n);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_kl_target_bwd(const T* student, const T* teacher, T inv_t, const KlRowStats<T>* stats, const T* g,
                                 double temperature, T* gs, int64_t rows, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(kl_elems_grid(rows * n), kRowBlock, 0, s, kl_target_bwd_kernel<T>)(student, teacher, inv_t, stats, g,
                                                                                     temperature, gs, rows, n);
    return cudaGetLastError();
}
}  // namespace moekd::kern::cuda
#endif
