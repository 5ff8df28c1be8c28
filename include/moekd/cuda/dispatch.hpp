// cuda/dispatch.hpp — moving tokens to their experts and back on the GPU: the dispatch plan (the
// counting sort of moe::make_dispatch_plan: capacity positions = histogram, exclusive prefix sum of
// the kept counts, stable scatter), and the forward / backward of the permute (gather of token
// rows into the expert-sorted buffer) and of the combine (gate-weighted unpermute).
//
//   auto plan = cuda::make_dispatch_plan(r.experts, E, capacity);   // r from cuda::softmax_topk
//   auto xs   = cuda::permute_tokens(x, plan);                      // x: (N, D) -> (S, D)
//   auto ys   = cuda::expert_ffn(xs, plan, w).ys;                   // cuda/experts.hpp
//   auto y    = cuda::combine_tokens(ys, r.gates, plan);            // -> (N, D)
//   auto g    = cuda::combine_tokens_backward(dy, ys, r.gates, plan);   // g.dys (S, D), g.dgates (N, k)
//   auto dx   = cuda::permute_tokens_backward(g_xs, plan);          // (S, D) -> (N, D)
//
// Same MOEKD_HD math as the CPU ops in moe/dispatch.hpp (kern::scatter_assignment, kern::kept_rows,
// kern::exclusive_scan, kern::combine_backward_row); every sum runs in a fixed order, so results
// do not depend on scheduling. No autograd: the moe:: ops (moe/dispatch.hpp) are the API with
// autograd, and on CUDA tensors call these raw launchers through the device table
// (core/backend.hpp; moe::make_dispatch_plan builds its device plan from the same kernels).
// These functions stay as the internal launch layer and its tests. Launchers compiled for float
// and double in kernels/dispatch.cu.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"
#include "allocator.hpp"
#include "copy.hpp"
#include "elementwise.hpp"
#include "error.hpp"
#include "gating.hpp"

namespace moekd::cuda {

/// Where every routed assignment (token t, choice j) goes; the device twin of moe::DispatchPlan.
/// Index tensors live on the GPU; host_offsets is a host copy of offsets (the grouped GEMMs of
/// cuda/experts.hpp need each expert's row block on the host).
struct DeviceDispatchPlan {
    int64_t num_tokens = 0;   // N
    int64_t top_k = 1;        // k
    int64_t num_experts = 1;  // E
    int64_t capacity = -1;    // rows per expert at most; -1: dropless
    Tensor<int64_t> counts;       // (E) assignments per expert before capacity (pad excluded)
    Tensor<int64_t> kept;         // (E) rows per expert after capacity
    Tensor<int64_t> offsets;      // (E + 1) expert e owns rows [offsets[e], offsets[e + 1])
    Tensor<int64_t> position;     // (N, k) queue position in the expert, -1 for pad tokens
    Tensor<int64_t> slot_of;      // (N, k) row in the sorted buffer, -1 if dropped or pad
    Tensor<int64_t> slot_token;   // (S) token of each row
    Tensor<int64_t> slot_choice;  // (S) choice j of each row
    std::vector<int64_t> host_offsets;  // (E + 1) the same as offsets, on the host

