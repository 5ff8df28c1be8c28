// gating.cuh — per-token router math of the Mixture-of-Experts layer, shared by CPU and GPU:
// softmax over the E experts, top-k selection (ties to the lower expert index), the gate values
// (optionally renormalised over the chosen k: before capacity dropping, GShard, or after it over
// the kept choices, fairseq's default), their backward, the expert capacity, and the capacity
// positions (each assignment's place in its expert's queue, GShard priority order).
//
// Part 1 (always compiled): MOEKD_HD functions. moe/router.hpp and moe/dispatch.hpp call them in
// CPU loops, one call per token (or one pass for the positions).
// Part 2 (nvcc, and g++ for the emulated device): __global__ kernels over the same functions and
// host launchers; they follow the CPU code line for line. The moe:: ops reach them through the
// device table (core/backend.hpp, filled in kernels/gating.cu).
//
// Shapes: logits, probs: (N, E) row-major; idx, gates: (N, k); pad: (N) uint8, 1 = pad.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "softmax.cuh"

namespace moekd::kern {

/// True when value a (expert ia) ranks before b (expert ib): larger first, the lower index on
/// ties. Router logits are checked finite before routing, so NaN never reaches this.
template <class T>
MOEKD_HD inline bool gate_before(T a, int64_t ia, T b, int64_t ib) {
    return a > b || (a == b && ia < ib);
}

/// The index of the largest of x[0..n), the lower index on ties (topk_row with k = 1): the first i
/// with x[i] > every x before it that won, as the plain loop below (a NaN never wins; a NaN at
/// x[0] is never beaten). Router logits are checked finite first. Requires n >= 1.
template <class T>
MOEKD_HD inline int64_t argmax_row(const T* x, int64_t n) {
    int64_t best = 0;
#if defined(MOEKD_HOST_SIMD)
    if constexpr (std::is_same_v<T, float>) {
        if (n >= simd::kLanes) {  // the max in vector lanes, then its first position
            simd::f32x16 mv = simd::load(x);
            simd::i32x16 nan = mv != mv;
            int64_t i = simd::kLanes;
            for (; i + simd::kLanes <= n; i += simd::kLanes) {
                const simd::f32x16 v = simd::load(x + i);
                nan |= v != v;
                mv = v > mv ? v : mv;
            }
            bool any_nan = false;
            for (int l = 0; l < simd::kLanes; ++l) any_nan = any_nan || nan[l] != 0;
            if (!any_nan) {  // (with a NaN in the blocks the plain loop decides)
                T m = simd::max_lanes(mv, mv[0]);
                for (; i < n; ++i) m = x[i] > m ? x[i] : m;
                while (best + 1 < n && !(x[best] == m)) ++best;
                return best;
            }
        }
    }
#endif
    for (int64_t i = 1; i < n; ++i)
        if (x[i] > x[best]) best = i;
    return best;
}

/// idx[0..k) = the k largest of x[0..n) in descending order, ties to the lower index (insertion
/// into a sorted list of k: O(n k), k is 1 or 2 in practice). Requires 1 <= k <= n.
template <class T>
MOEKD_HD inline void topk_row(const T* x, int64_t n, int64_t k, int64_t* idx) {
    if (k == 1) {
        idx[0] = argmax_row(x, n);
        return;
    }
    int64_t m = 0;  // how many of idx are filled
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        if (m == k && !gate_before(v, i, x[idx[k - 1]], idx[k - 1])) continue;
        int64_t p = m < k ? m++ : k - 1;
        while (p > 0 && gate_before(v, i, x[idx[p - 1]], idx[p - 1])) {
            idx[p] = idx[p - 1];
            --p;
        }
        idx[p] = i;
    }
}

