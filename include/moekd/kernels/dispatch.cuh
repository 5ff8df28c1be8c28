// dispatch.cuh — the token permutation of the Mixture-of-Experts layer, shared by CPU and GPU:
// the counting sort that groups tokens by expert (histogram -> exclusive prefix sum -> stable
// scatter), the row gather / combine that move tokens into and out of the sorted buffer, their
// backward rows, and the per-row bias + activation of the grouped expert FFN.
//
// The histogram and the queue positions are kern::capacity_positions (gating.cuh). Here:
//   kept[e]    = min(count[e], capacity)         (capacity < 0: dropless)
//   offsets    = exclusive_scan(kept)            (expert e owns rows [offsets[e], offsets[e+1]))
//   slot(t, j) = offsets[e] + position(t, j)     when position < capacity, else -1 (dropped)
// so inside an expert's block the rows follow GShard priority order (first choices in token
// order, then second choices). Every sum has a fixed order (choices j = 0, 1, ... of one token),
// so the same input gives the same bits, on either device.
//
// Part 1 (always compiled): MOEKD_HD functions called by moe/dispatch.hpp's CPU loops.
// Part 2 (nvcc, and g++ for the emulated device): __global__ kernels and launchers, reached by the
// moe:: ops through the device table (core/backend.hpp).
//
// Shapes: x: (N, D); xs, ys: (S, D) sorted rows; slot_of, idx, position, gates: (N, k).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "elementwise.cuh"

namespace moekd::kern {

// ---- counting sort -----------------------------------------------------------------------------
/// out[i] = in[0] + ... + in[i-1] (out[0] = 0); returns the total. out must not alias in.
MOEKD_HD inline int64_t exclusive_scan(const int64_t* in, int64_t n, int64_t* out) {
    int64_t s = 0;
    for (int64_t i = 0; i < n; ++i) {
        out[i] = s;
        s += in[i];
    }
    return s;
}

/// Rows expert e keeps: min(count, capacity); capacity < 0 means no limit (dropless).
MOEKD_HD inline int64_t kept_rows(int64_t count, int64_t capacity) {
    return capacity < 0 || count < capacity ? count : capacity;
}

/// The sorted-buffer row of an assignment to expert e at queue position p, or -1 when it is
/// dropped (p >= capacity) or belongs to a pad token (p < 0).
MOEKD_HD inline int64_t assignment_slot(int64_t e, int64_t p, const int64_t* offsets, int64_t capacity) {
    if (p < 0 || (capacity >= 0 && p >= capacity)) return -1;
    return offsets[e] + p;
}

/// The stable scatter for assignment a = t * k + j: slot_of[a] = its row (or -1), and the row
/// records where it came from (slot_token, slot_choice). Independent per assignment.
MOEKD_HD inline void scatter_assignment(int64_t a, int64_t k, const int64_t* idx, const int64_t* position,
                                        const int64_t* offsets, int64_t capacity, int64_t* slot_of,
                                        int64_t* slot_token, int64_t* slot_choice) {
    const int64_t s = assignment_slot(idx[a], position[a], offsets, capacity);
    slot_of[a] = s;
    if (s >= 0) {
        slot_token[s] = a / k;
        slot_choice[s] = a % k;
    }
}

// ---- rows --------------------------------------------------------------------------------------
/// dst[0..D) = src[0..D)
template <class T>
MOEKD_HD inline void copy_row(const T* src, int64_t D, T* dst) {
    for (int64_t d = 0; d < D; ++d) dst[d] = src[d];
}

/// y = sum over kept j (in order j = 0, 1, ...) of gates[j] * ys[slots[j]]; zero when none is kept.
/// ys: (S, D) sorted rows; slots, gates: (k) of one token; y: (D).
template <class T>
MOEKD_HD inline void combine_row(const T* ys, const int64_t* slots, const T* gates, int64_t k, int64_t D, T* y) {
    bool first = true;
    for (int64_t j = 0; j < k; ++j) {
        if (slots[j] < 0) continue;
        const T g = gates[j];
        const T* r = ys + slots[j] * D;
        if (first)
            for (int64_t d = 0; d < D; ++d) y[d] = g * r[d];
        else
            for (int64_t d = 0; d < D; ++d) y[d] += g * r[d];
        first = false;
    }
    if (first)
        for (int64_t d = 0; d < D; ++d) y[d] = T(0);
}

/// Backward of combine_row for one token: dys[slots[j]] = gates[j] * dy (each kept row has exactly
/// one writer), dgates[j] = <dy, ys[slots[j]]> accumulated in Acc (0 for a dropped choice).
template <class T, class Acc = T>
MOEKD_HD inline void combine_backward_row(const T* dy, const T* ys, const int64_t* slots, const T* gates, int64_t k,
                                          int64_t D, T* dys, T* dgates) {
    for (int64_t j = 0; j < k; ++j) {
        if (slots[j] < 0) {
            if (dgates) dgates[j] = T(0);
            continue;
        }
        const T* r = ys + slots[j] * D;
        if (dys) {
            T* o = dys + slots[j] * D;
            const T g = gates[j];
            for (int64_t d = 0; d < D; ++d) o[d] = g * dy[d];
        }
        if (dgates) {  // <dy, ys[slot]> in 8 interleaved partial sums (they vectorise), added in order
            constexpr int L = 8;
            Acc part[L] = {};
            int64_t d = 0;
            for (; d + L <= D; d += L)
                for (int l = 0; l < L; ++l) part[l] += static_cast<Acc>(dy[d + l]) * static_cast<Acc>(r[d + l]);
            Acc s = Acc(0);
            for (int l = 0; l < L; ++l) s += part[l];
            for (; d < D; ++d) s += static_cast<Acc>(dy[d]) * static_cast<Acc>(r[d]);
            dgates[j] = static_cast<T>(s);
        }
    }
}

/// Backward of the permute for one token: dx = sum over kept j (in order) of dxs[slots[j]].
template <class T>
MOEKD_HD inline void permute_backward_row(const T* dxs, const int64_t* slots, int64_t k, int64_t D, T* dx) {
    bool first = true;
    for (int64_t j = 0; j < k; ++j) {
        if (slots[j] < 0) continue;
        const T* r = dxs + slots[j] * D;
        if (first)
            for (int64_t d = 0; d < D; ++d) dx[d] = r[d];
        else
            for (int64_t d = 0; d < D; ++d) dx[d] += r[d];
        first = false;
    }
    if (first)
        for (int64_t d = 0; d < D; ++d) dx[d] = T(0);
}

// ---- expert FFN rows -----------------------------------------------------------------------------
/// One hidden row of an expert: h[f] += b[f] (b may be null); a[f] = Act::fwd(h[f]). a may alias h
/// (then the pre-activation is not kept: fine for ReLU, whose backward reads a > 0).
template <class Act, class T>
MOEKD_HD inline void bias_act_row(T* h, const T* b, int64_t F, T* a) {
    for (int64_t f = 0; f < F; ++f) {
        const T v = b ? h[f] + b[f] : h[f];
        h[f] = v;
        a[f] = Act::fwd(v);
    }
}

/// da[f] := Act::bwd(h[f], a[f], da[f]) in place (the gradient wrt the pre-activation), and
/// db[f] += that value when db is given (the bias gradient, a column sum in row order).
template <class Act, class T, class Acc>
MOEKD_HD inline void act_backward_row(const T* h, const T* a, T* da, int64_t F, Acc* db) {
    for (int64_t f = 0; f < F; ++f) {
        const T g = Act::bwd(h[f], a[f], da[f]);
        da[f] = g;
        if (db) db[f] += static_cast<Acc>(g);
    }
}

}  // namespace moekd::kern

