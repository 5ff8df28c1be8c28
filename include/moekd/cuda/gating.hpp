// cuda/gating.hpp — the Mixture-of-Experts router on the GPU: fused softmax over E + top-k + gates
// (kern::softmax_topk_row, the function moe::softmax_topk runs on the CPU), the backward of the
// gates and of the softmax, and the capacity positions (the histogram pass of the dispatch
// counting sort: each expert's queue in GShard priority order, by a block-level scan per expert),
// the NaN / inf check of the logits (kern::row_all_finite, reported as moe::check_router_logits;
// pad tokens are not checked), and the gates renormalised after capacity dropping (fairseq's
// default order: kern::kept_gates_row, as moe::kept_gates).
//
//   auto r  = cuda::softmax_topk(logits, 2, true);            // logits: (N, E) on the GPU
//   auto dl = cuda::router_backward(r, dgates, true);          // dgates: (N, k) -> dlogits (N, E)
//   auto cp = cuda::capacity_positions(r.experts, E);          // counts (E), position (N, k)
//
// No autograd: explicit forward / backward entries over the raw launchers. The moe:: ops
// (moe/router.hpp) are the API with autograd: on CUDA tensors they call the same raw launchers
// through the device table (core/backend.hpp's MoE entries, filled by install_moe_ops in
// kernels/gating.cu). These functions stay as the internal launch layer and its tests
// (tests/gpu/moe_kernels_gpu_test.cpp). The launchers are compiled for float and double in
// kernels/gating.cu. Arguments are checked
// (shapes first, then device and contiguity) before any CUDA call, so bad input fails with a
// moekd::Error naming the argument even on a machine without a GPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "allocator.hpp"
#include "elementwise.hpp"
#include "error.hpp"
#include "../kernels/gating.cuh"

namespace moekd::cuda {

/// The router's decision for N tokens, on the GPU.
template <class T>
struct DeviceRouting {
    Tensor<T> probs;          // (N, E) softmax of the logits
    Tensor<T> gates;          // (N, k) chosen probabilities (renormalised over k when asked)
    Tensor<int64_t> experts;  // (N, k) chosen experts, best first (ties to the lower index)
};

/// counts (E): assignments per expert (pad tokens excluded); position (N, k): each assignment's
/// place in its expert's queue (first choices in token order, then second choices ...), -1 for pad.
struct CapacityPositions {
    Tensor<int64_t> counts;
    Tensor<int64_t> position;
};

namespace detail {

// Raw launchers (kernels/gating.cu, float and double); they throw moekd::Error if a launch fails.
template <class T>
void softmax_topk_raw(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                      bool normalize);
template <class T>
void topk_gates_backward_raw(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs,
                             int64_t N, int64_t E, int64_t k, bool normalize);
template <class T>
void softmax_backward_raw(const T* probs, const T* dprobs, T* dlogits, int64_t N, int64_t E);
void capacity_positions_raw(const int64_t* idx, const uint8_t* pad, int64_t* counts, int64_t* position, int64_t N,
                            int64_t k, int64_t E);
template <class T>
void kept_gates_raw(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position, T* gates,
                    int64_t N, int64_t E, int64_t k);
template <class T>
void kept_gates_backward_raw(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                             const T* gates, const T* dgates, T* dprobs, int64_t N, int64_t E, int64_t k);
/// The first row of x (N, E) with a NaN or inf (kern::row_all_finite), or N; one sync.
template <class T>
int64_t first_nonfinite_row_raw(const T* x, int64_t N, int64_t E);

}  // namespace detail

/// Fused router step: probs = softmax(logits) over E, experts = top-k of probs, gates = the chosen
/// probs (divided by their sum when `normalize`, GShard top-2).  logits: (N, E), contiguous, GPU.
template <class T>
DeviceRouting<T> softmax_topk(const Tensor<T>& logits, int64_t k, bool normalize) {
    const char* op = "cuda::softmax_topk";
    MOEKD_CHECK(logits.defined() && logits.dim() == 2 && logits.size(1) >= 1, op, ": logits ",
                logits.defined() ? logits.shape() : Shape{}, " must be (N, E) with E >= 1");
    const int64_t N = logits.size(0), E = logits.size(1);
    MOEKD_CHECK(k >= 1 && k <= E, op, ": top_k = ", k, " must be in [1, E = ", E, "] for logits ", logits.shape());
    detail::require_device_contiguous(logits, op, "logits");
    DeviceRouting<T> r;
    r.probs = Tensor<T>::empty({N, E}, Device::CUDA);
    r.gates = Tensor<T>::empty({N, k}, Device::CUDA);
    r.experts = Tensor<int64_t>::empty({N, k}, Device::CUDA);
    if (N > 0)
        detail::softmax_topk_raw(logits.data(), r.probs.data(), r.experts.data(), r.gates.data(), N, E, k, normalize);
    return r;
}

/// dprobs (N, E) = d gates / d probs applied to dgates (N, k) (zero off the chosen experts).
/// probs: (N, E), experts, gates, dgates: (N, k), as softmax_topk returned them.
template <class T>
Tensor<T> topk_gates_backward(const Tensor<T>& probs, const Tensor<int64_t>& experts, const Tensor<T>& gates,
                              const Tensor<T>& dgates, bool normalize) {
    const char* op = "cuda::topk_gates_backward";
    MOEKD_CHECK(probs.defined() && probs.dim() == 2, op, ": probs ", probs.defined() ? probs.shape() : Shape{},
                " must be (N, E)");
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(0) == probs.size(0) && experts.size(1) >= 1 &&
                    experts.size(1) <= probs.size(1),
                op, ": experts ", experts.defined() ? experts.shape() : Shape{}, " must be (N, k), k <= E, for probs ",
                probs.shape());
    const int64_t N = probs.size(0), E = probs.size(1), k = experts.size(1);
    detail::require_shape(gates, Shape{N, k}, op, "gates");
    detail::require_shape(dgates, Shape{N, k}, op, "dgates");
    detail::require_device_contiguous(probs, op, "probs");
    detail::require_device_contiguous(experts, op, "experts");
    detail::require_device_contiguous(gates, op, "gates");
    detail::require_device_contiguous(dgates, op, "dgates");
    Tensor<T> dp = Tensor<T>::empty({N, E}, Device::CUDA);
    if (N > 0)
        detail::topk_gates_backward_raw(probs.data(), experts.data(), gates.data(), dgates.data(), dp.data(), N, E, k,
                                        normalize);
    return dp;
}

