// plan.hpp — the dispatch plan: where every routed assignment (token t, choice j) of a top-k
// routing goes. A counting sort of the assignments by expert, with capacity dropping in GShard
// priority order (choice 0 of every token before choice 1, tokens in order within a choice):
//   counts (E)      assignments per expert, before capacity     (kern::capacity_positions)
//   kept / offsets  rows per expert after capacity, and where each expert's row block starts
//   slot_of (N k)   the row of each assignment in the sorted buffer, -1 if dropped or pad
//   slot_token (S)  the token of each row (permute_tokens' gather), slot_choice its choice j
// The per-assignment math is kernels/dispatch.cuh, shared with the device kernels.
//
// From device routing the plan is computed on the device (capacity positions by a block-level
// scan per expert, kept counts and offsets, the stable scatter), and its index arrays are
// mirrored to the host in one copy: the one synchronisation that brings the row count S over
// (load_stats, the host checks and the per-expert GEMM loop read the mirror).
#pragma once

#include <memory>
#include <vector>

#include "../core/tensor.hpp"
#include "../kernels/dispatch.cuh"
#include "../kernels/gating.cuh"
#include "../ops/index.hpp"
#include "device.hpp"

namespace moekd::moe {

/// Where every routed assignment (token t, choice j) goes. Built by make_dispatch_plan; shared
/// (read-only) by the ops of one forward and their backward closures.
struct DispatchPlan {
    int64_t num_tokens = 0;   // N (pad tokens included)
    int64_t top_k = 1;        // k
    int64_t num_experts = 1;  // E
    int64_t capacity = -1;    // rows per expert at most; -1: dropless
    int64_t num_pad = 0;      // pad tokens (never routed)
    std::vector<int64_t> counts;       // (E) assignments per expert, before capacity (pad excluded)
    std::vector<int64_t> kept;         // (E) rows per expert after capacity
    std::vector<int64_t> offsets;      // (E + 1) expert e owns rows [offsets[e], offsets[e + 1])
    std::vector<int64_t> position;     // (N * k) queue position in the expert, -1 for pad tokens
    std::vector<int64_t> slot_of;      // (N * k) row in the sorted buffer, -1 if dropped or pad
    std::vector<int64_t> slot_token;   // (S) token of each row
    std::vector<int64_t> slot_choice;  // (S) choice j of each row
    std::vector<int64_t> expert_idx;   // (N * k) the routing it was built from
    // Built from device routing (device == CUDA): the same index arrays on the device too, views
    // into one int64 buffer at these element offsets (the host vectors above are their mirror).
    Device device = Device::CPU;
    Tensor<int64_t> dev_buf;
    int64_t dev_expert_idx = 0, dev_position = 0, dev_slot_of = 0, dev_slot_token = 0;
    const int64_t* dev(int64_t off) const { return dev_buf.data() + off; }