#if defined(MOEKD_CUDA_KERNELS)
namespace moekd::kern::cuda {

inline unsigned dispatch_grid(int64_t n, unsigned block) {
    const int64_t g = (n + block - 1) / block;
    return static_cast<unsigned>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

/// One thread: kept = min(counts, capacity), offsets = exclusive_scan(kept) (E + 1 entries).
template <int Unused = 0>
__global__ void dispatch_offsets_kernel(const int64_t* __restrict__ counts, int64_t* __restrict__ kept,
                                        int64_t* __restrict__ offsets, int64_t E, int64_t capacity) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    for (int64_t e = 0; e < E; ++e) kept[e] = kept_rows(counts[e], capacity);
    offsets[E] = exclusive_scan(kept, E, offsets);
}

/// One thread per assignment: the stable scatter of the counting sort; idx_copy (A, may be null)
/// gets a copy of idx (the plan keeps its own routing, as the CPU plan's expert_idx).
template <int Unused = 0>
__global__ void scatter_slots_kernel(const int64_t* __restrict__ idx, const int64_t* __restrict__ position,
                                     const int64_t* __restrict__ offsets, int64_t* __restrict__ slot_of,
                                     int64_t* __restrict__ slot_token, int64_t* __restrict__ slot_choice,
                                     int64_t* __restrict__ idx_copy, int64_t A, int64_t k, int64_t capacity) {
    for (int64_t a = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; a < A; a += int64_t(gridDim.x) * blockDim.x) {
        scatter_assignment(a, k, idx, position, offsets, capacity, slot_of, slot_token, slot_choice);
        if (idx_copy) idx_copy[a] = idx[a];
    }
}

/// xs[s, d] = x[slot_token[s], d]; one thread per element.
template <class T>
__global__ void permute_kernel(const T* __restrict__ x, const int64_t* __restrict__ slot_token, T* __restrict__ xs,
                               int64_t S, int64_t D) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < S * D; i += int64_t(gridDim.x) * blockDim.x)
        xs[i] = x[slot_token[i / D] * D + i % D];
}