/// dlogits = the softmax backward of dprobs: p * (dp - <dp, p>) per row.  probs, dprobs: (N, E).
template <class T>
Tensor<T> softmax_backward(const Tensor<T>& probs, const Tensor<T>& dprobs) {
    const char* op = "cuda::softmax_backward";
    MOEKD_CHECK(probs.defined() && probs.dim() == 2, op, ": probs ", probs.defined() ? probs.shape() : Shape{},
                " must be (N, E)");
    detail::require_shape(dprobs, probs.shape(), op, "dprobs");
    detail::require_device_contiguous(probs, op, "probs");
    detail::require_device_contiguous(dprobs, op, "dprobs");
    Tensor<T> dl = Tensor<T>::empty(probs.shape(), Device::CUDA);
    if (probs.numel() > 0) detail::softmax_backward_raw(probs.data(), dprobs.data(), dl.data(), probs.size(0), probs.size(1));
    return dl;
}

/// The whole router backward: dlogits (N, E) from dgates (N, k), plus dprobs_extra (N, E) when
/// given (the gradient a balance loss sends to the probabilities).
template <class T>
Tensor<T> router_backward(const DeviceRouting<T>& r, const Tensor<T>& dgates, bool normalize,
                          const Tensor<T>& dprobs_extra = Tensor<T>()) {
    Tensor<T> dp = topk_gates_backward(r.probs, r.experts, r.gates, dgates, normalize);
    if (dprobs_extra.defined()) {
        detail::require_shape(dprobs_extra, r.probs.shape(), "cuda::router_backward", "dprobs_extra");
        dp = binary<kern::Add>(dp, dprobs_extra);
    }
    return softmax_backward(r.probs, dp);
}