    int64_t rows() const { return offsets.empty() ? 0 : offsets.back(); }  // S
    int64_t routed() const { return (num_tokens - num_pad) * top_k; }      // assignments of real tokens
    int64_t dropped() const { return routed() - rows(); }
};
using PlanPtr = std::shared_ptr<const DispatchPlan>;

namespace detail {
/// make_dispatch_plan's checks of a host routing idx (N * k), pad pp (N bytes or null): every
/// expert index of a real token in [0, E), no token routed to one expert twice. Returns the
/// number of pad tokens.
inline int64_t check_routing(const int64_t* idx, const uint8_t* pp, int64_t N, int64_t k, int64_t E) {
    for (int64_t a = 0; a < N * k; ++a)
        if ((!pp || !pp[a / k]) && (idx[a] < 0 || idx[a] >= E))
            throw Error(msg("make_dispatch_plan: expert index ", idx[a], " of token ", a / k, " (choice ", a % k,
                            ") is out of range [0, ", E, ")"));
    int64_t num_pad = 0;
    for (int64_t t = 0; pp && t < N; ++t) num_pad += pp[t] != 0;
    for (int64_t t = 0; t < N; ++t) {
        if (pp && pp[t]) continue;
        for (int64_t j = 1; j < k; ++j)
            for (int64_t i = 0; i < j; ++i)
                MOEKD_CHECK(idx[t * k + i] != idx[t * k + j], "make_dispatch_plan: token ", t, " is routed to expert ",
                            idx[t * k + j], " twice (choices ", i, " and ", j, ")");
    }
    return num_pad;
}

/// The plan of device routing, computed on the device (the counting sort's three passes through
/// the device table), then mirrored to the host in one copy and checked there as on the CPU
/// (the kernels leave out-of-range indices out, so bad routing is reported, never read out of
/// bounds). experts: (N, k) contiguous on the device; pad: N bytes on either device, or undefined.
inline PlanPtr make_dispatch_plan_device(const Tensor<int64_t>& experts, int64_t E, int64_t capacity,
                                         const Tensor<uint8_t>& pad) {
    const char* op = "make_dispatch_plan";
    const int64_t N = experts.size(0), k = experts.size(1), A = N * k;
    MOEKD_CHECK(experts.is_contiguous(), op, ": experts ", experts.shape(), " on ", experts.device(),
                " must be contiguous");
    Tensor<uint8_t> pad_host, pad_dev;
    if (pad.defined()) {
        MOEKD_CHECK(pad.numel() == N, "make_dispatch_plan: pad mask ", pad.shape(), " has ", pad.numel(),
                    " elements for ", N, " tokens");
        pad_host = host_copy(pad, op, "pad mask");
        pad_dev = on_device(pad, experts.device(), op, "pad mask");
    }
    DeviceOps<float>& o = dev_ops<float>();  // integer entries: the same in both tables
    const Shape& sh = experts.shape();
    // one buffer: counts (E), kept (E), offsets (E + 1), expert_idx, position, slot_of, slot_token,
    // slot_choice (N * k each; slot_token / slot_choice use the first S)
    const int64_t o_counts = 0, o_kept = E, o_offsets = 2 * E, o_idx = 3 * E + 1, o_pos = o_idx + A,
                  o_slot = o_pos + A, o_tok = o_slot + A, o_choice = o_tok + A;
    Tensor<int64_t> buf = Tensor<int64_t>::empty({o_choice + A}, experts.device());
    int64_t* b = buf.data();
    const uint8_t* pd = pad.defined() ? pad_dev.data() : nullptr;
    moekd::detail::device_entry(o.moe_capacity_positions, op, sh)(experts.data(), pd, b + o_counts, b + o_pos, N, k, E);
    moekd::detail::device_entry(o.moe_dispatch_offsets, op, sh)(b + o_counts, b + o_kept, b + o_offsets, E, capacity);
    moekd::detail::device_entry(o.moe_scatter_slots, op, sh)(experts.data(), b + o_pos, b + o_offsets, b + o_slot,
                                                             b + o_tok, b + o_choice, b + o_idx, N, k, capacity);
    const Tensor<int64_t> h = buf.to(Device::CPU);  // the one copy back (and the synchronisation)
    const int64_t* hp = h.data();
    auto plan = std::make_shared<DispatchPlan>();
    plan->num_tokens = N;
    plan->top_k = k;
    plan->num_experts = E;
    plan->capacity = capacity;
    plan->expert_idx.assign(hp + o_idx, hp + o_idx + A);
    plan->num_pad = check_routing(plan->expert_idx.data(), pad.defined() ? pad_host.data() : nullptr, N, k, E);
    plan->counts.assign(hp + o_counts, hp + o_counts + E);
    plan->kept.assign(hp + o_kept, hp + o_kept + E);
    plan->offsets.assign(hp + o_offsets, hp + o_offsets + E + 1);
    plan->position.assign(hp + o_pos, hp + o_pos + A);
    plan->slot_of.assign(hp + o_slot, hp + o_slot + A);
    const int64_t S = plan->offsets[E];
    plan->slot_token.assign(hp + o_tok, hp + o_tok + S);
    plan->slot_choice.assign(hp + o_choice, hp + o_choice + S);
    plan->device = experts.device();
    plan->dev_buf = buf;
    plan->dev_expert_idx = o_idx;
    plan->dev_position = o_pos;
    plan->dev_slot_of = o_slot;
    plan->dev_slot_token = o_tok;
    return plan;
}

/// A device op's plan must have been built from routing on its operands' device.
template <class T>
void require_device_plan(const DispatchPlan& plan, const Tensor<T>& x, const char* op, const char* what) {
    MOEKD_CHECK(plan.device == x.device(), op, ": ", what, " of shape ", x.shape(), " is on ", x.device(),
                " but the dispatch plan was built from routing on ", plan.device,
                ". HINT: build the plan from the routing on the operands' device (make_dispatch_plan(experts.to(",
                x.device(), "), ...))");
}
}  // namespace detail

/// The counting sort: histogram (capacity positions), exclusive prefix sum of the kept counts,
/// stable scatter in GShard priority order. experts: (N, k) int64 in [0, E); capacity: rows per
/// expert (-1 for dropless); pad: (N) or any shape of N elements, 1 = pad, or undefined. With
/// experts on the device the plan is computed there (detail::make_dispatch_plan_device).
inline PlanPtr make_dispatch_plan(const Tensor<int64_t>& experts, int64_t num_experts, int64_t capacity,
                                  const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    MOEKD_CHECK(experts.defined() && experts.dim() == 2 && experts.size(1) >= 1, "make_dispatch_plan: experts ",
                experts.defined() ? experts.shape() : Shape{}, " must be (N, k) with k >= 1");
    MOEKD_CHECK(num_experts >= 1, "make_dispatch_plan: num_experts must be >= 1, got ", num_experts);
    MOEKD_CHECK(capacity >= -1, "make_dispatch_plan: capacity ", capacity, " must be >= 0 (or -1 for dropless)");
    if (experts.device() != Device::CPU) return detail::make_dispatch_plan_device(experts, num_experts, capacity, pad);
    auto plan = std::make_shared<DispatchPlan>();
    const int64_t N = experts.size(0), k = experts.size(1), E = num_experts;
    plan->num_tokens = N;
    plan->top_k = k;
    plan->num_experts = E;
    plan->capacity = capacity;
    const Tensor<int64_t> ic = moekd::detail::index_copy_of(experts);
    plan->expert_idx.assign(ic.data(), ic.data() + N * k);
    Tensor<uint8_t> pc;
    if (pad.defined()) {
        MOEKD_CHECK(pad.numel() == N, "make_dispatch_plan: pad mask ", pad.shape(), " has ", pad.numel(),
                    " elements for ", N, " tokens");
        pc = moekd::detail::contiguous_data(pad);
    }
    const uint8_t* pp = pad.defined() ? pc.data() : nullptr;
    const int64_t* idx = plan->expert_idx.data();
    plan->num_pad = detail::check_routing(idx, pp, N, k, E);
    plan->counts.assign(E, 0);
    plan->position.assign(N * k, -1);
    kern::capacity_positions(idx, pp, N, k, plan->counts.data(), plan->position.data());
    plan->kept.resize(E);
    for (int64_t e = 0; e < E; ++e) plan->kept[e] = kern::kept_rows(plan->counts[e], capacity);
    plan->offsets.assign(E + 1, 0);
    plan->offsets[E] = kern::exclusive_scan(plan->kept.data(), E, plan->offsets.data());
    const int64_t S = plan->offsets[E];
    plan->slot_of.assign(N * k, -1);
    plan->slot_token.assign(S, 0);
    plan->slot_choice.assign(S, 0);
    for (int64_t a = 0; a < N * k; ++a)
        kern::scatter_assignment(a, k, idx, plan->position.data(), plan->offsets.data(), capacity,
                                 plan->slot_of.data(), plan->slot_token.data(), plan->slot_choice.data());
    return plan;
}

}  // namespace moekd::moe