/// dx[t, d] = sum_j dxs[slot_of[t, j], d] in order j; one thread per element.
template <class T>
__global__ void permute_backward_kernel(const T* __restrict__ dxs, const int64_t* __restrict__ slot_of,
                                        T* __restrict__ dx, int64_t N, int64_t k, int64_t D) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * D; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / D, d = i % D;
        T s = T(0);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t r = slot_of[t * k + j];
            if (r >= 0) s += dxs[r * D + d];
        }
        dx[i] = s;
    }
}

/// y[t, d] = sum_j gates[t, j] * ys[slot_of[t, j], d] in order j; one thread per element.
template <class T>
__global__ void combine_kernel(const T* __restrict__ ys, const int64_t* __restrict__ slot_of,
                               const T* __restrict__ gates, T* __restrict__ y, int64_t N, int64_t k, int64_t D) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * D; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / D, d = i % D;
        T s = T(0);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t r = slot_of[t * k + j];
            if (r >= 0) s += gates[t * k + j] * ys[r * D + d];
        }
        y[i] = s;
    }
}

/// dys[slot_of[t, j], d] = gates[t, j] * dy[t, d]; one thread per (assignment, d).
template <class T>
__global__ void combine_backward_rows_kernel(const T* __restrict__ dy, const int64_t* __restrict__ slot_of,
                                             const T* __restrict__ gates, T* __restrict__ dys, int64_t N, int64_t k,
                                             int64_t D) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * k * D;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t a = i / D, d = i % D;
        const int64_t r = slot_of[a];
        if (r >= 0) dys[r * D + d] = gates[a] * dy[(a / k) * D + d];
    }
}

/// dgates[t, j] = <dy[t], ys[slot_of[t, j]]> (8 interleaved partial sums in a fixed order, in double
/// as the CPU op does); one thread per assignment, through combine_backward_row with k = 1.
template <class T>
__global__ void combine_backward_gates_kernel(const T* __restrict__ dy, const T* __restrict__ ys,
                                              const int64_t* __restrict__ slot_of, T* __restrict__ dgates, int64_t N,
                                              int64_t k, int64_t D) {
    for (int64_t a = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; a < N * k; a += int64_t(gridDim.x) * blockDim.x)
        combine_backward_row<T, double>(dy + (a / k) * D, ys, slot_of + a, static_cast<const T*>(nullptr), 1, D,
                                        static_cast<T*>(nullptr), dgates + a);
}

inline cudaError_t launch_dispatch_offsets(const int64_t* counts, int64_t* kept, int64_t* offsets, int64_t E,
                                           int64_t capacity, cudaStream_t s = 0) {
    MOEKD_LAUNCH(1, 1, 0, s, dispatch_offsets_kernel<>)(counts, kept, offsets, E, capacity);
    return cudaGetLastError();
}
/// The stable scatter of the N * k assignments; idx_copy (N * k, may be null) gets a copy of idx.
inline cudaError_t launch_scatter_slots(const int64_t* idx, const int64_t* position, const int64_t* offsets,
                                        int64_t* slot_of, int64_t* slot_token, int64_t* slot_choice,
                                        int64_t* idx_copy, int64_t N, int64_t k, int64_t capacity,
                                        cudaStream_t s = 0) {
    MOEKD_LAUNCH(dispatch_grid(N * k, 256), 256, 0, s, scatter_slots_kernel<>)(idx, position, offsets, slot_of, slot_token,
                                                                     slot_choice, idx_copy, N * k, k, capacity);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_permute(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D, cudaStream_t s = 0) {
    MOEKD_LAUNCH(dispatch_grid(S * D, 256), 256, 0, s, permute_kernel<T>)(x, slot_token, xs, S, D);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_permute_backward(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k, int64_t D,
                                    cudaStream_t s = 0) {
    MOEKD_LAUNCH(dispatch_grid(N * D, 256), 256, 0, s, permute_backward_kernel<T>)(dxs, slot_of, dx, N, k, D);
    return cudaGetLastError();
}
template <class T>
cudaError_t launch_combine(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k, int64_t D,
                           cudaStream_t s = 0) {
    MOEKD_LAUNCH(dispatch_grid(N * D, 256), 256, 0, s, combine_kernel<T>)(ys, slot_of, gates, y, N, k, D);
    return cudaGetLastError();
}
/// dys must be zeroed by the caller first when some assignments are dropped (their rows are not
/// written; a dropped row does not exist in the buffer, so this only matters for padding rows).
template <class T>
cudaError_t launch_combine_backward(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys,
                                    T* dgates, int64_t N, int64_t k, int64_t D, cudaStream_t s = 0) {
    if (dys) MOEKD_LAUNCH(dispatch_grid(N * k * D, 256), 256, 0, s, combine_backward_rows_kernel<T>)(dy, slot_of, gates, dys, N, k, D);
    if (dgates)
        MOEKD_LAUNCH(dispatch_grid(N * k, 128), 128, 0, s, combine_backward_gates_kernel<T>)(dy, ys, slot_of, dgates, N, k, D);
    return cudaGetLastError();
}

}  // namespace moekd::kern::cuda
#endif
