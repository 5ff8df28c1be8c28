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
// Part 2 (nvcc only): block-per-row kernels (shared-memory reductions) and host launchers.
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
namespace moekd::kern::cuda {

/// Threads per row block of the KL kernels (a power of two).
inline constexpr int kKlBlock = 256;

/// Block-wide reduction of v (op: 0 sum, 1 max) through shared memory; every thread gets it.
template <class T>
__device__ inline T kl_block_reduce(T v, T* smem, int op) {
    const int t = threadIdx.x;
    smem[t] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) smem[t] = op == 0 ? smem[t] + smem[t + s] : (smem[t + s] > smem[t] ? smem[t + s] : smem[t]);
        __syncthreads();
    }
    const T r = smem[0];
    __syncthreads();
    return r;
}

/// a, b: (rows, n) contiguous; one block per row. Writes the row statistics (padded rows are
/// skipped when mask[r] != 0; mask may be null).
template <class T>
__global__ void kl_fwd_kernel(const T* __restrict__ a, const T* __restrict__ b, const uint8_t* __restrict__ mask,
                              KlRowStats<T>* __restrict__ stats, int64_t rows, int64_t n) {
    __shared__ T smem[kKlBlock];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        if (mask && mask[r]) continue;  // uniform across the block
        const T* ar = a + r * n;
        const T* br = b + r * n;
        T ma = -INFINITY, mb = -INFINITY;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            ma = ar[i] > ma ? ar[i] : ma;
            mb = br[i] > mb ? br[i] : mb;
        }
        ma = kl_block_reduce(ma, smem, 1);
        mb = kl_block_reduce(mb, smem, 1);
        T sa = 0, sb = 0, ua = 0, ub = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const T xa = ar[i] - ma, xb = br[i] - mb;
            const T ea = exp_approx(xa), eb = exp_approx(xb), d = xa - xb;
            sa += ea;
            sb += eb;
            ua += ea * d;
            ub += eb * d;
        }
        sa = kl_block_reduce(sa, smem, 0);
        sb = kl_block_reduce(sb, smem, 0);
        ua = kl_block_reduce(ua, smem, 0);
        ub = kl_block_reduce(ub, smem, 0);
        if (threadIdx.x == 0) stats[r] = kl_row_finish(ma, mb, sa, sb, ua, ub);
    }
}

/// Symmetric-KL backward; ga or gb may be null (detached side). Padded rows get zeros.
template <class T>
__global__ void kl_sym_bwd_kernel(const T* __restrict__ a, const T* __restrict__ b, const uint8_t* __restrict__ mask,
                                  const KlRowStats<T>* __restrict__ stats, T scale, T* __restrict__ ga,
                                  T* __restrict__ gb, int64_t rows, int64_t n) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const bool pad = mask && mask[r];
        const KlRowStats<T> st = stats[r];
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T x, y;
            if (pad) x = y = T(0);
            else kl_sym_grad_elem(a[r * n + i], b[r * n + i], st, scale, scale, &x, &y);
            if (ga) ga[r * n + i] = x;
            if (gb) gb[r * n + i] = y;
        }
    }
}

inline unsigned kl_grid(int64_t rows) {
    return static_cast<unsigned>(rows < 65535 ? (rows > 0 ? rows : 1) : 65535);
}

template <class T>
cudaError_t launch_kl_fwd(const T* a, const T* b, const uint8_t* mask, KlRowStats<T>* stats, int64_t rows, int64_t n,
                          cudaStream_t s = 0) {
    MOEKD_LAUNCH(kl_grid(rows), kKlBlock, 0, s, kl_fwd_kernel<T>)(a, b, mask, stats, rows, n);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_kl_sym_bwd(const T* a, const T* b, const uint8_t* mask, const KlRowStats<T>* stats, T scale, T* ga,
                              T* gb, int64_t rows, int64_t n, cudaStream_t s = 0) {
    MOEKD_LAUNCH(kl_grid(rows), kKlBlock, 0, s, kl_sym_bwd_kernel<T>)(a, b, mask, stats, scale, ga, gb, rows, n);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