/// gates[j] = probs[idx[j]], divided by their sum when `normalize` (GShard top-2).
template <class T>
MOEKD_HD inline void topk_gates_row(const T* probs, const int64_t* idx, int64_t k, bool normalize, T* gates) {
    T s = T(0);
    for (int64_t j = 0; j < k; ++j) {
        gates[j] = probs[idx[j]];
        s += gates[j];
    }
    if (normalize)
        for (int64_t j = 0; j < k; ++j) gates[j] = gates[j] / s;
}

/// dprobs[idx[j]] += d gates / d probs applied to dgates (dprobs: one row of E, accumulated).
///   plain:       d p_m = dg_m
///   normalised:  g_j = p_j / S  =>  d p_m = (dg_m - sum_j dg_j g_j) / S,  S = sum of chosen p
template <class T>
MOEKD_HD inline void topk_gates_backward_row(const T* probs, const int64_t* idx, const T* gates, const T* dgates,
                                             int64_t k, bool normalize, T* dprobs) {
    if (!normalize) {
        for (int64_t j = 0; j < k; ++j) dprobs[idx[j]] += dgates[j];
        return;
    }
    T s = T(0), dot = T(0);
    for (int64_t j = 0; j < k; ++j) {
        s += probs[idx[j]];
        dot += dgates[j] * gates[j];
    }
    for (int64_t j = 0; j < k; ++j) dprobs[idx[j]] += (dgates[j] - dot) / s;
}

/// Gates renormalised AFTER capacity dropping (fairseq's default,
/// normalize_gate_prob_before_dropping = false), one token: a choice j is dropped when it was
/// queued (position[j] >= 0) but got no row (slot[j] < 0). gates[j] = probs[idx[j]] / S for the
/// other choices, S = their sum, and 0 for a dropped one; all 0 when every choice was dropped.
/// A pad token (position -1) keeps all k, so with nothing dropped this is topk_gates_row with
/// normalize, bit for bit. probs: (E); idx, slot, position, gates: (k).
MOEKD_HD inline bool choice_dropped(const int64_t* slot, const int64_t* position, int64_t j) {
    return position[j] >= 0 && slot[j] < 0;
}
template <class T>
MOEKD_HD inline void kept_gates_row(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                                    int64_t k, T* gates) {
    T s = T(0);
    for (int64_t j = 0; j < k; ++j) {
        gates[j] = choice_dropped(slot, position, j) ? T(0) : probs[idx[j]];
        s += gates[j];
    }
    if (s > T(0))
        for (int64_t j = 0; j < k; ++j) gates[j] = gates[j] / s;
}

/// Backward of kept_gates_row: dprobs[idx[m]] += (dg_m - sum_j dg_j g_j) / S over the kept
/// choices m (S = sum of their probs); dropped choices send nothing (dprobs: one row of E, accumulated).
template <class T>
MOEKD_HD inline void kept_gates_backward_row(const T* probs, const int64_t* idx, const int64_t* slot,
                                             const int64_t* position, const T* gates, const T* dgates, int64_t k,
                                             T* dprobs) {
    T s = T(0), dot = T(0);
    for (int64_t j = 0; j < k; ++j) {
        if (choice_dropped(slot, position, j)) continue;
        s += probs[idx[j]];
        dot += dgates[j] * gates[j];
    }
    if (!(s > T(0))) return;
    for (int64_t j = 0; j < k; ++j)
        if (!choice_dropped(slot, position, j)) dprobs[idx[j]] += (dgates[j] - dot) / s;
}

/// The whole router step of one token: probs = softmax(logits) over E, idx = top-k of probs,
/// gates from probs. probs: (E), idx: (k), gates: (k).
template <class T>
MOEKD_HD inline void softmax_topk_row(const T* logits, int64_t E, int64_t k, bool normalize, T* probs, int64_t* idx,
                                      T* gates) {
    softmax_row(logits, probs, E);
    topk_row(probs, E, k, idx);
    topk_gates_row(probs, idx, k, normalize, gates);
}