/// Gates renormalised after capacity dropping (fairseq's default order,
/// moe::RouterConfig::normalize_gate_prob_before_dropping = false), as moe::kept_gates on the
/// CPU (kern::kept_gates_row): the kept choices of each token renormalised over themselves, 0 for
/// a dropped one. probs: (N, E), experts: (N, k) as routed; slot_of, position: (N, k) of the
/// dispatch plan built from those experts (cuda::make_dispatch_plan). All on the GPU, contiguous.
template <class T>
Tensor<T> kept_gates(const Tensor<T>& probs, const Tensor<int64_t>& experts, const Tensor<int64_t>& slot_of,
                     const Tensor<int64_t>& position) {
    const char* op = "cuda::kept_gates";
    MOEKD_CHECK(probs.defined() && probs.dim() == 2, op, ": probs ", probs.defined() ? probs.shape() : Shape{},
                " must be (N, E)");
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(0) == probs.size(0) && experts.size(1) >= 1 &&
                    experts.size(1) <= probs.size(1),
                op, ": experts ", experts.defined() ? experts.shape() : Shape{}, " must be (N, k), k <= E, for probs ",
                probs.shape());
    const int64_t N = probs.size(0), E = probs.size(1), k = experts.size(1);
    detail::require_shape(slot_of, Shape{N, k}, op, "slot_of");
    detail::require_shape(position, Shape{N, k}, op, "position");
    detail::require_device_contiguous(probs, op, "probs");
    detail::require_device_contiguous(experts, op, "experts");
    detail::require_device_contiguous(slot_of, op, "slot_of");
    detail::require_device_contiguous(position, op, "position");
    Tensor<T> g = Tensor<T>::empty({N, k}, Device::CUDA);
    if (N > 0)
        detail::kept_gates_raw(probs.data(), experts.data(), slot_of.data(), position.data(), g.data(), N, E, k);
    return g;
}

/// dprobs (N, E) = the backward of kept_gates applied to dgates (N, k) (zero off the kept choices).
template <class T>
Tensor<T> kept_gates_backward(const Tensor<T>& probs, const Tensor<int64_t>& experts, const Tensor<int64_t>& slot_of,
                              const Tensor<int64_t>& position, const Tensor<T>& gates, const Tensor<T>& dgates) {
    const char* op = "cuda::kept_gates_backward";
    MOEKD_CHECK(probs.defined() && probs.dim() == 2, op, ": probs ", probs.defined() ? probs.shape() : Shape{},
                " must be (N, E)");
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(0) == probs.size(0) && experts.size(1) >= 1 &&
                    experts.size(1) <= probs.size(1),
                op, ": experts ", experts.defined() ? experts.shape() : Shape{}, " must be (N, k), k <= E, for probs ",
                probs.shape());
    const int64_t N = probs.size(0), E = probs.size(1), k = experts.size(1);
    detail::require_shape(slot_of, Shape{N, k}, op, "slot_of");
    detail::require_shape(position, Shape{N, k}, op, "position");
    detail::require_shape(gates, Shape{N, k}, op, "gates");
    detail::require_shape(dgates, Shape{N, k}, op, "dgates");
    detail::require_device_contiguous(probs, op, "probs");
    detail::require_device_contiguous(experts, op, "experts");
    detail::require_device_contiguous(slot_of, op, "slot_of");
    detail::require_device_contiguous(position, op, "position");
    detail::require_device_contiguous(gates, op, "gates");
    detail::require_device_contiguous(dgates, op, "dgates");
    Tensor<T> dp = Tensor<T>::empty({N, E}, Device::CUDA);
    if (N > 0)
        detail::kept_gates_backward_raw(probs.data(), experts.data(), slot_of.data(), position.data(), gates.data(),
                                        dgates.data(), dp.data(), N, E, k);
    return dp;
}