    int64_t rows() const { return host_offsets.empty() ? 0 : host_offsets.back(); }  // S
};

namespace detail {

// Raw launchers (kernels/dispatch.cu); they throw moekd::Error if a launch fails.
void dispatch_offsets_raw(const int64_t* counts, int64_t* kept, int64_t* offsets, int64_t E, int64_t capacity);
void scatter_slots_raw(const int64_t* idx, const int64_t* position, const int64_t* offsets, int64_t* slot_of,
                       int64_t* slot_token, int64_t* slot_choice, int64_t N, int64_t k, int64_t capacity);
template <class T>
void permute_raw(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D);
template <class T>
void permute_backward_raw(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k, int64_t D);
template <class T>
void combine_raw(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k, int64_t D);
template <class T>
void combine_backward_raw(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys, T* dgates,
                          int64_t N, int64_t k, int64_t D);

/// The checks of moe::make_dispatch_plan on a host copy of the routing: every expert index of a
/// real token in [0, E), no token routed to one expert twice.
inline void validate_routing(const Tensor<int64_t>& experts, const Tensor<uint8_t>& pad, int64_t E, const char* op) {
    const Tensor<int64_t> ic = to_cpu(experts);
    const Tensor<uint8_t> pc = pad.defined() ? to_cpu(pad) : Tensor<uint8_t>();
    const int64_t N = experts.size(0), k = experts.size(1);
    const int64_t* idx = ic.data();
    const uint8_t* pp = pad.defined() ? pc.data() : nullptr;
    for (int64_t t = 0; t < N; ++t) {
        if (pp && pp[t]) continue;
        for (int64_t j = 0; j < k; ++j) {
            const int64_t e = idx[t * k + j];
            MOEKD_CHECK(e >= 0 && e < E, op, ": expert index ", e, " of token ", t, " (choice ", j,
                        ") is out of range [0, ", E, ")");
            for (int64_t i = 0; i < j; ++i)
                MOEKD_CHECK(idx[t * k + i] != e, op, ": token ", t, " is routed to expert ", e, " twice (choices ", i,
                            " and ", j, ")");
        }
    }
}

inline void require_plan_tokens(int64_t rows, const DeviceDispatchPlan& plan, const char* op, const char* name) {
    MOEKD_CHECK(rows == plan.num_tokens, op, ": ", name, " has ", rows, " rows for a dispatch plan over ",
                plan.num_tokens, " tokens");
}

}  // namespace detail

/// The counting sort on the GPU. experts: (N, k) int64 on the GPU; capacity: rows per expert
/// (-1: dropless); pad: N bytes on the GPU (1 = pad) or undefined. `validate` (default) copies the
/// routing to the host once and checks it as moe::make_dispatch_plan does (an out-of-range index
/// would otherwise be silently dropped). Synchronises once: S (the row count) comes to the host.
inline DeviceDispatchPlan make_dispatch_plan(const Tensor<int64_t>& experts, int64_t num_experts, int64_t capacity,
                                             const Tensor<uint8_t>& pad = Tensor<uint8_t>(), bool validate = true) {
    const char* op = "cuda::make_dispatch_plan";
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(1) >= 1, op, ": experts ",
                experts.defined() ? experts.shape() : Shape{}, " must be (N, k) with k >= 1");
    MOEKD_CHECK(num_experts >= 1, op, ": num_experts must be >= 1, got ", num_experts);
    MOEKD_CHECK(capacity >= -1, op, ": capacity ", capacity, " must be >= 0 (or -1 for dropless)");
    const int64_t N = experts.size(0), k = experts.size(1), E = num_experts;
    if (pad.defined())
        MOEKD_CHECK(pad.numel() == N, op, ": pad mask ", pad.shape(), " has ", pad.numel(), " elements for ", N,
                    " tokens");
    detail::require_device_contiguous(experts, op, "experts");
    if (pad.defined()) detail::require_device_contiguous(pad, op, "pad");
    if (validate) detail::validate_routing(experts, pad, E, op);

    DeviceDispatchPlan plan;
    plan.num_tokens = N;
    plan.top_k = k;
    plan.num_experts = E;
    plan.capacity = capacity;
    CapacityPositions cp = capacity_positions(experts, E, pad);  // histogram + queue positions
    plan.counts = cp.counts;
    plan.position = cp.position;
    plan.kept = Tensor<int64_t>::empty({E}, Device::CUDA);
    plan.offsets = Tensor<int64_t>::empty({E + 1}, Device::CUDA);
    detail::dispatch_offsets_raw(plan.counts.data(), plan.kept.data(), plan.offsets.data(), E, capacity);
    plan.host_offsets.resize(static_cast<size_t>(E + 1));
    MOEKD_CUDA_CHECK(cudaMemcpy(plan.host_offsets.data(), plan.offsets.data(), sizeof(int64_t) * (E + 1),
                                cudaMemcpyDeviceToHost));
    const int64_t S = plan.rows();
    plan.slot_of = Tensor<int64_t>::empty({N, k}, Device::CUDA);
    plan.slot_token = Tensor<int64_t>::empty({S}, Device::CUDA);
    plan.slot_choice = Tensor<int64_t>::empty({S}, Device::CUDA);
    if (N > 0)
        detail::scatter_slots_raw(experts.data(), plan.position.data(), plan.offsets.data(), plan.slot_of.data(),
                                  plan.slot_token.data(), plan.slot_choice.data(), N, k, capacity);
    return plan;
}

/// xs[s] = x[slot_token[s]]: the rows of x grouped by expert.   x: (N, D) -> xs: (S, D)
template <class T>
Tensor<T> permute_tokens(const Tensor<T>& x, const DeviceDispatchPlan& plan) {
    const char* op = "cuda::permute_tokens";
    MOEKD_CHECK(x.defined() && x.dim() == 2, op, ": x ", x.defined() ? x.shape() : Shape{}, " must be (N, D)");
    detail::require_plan_tokens(x.size(0), plan, op, "x");
    detail::require_device_contiguous(x, op, "x");
    const int64_t S = plan.rows(), D = x.size(1);
    Tensor<T> xs = Tensor<T>::empty({S, D}, Device::CUDA);
    if (S * D > 0) detail::permute_raw(x.data(), plan.slot_token.data(), xs.data(), S, D);
    return xs;
}