/// True when every x[0..n) is finite (no NaN, no +-inf).
template <class T>
MOEKD_HD inline bool row_all_finite(const T* x, int64_t n) {
    int64_t i = 0;
#if defined(MOEKD_HOST_SIMD)
    if constexpr (std::is_same_v<T, float>) {  // x - x is 0 when finite, NaN otherwise; NaN stays in the sum
        simd::f32x16 acc = simd::splat(0.0f);
        for (; i + simd::kLanes <= n; i += simd::kLanes) {
            const simd::f32x16 v = simd::load(x + i);
            acc += v - v;
        }
        for (int l = 0; l < simd::kLanes; ++l)
            if (!(acc[l] == 0.0f)) return false;
    }
#endif
    for (; i < n; ++i)
        if (!(x[i] - x[i] == T(0))) return false;  // NaN - NaN and inf - inf are NaN
    return true;
}

/// Expert capacity = ceil(k * tokens * factor / E), computed in double as fairseq / GShard do in
/// Python (so an inexact product such as 1.1 * 100 / 11 may round up by one).
MOEKD_HD inline int64_t expert_capacity(int64_t tokens, int64_t k, double factor, int64_t E) {
    return static_cast<int64_t>(std::ceil(static_cast<double>(k) * static_cast<double>(tokens) * factor /
                                          static_cast<double>(E)));
}

/// Capacity positions, GShard priority order: every first choice (j = 0) in token order, then every
/// second choice, ...; position[t * k + j] = how many assignments of the same expert came before
/// (t, j) in that order (its place in the expert's queue), -1 for pad tokens. counts (E) must be
/// zero on entry and ends as the number of (non-pad) assignments per expert: the histogram of the
/// counting sort. pad may be null (no padding).
MOEKD_HD inline void capacity_positions(const int64_t* idx, const uint8_t* pad, int64_t N, int64_t k, int64_t* counts,
                                        int64_t* position) {
    for (int64_t j = 0; j < k; ++j)
        for (int64_t t = 0; t < N; ++t) {
            if (pad && pad[t]) {
                position[t * k + j] = -1;
                continue;
            }
            position[t * k + j] = counts[idx[t * k + j]]++;
        }
}

/// The same for one expert e alone (a serial reference of what the block of expert e computes in
/// kern::cuda::capacity_scan_kernel): returns the count of e.
MOEKD_HD inline int64_t capacity_positions_of_expert(const int64_t* idx, const uint8_t* pad, int64_t N, int64_t k,
                                                     int64_t e, int64_t* position) {
    int64_t c = 0;
    for (int64_t j = 0; j < k; ++j)
        for (int64_t t = 0; t < N; ++t) {
            if (pad && pad[t]) {
                if (e == 0) position[t * k + j] = -1;
                continue;
            }
            if (idx[t * k + j] == e) position[t * k + j] = c++;
        }
    return c;
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
namespace moekd::kern::cuda {

inline unsigned gating_grid(int64_t n, unsigned block) {
    const int64_t g = (n + block - 1) / block;
    return static_cast<unsigned>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

/// One thread per token: probs (N, E), idx (N, k), gates (N, k) from logits (N, E).
template <class T>
__global__ void softmax_topk_kernel(const T* __restrict__ logits, T* __restrict__ probs, int64_t* __restrict__ idx,
                                    T* __restrict__ gates, int64_t N, int64_t E, int64_t k, bool normalize) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        softmax_topk_row(logits + t * E, E, k, normalize, probs + t * E, idx + t * k, gates + t * k);
}

/// One thread per token: dprobs (N, E) = d gates / d probs applied to dgates (N, k) (overwrites).
template <class T>
__global__ void topk_gates_backward_kernel(const T* __restrict__ probs, const int64_t* __restrict__ idx,
                                           const T* __restrict__ gates, const T* __restrict__ dgates,
                                           T* __restrict__ dprobs, int64_t N, int64_t E, int64_t k, bool normalize) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x) {
        for (int64_t e = 0; e < E; ++e) dprobs[t * E + e] = T(0);
        topk_gates_backward_row(probs + t * E, idx + t * k, gates + t * k, dgates + t * k, k, normalize,
                                dprobs + t * E);
    }
}