/// Throws a moekd::Error naming `layer` when a router logit of a routed token is NaN or inf, with
/// the first offending token and expert, as moe::check_router_logits does on the CPU; pad tokens
/// are not routed and not an error: returns true when some pad token's logits are NaN or inf (as
/// the CPU's; the caller zeroes those rows of the router input, as moe::checked_router_logits).
/// logits: (N, E) on the GPU; pad: N bytes on the GPU or undefined. One synchronisation when every
/// logit is finite; when the first non-finite row is a pad token, the rest of the logits and the
/// mask come to the host and are scanned there.
template <class T>
bool check_router_logits(const Tensor<T>& logits, const std::string& layer,
                         const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    const char* op = "cuda::check_router_logits";
    MOEKD_CHECK(logits.defined() && logits.dim() == 2, op, ": logits ", logits.defined() ? logits.shape() : Shape{},
                " must be (N, E)");
    if (pad.defined())
        MOEKD_CHECK(pad.numel() == logits.size(0), op, ": pad mask ", pad.shape(), " has ", pad.numel(),
                    " elements for ", logits.size(0), " tokens");
    detail::require_device_contiguous(logits, op, "logits");
    if (pad.defined()) detail::require_device_contiguous(pad, op, "pad");
    const int64_t N = logits.size(0), E = logits.size(1);
    if (N == 0 || E == 0) return false;
    int64_t t = detail::first_nonfinite_row_raw(logits.data(), N, E);
    if (t >= N) return false;
    std::vector<T> row(static_cast<size_t>(E));
    uint8_t is_pad = 0;
    if (pad.defined()) MOEKD_CUDA_CHECK(cudaMemcpy(&is_pad, pad.data() + t, 1, cudaMemcpyDeviceToHost));
    if (is_pad) {  // the first non-finite row is a pad token: find the first routed one on the host
        std::vector<T> all(static_cast<size_t>((N - t) * E));
        std::vector<uint8_t> mask(static_cast<size_t>(N - t));
        MOEKD_CUDA_CHECK(cudaMemcpy(all.data(), logits.data() + t * E, sizeof(T) * all.size(), cudaMemcpyDeviceToHost));
        MOEKD_CUDA_CHECK(cudaMemcpy(mask.data(), pad.data() + t, mask.size(), cudaMemcpyDeviceToHost));
        int64_t u = 0;
        while (u < N - t && (mask[u] || kern::row_all_finite(all.data() + u * E, E))) ++u;
        if (u == N - t) return true;
        std::copy_n(all.data() + u * E, E, row.data());
        t += u;
    } else {
        MOEKD_CUDA_CHECK(cudaMemcpy(row.data(), logits.data() + t * E, sizeof(T) * E, cudaMemcpyDeviceToHost));
    }
    int64_t e = 0;
    while (e < E && row[e] - row[e] == T(0)) ++e;
    throw Error(msg(layer, ": router logits are not finite: token ", t, " of ", N, " has logit ", row[e],
                    " for expert ", e, " of ", E,
                    ". HINT: the layer input or the gate weights hold NaN/inf (diverged training? lower the ",
                    "learning rate, add the router z-loss, or check the input)"));
}

/// Capacity positions and per-expert counts of a routing (a block per expert scans the assignments
/// in priority order in tiles, with a shared-memory prefix sum of the tile's matches: the CPU's
/// kern::capacity_positions, bit for bit; kern::cuda::capacity_scan_kernel).
/// experts: (N, k) int64 in [0, num_experts) (not checked here: make_dispatch_plan checks);
/// pad: N bytes (1 = pad token) or undefined.
inline CapacityPositions capacity_positions(const Tensor<int64_t>& experts, int64_t num_experts,
                                            const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    const char* op = "cuda::capacity_positions";
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(1) >= 1, op, ": experts ",
                experts.defined() ? experts.shape() : Shape{}, " must be (N, k) with k >= 1");
    MOEKD_CHECK(num_experts >= 1, op, ": num_experts must be >= 1, got ", num_experts);
    const int64_t N = experts.size(0), k = experts.size(1);
    if (pad.defined())
        MOEKD_CHECK(pad.numel() == N, op, ": pad mask ", pad.shape(), " has ", pad.numel(), " elements for ", N,
                    " tokens");
    detail::require_device_contiguous(experts, op, "experts");
    if (pad.defined()) detail::require_device_contiguous(pad, op, "pad");
    CapacityPositions c{Tensor<int64_t>::empty({num_experts}, Device::CUDA), Tensor<int64_t>::empty({N, k}, Device::CUDA)};
    detail::capacity_positions_raw(experts.data(), pad.defined() ? pad.data() : nullptr, c.counts.data(),
                                   c.position.data(), N, k, num_experts);
    return c;
}

}  // namespace moekd::cuda