/// Backward of permute_tokens: dx[t] = sum over kept choices j (in order) of dxs[slot(t, j)], 0 for
/// pad / fully dropped tokens.   dxs: (S, D) -> dx: (N, D)
template <class T>
Tensor<T> permute_tokens_backward(const Tensor<T>& dxs, const DeviceDispatchPlan& plan) {
    const char* op = "cuda::permute_tokens_backward";
    MOEKD_CHECK(dxs.defined() && dxs.dim() == 2 && dxs.size(0) == plan.rows(), op, ": dxs ",
                dxs.defined() ? dxs.shape() : Shape{}, " must be (S, D) with S = ", plan.rows(),
                " rows, as the dispatch plan");
    detail::require_device_contiguous(dxs, op, "dxs");
    const int64_t N = plan.num_tokens, D = dxs.size(1);
    Tensor<T> dx = Tensor<T>::empty({N, D}, Device::CUDA);
    if (N * D > 0) detail::permute_backward_raw(dxs.data(), plan.slot_of.data(), dx.data(), N, plan.top_k, D);
    return dx;
}

/// y[t] = sum over kept choices j (in order) of gates[t, j] * ys[slot(t, j)]; 0 when none is kept.
/// ys: (S, D), gates: (N, k) -> y: (N, D)
template <class T>
Tensor<T> combine_tokens(const Tensor<T>& ys, const Tensor<T>& gates, const DeviceDispatchPlan& plan) {
    const char* op = "cuda::combine_tokens";
    MOEKD_CHECK(ys.defined() && ys.dim() == 2 && ys.size(0) == plan.rows(), op, ": ys ",
                ys.defined() ? ys.shape() : Shape{}, " must be (S, D) with S = ", plan.rows(),
                " rows, as the dispatch plan");
    detail::require_shape(gates, Shape{plan.num_tokens, plan.top_k}, op, "gates");
    detail::require_device_contiguous(ys, op, "ys");
    detail::require_device_contiguous(gates, op, "gates");
    const int64_t N = plan.num_tokens, D = ys.size(1);
    Tensor<T> y = Tensor<T>::empty({N, D}, Device::CUDA);
    if (N * D > 0) detail::combine_raw(ys.data(), plan.slot_of.data(), gates.data(), y.data(), N, plan.top_k, D);
    return y;
}

template <class T>
struct CombineGrads {
    Tensor<T> dys;     // (S, D): dys[slot(t, j)] = gates[t, j] * dy[t]
    Tensor<T> dgates;  // (N, k): <dy[t], ys[slot(t, j)]>, 0 for dropped / pad (accumulated in double)
};

/// Backward of combine_tokens. dy: (N, D), ys: (S, D), gates: (N, k). An output not asked for is
/// left undefined.
template <class T>
CombineGrads<T> combine_tokens_backward(const Tensor<T>& dy, const Tensor<T>& ys, const Tensor<T>& gates,
                                        const DeviceDispatchPlan& plan, bool need_dys = true, bool need_dgates = true) {
    const char* op = "cuda::combine_tokens_backward";
    MOEKD_CHECK(ys.defined() && ys.dim() == 2 && ys.size(0) == plan.rows(), op, ": ys ",
                ys.defined() ? ys.shape() : Shape{}, " must be (S, D) with S = ", plan.rows(),
                " rows, as the dispatch plan");
    const int64_t N = plan.num_tokens, k = plan.top_k, D = ys.size(1);
    detail::require_shape(dy, Shape{N, D}, op, "dy");
    detail::require_shape(gates, Shape{N, k}, op, "gates");
    detail::require_device_contiguous(dy, op, "dy");
    detail::require_device_contiguous(ys, op, "ys");
    detail::require_device_contiguous(gates, op, "gates");
    CombineGrads<T> g;
    if (need_dys) g.dys = Tensor<T>::empty({plan.rows(), D}, Device::CUDA);
    if (need_dgates) g.dgates = Tensor<T>::empty({N, k}, Device::CUDA);
    // every row of dys belongs to exactly one kept assignment, so all of it is written
    if (N > 0 && (need_dys || need_dgates))
        detail::combine_backward_raw(dy.data(), ys.data(), plan.slot_of.data(), gates.data(),
                                     need_dys ? g.dys.data() : static_cast<T*>(nullptr),
                                     need_dgates ? g.dgates.data() : static_cast<T*>(nullptr), N, k, D);
    return g;
}

}  // namespace moekd::cuda