/// One thread per token: gates (N, k) renormalised over the choices kept by capacity
/// (kept_gates_row); slot, position: (N, k) of the dispatch plan.
template <class T>
__global__ void kept_gates_kernel(const T* __restrict__ probs, const int64_t* __restrict__ idx,
                                  const int64_t* __restrict__ slot, const int64_t* __restrict__ position,
                                  T* __restrict__ gates, int64_t N, int64_t E, int64_t k) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        kept_gates_row(probs + t * E, idx + t * k, slot + t * k, position + t * k, k, gates + t * k);
}

/// One thread per token: dprobs (N, E) = the backward of kept_gates_kernel applied to dgates (overwrites).
template <class T>
__global__ void kept_gates_backward_kernel(const T* __restrict__ probs, const int64_t* __restrict__ idx,
                                           const int64_t* __restrict__ slot, const int64_t* __restrict__ position,
                                           const T* __restrict__ gates, const T* __restrict__ dgates,
                                           T* __restrict__ dprobs, int64_t N, int64_t E, int64_t k) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x) {
        for (int64_t e = 0; e < E; ++e) dprobs[t * E + e] = T(0);
        kept_gates_backward_row(probs + t * E, idx + t * k, slot + t * k, position + t * k, gates + t * k,
                                dgates + t * k, k, dprobs + t * E);
    }
}

/// Capacity positions by a block-level scan, one block per expert e (grid-stride over experts):
/// the block walks the N * k assignments in GShard priority order (p = j * N + t: every first
/// choice in token order, then every second choice, ...) in tiles of Block; each thread flags
/// whether its assignment is a non-pad one for e, an inclusive prefix sum of the flags in shared
/// memory (Hillis-Steele, every thread at every barrier) gives each flagged assignment its rank in
/// the tile, plus the count of e's assignments in the tiles before. Integer sums only: the CPU's
/// kern::capacity_positions bit for bit, whatever the launch. Pad tokens, and assignments whose
/// expert index is out of [0, E) (the caller's host check reports them), get position -1 (written
/// by the block of expert 0). counts: (E), position: (N * k).
template <int Block>
__global__ void capacity_scan_kernel(const int64_t* __restrict__ idx, const uint8_t* __restrict__ pad,
                                     int64_t* __restrict__ counts, int64_t* __restrict__ position, int64_t N,
                                     int64_t k, int64_t E) {
    __shared__ int scan[Block];
    const int64_t A = N * k;
    const int tid = static_cast<int>(threadIdx.x);
    for (int64_t e = blockIdx.x; e < E; e += gridDim.x) {
        int64_t base = 0;
        for (int64_t p0 = 0; p0 < A; p0 += Block) {
            const int64_t p = p0 + tid;
            int64_t a = -1;
            int flag = 0;
            if (p < A) {
                const int64_t j = p / N, t = p % N;
                a = t * k + j;
                const bool padded = pad && pad[t];
                const int64_t ex = idx[a];
                flag = !padded && ex == e ? 1 : 0;
                if (e == 0 && (padded || ex < 0 || ex >= E)) position[a] = -1;
            }
            scan[tid] = flag;
            __syncthreads();
            for (int off = 1; off < Block; off <<= 1) {
                const int v = tid >= off ? scan[tid - off] : 0;
                __syncthreads();
                scan[tid] += v;
                __syncthreads();
            }
            if (flag) position[a] = base + scan[tid] - 1;
            base += scan[Block - 1];
            __syncthreads();  // scan is refilled by the next tile
        }
        if (tid == 0) counts[e] = base;
    }
}

/// One thread per token: gates (N, k) at given experts (topk_gates_row).
template <class T>
__global__ void topk_gates_kernel(const T* __restrict__ probs, const int64_t* __restrict__ idx, T* __restrict__ gates,
                                  int64_t N, int64_t E, int64_t k, bool normalize) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        topk_gates_row(probs + t * E, idx + t * k, k, normalize, gates + t * k);
}

/// One thread per row: ok[t] = 1 when row t of x (N, E) is finite.
template <class T>
__global__ void rows_finite_kernel(const T* __restrict__ x, int64_t N, int64_t E, uint8_t* __restrict__ ok) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        ok[t] = row_all_finite(x + t * E, E) ? 1 : 0;
}

/// One thread per row: out[t] = logsumexp of row t (row_logsumexp, the CPU's function).
template <class T>
__global__ void row_logsumexp_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t N, int64_t E) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        out[t] = row_logsumexp(x + t * E, E);
}

/// A block per column c (grid-stride): out[c] = sum of x[r, c] over non-pad rows r / real. Each
/// thread sums rows tid, tid + Block, ... in order, then a shared-memory tree in a fixed order;
/// float accumulates in double (as the CPU's mean_router_prob). x: (N, C).
template <class T, int Block>
__global__ void masked_column_mean_kernel(const T* __restrict__ x, const uint8_t* __restrict__ pad,
                                          T* __restrict__ out, int64_t N, int64_t C, int64_t real) {
    using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
    __shared__ Acc part[Block];
    const int tid = static_cast<int>(threadIdx.x);
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        Acc s = Acc(0);
        for (int64_t r = tid; r < N; r += Block)
            if (!pad || !pad[r]) s += static_cast<Acc>(x[r * C + c]);
        part[tid] = s;
        __syncthreads();
        for (int h = Block / 2; h > 0; h >>= 1) {
            if (tid < h) part[tid] += part[tid + h];
            __syncthreads();
        }
        if (tid == 0) out[c] = static_cast<T>(part[0] / static_cast<Acc>(real));
        __syncthreads();  // part is reused by the next column
    }
}

template <class T>
cudaError_t launch_softmax_topk(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                                bool normalize, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, softmax_topk_kernel<T>)(logits, probs, idx, gates, N, E, k, normalize);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_topk_gates_backward(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs,
                                       int64_t N, int64_t E, int64_t k, bool normalize, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, topk_gates_backward_kernel<T>)(probs, idx, gates, dgates, dprobs, N, E, k,
                                                                      normalize);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_kept_gates(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                              T* gates, int64_t N, int64_t E, int64_t k, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, kept_gates_kernel<T>)(probs, idx, slot, position, gates, N, E, k);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_kept_gates_backward(const T* probs, const int64_t* idx, const int64_t* slot,
                                       const int64_t* position, const T* gates, const T* dgates, T* dprobs, int64_t N,
                                       int64_t E, int64_t k, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, kept_gates_backward_kernel<T>)(probs, idx, slot, position, gates, dgates,
                                                                      dprobs, N, E, k);
    return cudaGetLastError();
}
inline cudaError_t launch_capacity_positions(const int64_t* idx, const uint8_t* pad, int64_t* counts,
                                             int64_t* position, int64_t N, int64_t k, int64_t E, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(E, 1), 256, 0, s, capacity_scan_kernel<256>)(idx, pad, counts, position, N, k, E);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_topk_gates(const T* probs, const int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                              bool normalize, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, topk_gates_kernel<T>)(probs, idx, gates, N, E, k, normalize);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_rows_finite(const T* x, int64_t N, int64_t E, uint8_t* ok, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 256), 256, 0, s, rows_finite_kernel<T>)(x, N, E, ok);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_row_logsumexp(const T* x, T* out, int64_t N, int64_t E, cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(N, 128), 128, 0, s, row_logsumexp_kernel<T>)(x, out, N, E);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_masked_column_mean(const T* x, const uint8_t* pad, T* out, int64_t N, int64_t C, int64_t real,
                                      cudaStream_t s = 0) {
    MOEKD_LAUNCH(gating_grid(C, 1), 256, 0, s, masked_column_mean_kernel<T, 256>)(x, pad, out, N, C, real);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
