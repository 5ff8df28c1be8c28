// dispatch.hpp — moving tokens to their experts and back: the dispatch plan (a counting sort of
// the routed assignments by expert, with capacity dropping), and three differentiable ops:
//   permute_tokens  x (N, D) -> xs (S, D)              rows grouped by expert (a gather)
//   expert_ffn      xs (S, D) -> ys (S, D)             per expert: fc2(act(fc1(rows))), one GEMM
//                                                      per expert over its contiguous row block
//   combine_tokens  ys (S, D), gates (N, k) -> (N, D)  y[t] = sum_j gates[t, j] * ys[slot(t, j)]
// each with its backward in closed form (gradients to tokens, gates and expert weights).
//
// Optimised CPU code. The per-row / per-assignment math is kernels/dispatch.cuh and
// kernels/gating.cuh (the GPU kernels run the same functions). The expert GEMMs are
// detail::gemm (OpenBLAS behind Eigen maps). The work is a list of tasks, each a chunk of one
// expert's rows, handed to moe::num_threads() workers as they free up (BLAS runs single-threaded
// inside a task: the tasks are the parallelism). A big expert cut into several chunks has its
// weight-gradient parts summed afterwards in chunk order. Nothing depends on timing or on which
// worker ran what, so the same input gives the same bits (for a given thread count, which sets
// the chunk size). detail::moe_reference is the naive loop the tests compare to.
//
// Device half (CUDA tensors, through the device table of core/backend.hpp): a plan built from
// device routing is computed on the device (capacity positions by a block-level scan per expert,
// kept counts and offsets, the stable scatter), and its index arrays are mirrored to the host in
// one copy (the one synchronisation that brings the row count S over; load_stats, the host
// checks and the per-expert GEMM loop read them). permute / combine and their backward are gather
// kernels in which every output element sums its contributions in a fixed order (no atomics: the
// same input gives the same bits). expert_ffn runs one device GEMM per expert and layer over the
// expert's contiguous row block, with the bias / activation / column-sum kernels between.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "../kernels/dispatch.cuh"
#include "../kernels/gating.cuh"
#include "../nn/layers.hpp"
#include "../ops/matmul.hpp"
#include "device.hpp"

#if defined(MOEKD_BLAS)
// OpenBLAS's own thread control (declared as in its cblas.h), to run it single-threaded inside
// the tasks that moekd already runs in parallel.
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);
#endif

namespace moekd::moe {

// ---- threads -----------------------------------------------------------------------------------
namespace detail {
inline int& thread_setting() {
    static int n = [] {
        if (const char* s = std::getenv("MOEKD_NUM_THREADS"); s && std::atoi(s) > 0) return std::atoi(s);
        const unsigned h = std::thread::hardware_concurrency();
        return static_cast<int>(h == 0 ? 1 : std::min(h, 64u));
    }();
    return n;
}
}  // namespace detail

/// Threads the MoE CPU code uses (default: $MOEKD_NUM_THREADS, else the hardware's count).
inline int num_threads() { return detail::thread_setting(); }
inline void set_num_threads(int n) {
    MOEKD_CHECK(n >= 1, "moe::set_num_threads: need at least 1 thread, got ", n);
    detail::thread_setting() = n;
}

namespace detail {

/// What the workers of one run_tasks call share. Held by shared_ptr: a helper thread that the OS
/// schedules only after every task is done finds nothing left, and touches nothing but this.
struct TaskState {
    std::atomic<int64_t> next{0}, done{0};
    int64_t ntasks = 0;
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex m;
    std::condition_variable cv;
};

/// Runs fn(task, worker) for task = 0 .. ntasks-1 on up to num_threads() workers, the calling
/// thread being worker 0 (helpers are detached threads). Tasks are handed out in order as
/// workers free up, so a worker slowed by other load on its core takes fewer, and the caller
/// waits for the tasks, never for a helper the OS has not scheduled yet. Which worker runs a task
/// never changes a result: tasks write disjoint outputs, and any sum over tasks is done
/// afterwards in task order. With `blas_inside`, BLAS runs single-threaded while the tasks run
/// (they are the parallelism); its thread count is restored after. Rethrows the first exception.
template <class F>
void run_tasks(int64_t ntasks, bool blas_inside, F&& fn) {
    const int workers = static_cast<int>(std::min<int64_t>(num_threads(), ntasks));
    if (workers <= 1) {
        for (int64_t t = 0; t < ntasks; ++t) fn(t, 0);
        return;
    }
#if defined(MOEKD_BLAS)
    const int blas_threads = blas_inside ? openblas_get_num_threads() : 1;
    if (blas_inside && blas_threads != 1) openblas_set_num_threads(1);
#endif
    auto st = std::make_shared<TaskState>();
    st->ntasks = ntasks;
    // called only for a claimed task, and the caller waits for every claimed task: `job` outlives
    // every call even though late helpers may still be starting after this function returns
    std::function<void(int64_t, int)> job = [&fn](int64_t t, int w) { fn(t, w); };
    auto work = [st, jp = &job](int w) {
        for (int64_t t; (t = st->next.fetch_add(1)) < st->ntasks;) {
            if (!st->failed.load()) {
                try {
                    (*jp)(t, w);
                } catch (...) {
                    std::lock_guard<std::mutex> lk(st->m);
                    if (!st->error) st->error = std::current_exception();
                    st->failed = true;
                }
            }
            if (st->done.fetch_add(1) + 1 == st->ntasks) {
                std::lock_guard<std::mutex> lk(st->m);
                st->cv.notify_all();
            }
        }
    };
    for (int w = 1; w < workers; ++w) {
        try {
            std::thread(work, w).detach();
        } catch (const std::system_error&) {  // no thread to be had: the caller does the rest
            break;
        }
    }
    work(0);
    {
        std::unique_lock<std::mutex> lk(st->m);
        st->cv.wait(lk, [&] { return st->done.load() == ntasks; });
    }
#if defined(MOEKD_BLAS)
    if (blas_inside && blas_threads != 1) openblas_set_num_threads(blas_threads);
#endif
    if (st->error) std::rethrow_exception(st->error);
}

/// fn(lo, hi) over [0, n) in chunks of `chunk` items (the last one shorter), run as tasks.
template <class F>
void parallel_for(int64_t n, int64_t chunk, F&& fn, bool blas_inside = false) {
    chunk = std::max<int64_t>(chunk, 1);
    run_tasks((n + chunk - 1) / chunk, blas_inside,
              [&](int64_t t, int) { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
}

}  // namespace detail

// ---- the plan ------------------------------------------------------------------------------------
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

// ---- permute / combine ----------------------------------------------------------------------------
/// xs[s] = x[slot_token[s]]: the rows of x grouped by expert.   x: (N, D) -> xs: (S, D)
/// Backward: dx[t] = sum over kept choices j (in order) of dxs[slot(t, j)]; 0 for pad / dropped.
namespace detail {
/// permute_tokens' device half: a gather of rows forward, and backward the sum of each token's
/// kept rows in choice order (one writer per output element).
template <class T>
Tensor<T> permute_tokens_device(const Tensor<T>& x, const PlanPtr& plan) {
    require_device_plan(*plan, x, "permute_tokens", "x");
    const int64_t D = x.size(1), S = plan->rows();
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> xs = Tensor<T>::empty({S, D}, x.device());
    moekd::detail::device_entry(dev_ops<T>().moe_permute, "permute_tokens", x.shape())(
        xc.data(), plan->dev(plan->dev_slot_token), xs.data(), S, D);
    return record<T>(xs, "permute_tokens", {x}, [plan, D, dev = x.device()](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        Tensor<T> dx = Tensor<T>::empty({plan->num_tokens, D}, dev);
        moekd::detail::device_entry(dev_ops<T>().moe_permute_backward, "permute_tokens", g.shape())(
            gc.data(), plan->dev(plan->dev_slot_of), dx.data(), plan->num_tokens, plan->top_k, D);
        return std::vector<Tensor<T>>{dx};
    });
}

/// combine_tokens' device half: forward and backward through the device table; dgates sums in
/// double, every row of dys has one writer.
template <class T>
Tensor<T> combine_tokens_device(const Tensor<T>& ys, const Tensor<T>& gates, const PlanPtr& plan) {
    require_device_plan(*plan, ys, "combine_tokens", "ys");
    same_device(ys, gates, "combine_tokens", "ys", "gates");
    const int64_t N = plan->num_tokens, k = plan->top_k, D = ys.size(1);
    const Tensor<T> yc = moekd::detail::contiguous_data(ys), gc = moekd::detail::contiguous_data(gates);
    Tensor<T> y = Tensor<T>::empty({N, D}, ys.device());
    moekd::detail::device_entry(dev_ops<T>().moe_combine, "combine_tokens", ys.shape())(
        yc.data(), plan->dev(plan->dev_slot_of), gc.data(), y.data(), N, k, D);
    const bool need_ys = needs_grad(ys), need_g = needs_grad(gates);
    return record<T>(y, "combine_tokens", {ys, gates},
                     [plan, need_ys, need_g, D, yd = yc.detach(), gd = gc.detach()](const Tensor<T>& g) {
                         const Tensor<T> dy = moekd::detail::contiguous_data(g);
                         const int64_t N = plan->num_tokens, k = plan->top_k;
                         Tensor<T> dys = need_ys ? Tensor<T>::empty({plan->rows(), D}, yd.device()) : Tensor<T>();
                         Tensor<T> dg = need_g ? Tensor<T>::empty({N, k}, yd.device()) : Tensor<T>();
                         moekd::detail::device_entry(dev_ops<T>().moe_combine_backward, "combine_tokens", g.shape())(
                             dy.data(), yd.data(), plan->dev(plan->dev_slot_of), gd.data(),
                             need_ys ? dys.data() : nullptr, need_g ? dg.data() : nullptr, N, k, D);
                         return std::vector<Tensor<T>>{dys, dg};
                     });
}
}  // namespace detail

template <class T>
Tensor<T> permute_tokens(const Tensor<T>& x, const PlanPtr& plan) {
    MOEKD_CHECK(plan, "permute_tokens: no dispatch plan");
    MOEKD_CHECK(x.dim() == 2 && x.size(0) == plan->num_tokens, "permute_tokens: x ", x.shape(), " must be (N, D) with N = ",
                plan->num_tokens, " tokens, as the dispatch plan");
    if (x.device() != Device::CPU) return detail::permute_tokens_device(x, plan);
    const int64_t D = x.size(1), S = plan->rows();
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> xs = Tensor<T>::empty({S, D});
    detail::parallel_for(S, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t s = lo; s < hi; ++s) kern::copy_row(xc.data() + plan->slot_token[s] * D, D, xs.data() + s * D);
    });
    return record<T>(xs, "permute_tokens", {x}, [plan, D](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        const int64_t N = plan->num_tokens, k = plan->top_k;
        Tensor<T> dx = Tensor<T>::empty({N, D});
        detail::parallel_for(N, 256, [&](int64_t lo, int64_t hi) {
            for (int64_t t = lo; t < hi; ++t)
                kern::permute_backward_row(gc.data(), plan->slot_of.data() + t * k, k, D, dx.data() + t * D);
        });
        return std::vector<Tensor<T>>{dx};
    });
}

/// y[t] = sum over kept choices j (in order j = 0, 1, ...) of gates[t, j] * ys[slot(t, j)]; a
/// token with no kept choice (pad, or every choice over capacity) gets 0 (the residual carries it).
/// ys: (S, D), gates: (N, k) -> y: (N, D). Gradients: dys[slot(t, j)] = gates[t, j] dy[t],
/// dgates[t, j] = <dy[t], ys[slot(t, j)]> (0 for dropped / pad).
template <class T>
Tensor<T> combine_tokens(const Tensor<T>& ys, const Tensor<T>& gates, const PlanPtr& plan) {
    MOEKD_CHECK(plan, "combine_tokens: no dispatch plan");
    MOEKD_CHECK(ys.dim() == 2 && ys.size(0) == plan->rows(), "combine_tokens: ys ", ys.shape(), " must be (S, D) with S = ",
                plan->rows(), " rows, as the dispatch plan");
    MOEKD_CHECK(gates.dim() == 2 && gates.size(0) == plan->num_tokens && gates.size(1) == plan->top_k,
                "combine_tokens: gates ", gates.shape(), " must be (N, k) = (", plan->num_tokens, ", ", plan->top_k, ")");
    if (ys.device() != Device::CPU || gates.device() != Device::CPU) return detail::combine_tokens_device(ys, gates, plan);
    const int64_t N = plan->num_tokens, k = plan->top_k, D = ys.size(1);
    const Tensor<T> yc = moekd::detail::contiguous_data(ys), gc = moekd::detail::contiguous_data(gates);
    Tensor<T> y = Tensor<T>::empty({N, D});
    detail::parallel_for(N, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t)
            kern::combine_row(yc.data(), plan->slot_of.data() + t * k, gc.data() + t * k, k, D, y.data() + t * D);
    });
    const bool need_ys = needs_grad(ys), need_g = needs_grad(gates);
    return record<T>(y, "combine_tokens", {ys, gates},
                     [plan, need_ys, need_g, D, yd = yc.detach(), gd = gc.detach()](const Tensor<T>& g) {
                         const Tensor<T> dy = moekd::detail::contiguous_data(g);
                         const int64_t N = plan->num_tokens, k = plan->top_k;
                         Tensor<T> dys = need_ys ? Tensor<T>::empty({plan->rows(), D}) : Tensor<T>();
                         Tensor<T> dg = need_g ? Tensor<T>::empty({N, k}) : Tensor<T>();
                         detail::parallel_for(N, 256, [&](int64_t lo, int64_t hi) {
                             for (int64_t t = lo; t < hi; ++t)
                                 kern::combine_backward_row<T, moekd::detail::Acc<T>>(
                                     dy.data() + t * D, yd.data(), plan->slot_of.data() + t * k, gd.data() + t * k,
                                     k, D, need_ys ? dys.data() : nullptr, need_g ? dg.data() + t * k : nullptr);
                         });
                         return std::vector<Tensor<T>>{dys, dg};
                     });
}

// ---- expert weights ------------------------------------------------------------------------------
/// The weights of E expert FFNs, either one tensor set per expert (nn::Linear layout, as the
/// MoE layer's `experts.<i>.fc1.weight`) or stacked along a leading E dim. Biases may be absent.
///   per expert: w1[e] (F, D), b1[e] (F), w2[e] (D, F), b2[e] (D)
///   stacked:    W1 (E, F, D), B1 (E, F), W2 (E, D, F), B2 (E, D)
template <class T>
struct ExpertWeights {
    std::vector<Tensor<T>> w1, b1, w2, b2;
    Tensor<T> W1, B1, W2, B2;

    bool stacked() const { return W1.defined(); }
    int64_t num_experts() const { return stacked() ? W1.size(0) : static_cast<int64_t>(w1.size()); }
    int64_t d_model() const { return stacked() ? W1.size(2) : w1.at(0).size(1); }
    int64_t ffn_dim() const { return stacked() ? W1.size(1) : w1.at(0).size(0); }
};

namespace detail {

/// Where one weight gradient goes: straight into a leaf's .grad (accumulating, as the engine
/// would, without a separate copy and add pass), or a fresh tensor handed back to the engine.
template <class T>
struct GradSink {
    Tensor<T> fresh;    // returned to the engine, or set as the leaf's first .grad
    Tensor<T> target;   // the leaf whose .grad this is (direct mode), else undefined
    T* data = nullptr;  // where the values go
    T beta = T(0);      // 1: accumulate into existing values
    bool active() const { return data != nullptr; }
};

/// In direct mode a leaf parameter's gradient is accumulated in place by the GEMM that makes it
/// (beta = 1), the engine's copy-on-first / add-after being the only difference; with
/// `direct` off, or for a non-leaf, the gradient is returned to the engine like any op's.
template <class T>
GradSink<T> make_sink(const Tensor<T>& w, bool direct) {
    GradSink<T> s;
    if (!needs_grad(w)) return s;
    if (direct && w.is_leaf()) {
        s.target = w;
        Tensor<T> cur = w.grad();
        if (cur.defined() && cur.is_contiguous() && cur.shape() == w.shape()) {
            s.data = cur.data();
            s.beta = T(1);
            return s;
        }
        if (cur.defined()) s.target = Tensor<T>();  // an odd existing .grad: let the engine add
    }
    s.fresh = Tensor<T>::empty(w.shape());
    s.data = s.fresh.data();
    return s;
}

/// Once filled: a fresh gradient of a leaf in direct mode becomes its .grad; else it is returned.
template <class T>
Tensor<T> finish_sink(GradSink<T>& s) {
    if (!s.active()) return Tensor<T>();
    if (s.target.defined()) {
        if (s.fresh.defined()) s.target.set_grad(s.fresh);
        return Tensor<T>();
    }
    return s.fresh;
}

inline bool& direct_leaf_grads_setting() {
    static bool on = true;
    return on;
}

/// One task of the grouped FFN: rows [r0, r1) of expert e's block.
struct Segment {
    int64_t e, r0, r1;
};

/// Each expert's block cut into equal chunks of at most `max_rows` rows. Fixed by the sizes (and
/// the thread count through max_rows), never by timing.
inline std::vector<Segment> split_rows(const std::vector<int64_t>& offsets, int64_t max_rows) {
    const int64_t E = static_cast<int64_t>(offsets.size()) - 1;
    std::vector<Segment> out;
    for (int64_t e = 0; e < E; ++e) {
        const int64_t n = offsets[e + 1] - offsets[e], c = (n + max_rows - 1) / max_rows;
        for (int64_t i = 0; i < c; ++i) out.push_back({e, offsets[e] + n * i / c, offsets[e] + n * (i + 1) / c});
    }
    return out;
}

/// Chunk limits. The forward has no sum over chunks, but every chunk packs its expert's two weight
/// matrices again: 512 rows (d 256, ff 1024, 8192 tokens, E = 8: forward 21.4 ms) beat 256 rows,
/// whose hidden block (256 x F) stays in L2 (22.6 ms); 1024 rows gain nothing more and balance
/// the workers worse. In the backward every extra chunk of an expert adds a partial weight
/// gradient to sum.
inline int64_t forward_rows(int64_t) { return 512; }
inline int64_t backward_rows(int64_t S) { return std::clamp<int64_t>(S / (2 * int64_t(num_threads())), 256, 2048); }

/// The order tasks are handed out in: biggest first (the longest-processing-time rule, so the
/// workers finish together), ties in task order. Results never depend on it.
inline std::vector<int64_t> schedule(const std::vector<Segment>& segs) {
    std::vector<int64_t> order(segs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return segs[a].r1 - segs[a].r0 > segs[b].r1 - segs[b].r0;
    });
    return order;
}

template <class T>
using CMat = moekd::detail::MatRef<const T>;
template <class T>
using MMat = moekd::detail::MatRef<T>;

/// Raw pointers to expert e's weights (which: 0 w1, 1 b1, 2 w2, 3 b2; null for an absent bias)
/// in contiguous copies of expert_ffn's weight inputs (per expert: 4 E, stacked: 4).
template <class T>
struct ExpertPtrs {
    std::vector<Tensor<T>> held;
    bool stacked = false;
    int64_t F = 0, D = 0;
    int64_t per(int which) const { return which == 0 || which == 2 ? F * D : which == 1 ? F : D; }
    const T* get(int64_t e, int which) const {
        const Tensor<T>& h = stacked ? held[which] : held[e * 4 + which];
        return h.defined() ? h.data() + (stacked ? e * per(which) : 0) : nullptr;
    }
};

/// The rows every expert's block has when the weights are stacked and all E > 1 blocks have the
/// same n > 0 rows (then each layer's E GEMMs are one cuBLAS strided-batched call), else -1.
template <class T>
int64_t uniform_block_rows(const DispatchPlan& plan, const ExpertPtrs<T>& W) {
    const int64_t E = plan.num_experts, n = plan.offsets[1] - plan.offsets[0];
    if (!W.stacked || E < 2 || n == 0) return -1;
    for (int64_t e = 1; e < E; ++e)
        if (plan.offsets[e + 1] - plan.offsets[e] != n) return -1;
    return n;
}

/// C_e = op(A_e) op(B_e) for every expert e (row-major, (m, n) each, A_e = a + e * sa ...): one
/// strided-batched GEMM of the table.
template <class T>
void dev_gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t sa,
                      const T* b, int64_t ldb, int64_t sb, T* c, int64_t ldc, int64_t sc, int64_t batch,
                      const char* op) {
    moekd::detail::device_entry(dev_ops<T>().moe_gemm_strided_batched, op, Shape{batch, m, n})(
        ta, tb, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, batch);
}

/// expert_ffn's device half: per expert with rows, over its contiguous row block, the table's
/// GEMM for each layer with the bias / activation kernels between (H, the pre-activation, is kept
/// for both activations); with stacked weights and the same rows in every expert, each layer's
/// GEMMs are one strided-batched call. Backward per expert as on the CPU; weight gradients are
/// fresh tensors returned to the engine (a per-expert expert with no rows gets none, a stacked one
/// zeros), bias gradients are column sums in double in row order.
template <class T>
Tensor<T> expert_ffn_device(const Tensor<T>& xs, const PlanPtr& plan, const std::vector<Tensor<T>>& inputs,
                            const ExpertPtrs<T>& W, bool gelu) {
    const char* op = "expert_ffn";
    require_device_plan(*plan, xs, op, "xs");
    const int64_t E = plan->num_experts, S = plan->rows(), F = W.F, D = W.D;
    const Device dev = xs.device();
    auto& o = dev_ops<T>();
    const Tensor<T> xc = moekd::detail::contiguous_data(xs);
    Tensor<T> H = Tensor<T>::empty({S, F}, dev), A = Tensor<T>::empty({S, F}, dev), ys = Tensor<T>::empty({S, D}, dev);
    const int64_t nb = uniform_block_rows(*plan, W);
    if (nb > 0)  // H_e = X_e W1_e^T for every e at once
        dev_gemm_batched<T>(false, true, nb, F, D, xc.data(), D, nb * D, W.get(0, 0), D, F * D, H.data(), F, nb * F, E, op);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
        if (n == 0) continue;
        if (nb < 0) dev_gemm<T>(false, true, n, F, D, xc.data() + r0 * D, D, W.get(e, 0), D, H.data() + r0 * F, F, op);
        moekd::detail::device_entry(o.moe_bias_act, op, xs.shape())(H.data() + r0 * F, W.get(e, 1), A.data() + r0 * F,
                                                                    n, F, gelu);
        if (nb < 0) dev_gemm<T>(false, true, n, D, F, A.data() + r0 * F, F, W.get(e, 2), F, ys.data() + r0 * D, D, op);
    }
    if (nb > 0)  // Y_e = A_e W2_e^T
        dev_gemm_batched<T>(false, true, nb, D, F, A.data(), F, nb * F, W.get(0, 2), F, D * F, ys.data(), D, nb * D, E, op);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
        if (const T* b2 = W.get(e, 3); b2 && n > 0)
            moekd::detail::device_entry(o.moe_add_bias, op, xs.shape())(ys.data() + r0 * D, b2, n, D);
    }
    return record<T>(ys, "expert_ffn", inputs, [plan, inputs, W, gelu, xd = xc.detach(), H, A](const Tensor<T>& g) {
        const char* op = "expert_ffn";
        auto& o = dev_ops<T>();
        const Tensor<T> dy = moekd::detail::contiguous_data(g);
        const Device dev = dy.device();
        const int64_t E = plan->num_experts, S = plan->rows(), F = W.F, D = W.D;
        std::vector<Tensor<T>> grads(inputs.size());
        for (size_t i = 1; i < inputs.size(); ++i) {
            if (!inputs[i].defined() || !needs_grad(inputs[i])) continue;
            if (!W.stacked && plan->kept[(i - 1) / 4] == 0) continue;  // as the CPU: no gradient for an idle expert
            grads[i] = W.stacked ? Tensor<T>::zeros(inputs[i].shape(), dev) : Tensor<T>::empty(inputs[i].shape(), dev);
        }
        auto out = [&](int64_t e, int which) -> T* {
            Tensor<T>& t = grads[W.stacked ? 1 + which : 1 + e * 4 + which];
            return t.defined() ? t.data() + (W.stacked ? e * W.per(which) : 0) : nullptr;
        };
        const bool need_x = needs_grad(inputs[0]);
        if (need_x) grads[0] = Tensor<T>::empty({S, D}, dev);
        Tensor<T> dA;
        if (const int64_t nb = uniform_block_rows(*plan, W); nb > 0) {  // every GEMM strided-batched over E
            T *dw1 = out(0, 0), *db1 = out(0, 1), *dw2 = out(0, 2), *db2 = out(0, 3);
            for (int64_t e = 0; e < E && db2; ++e)
                moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(dy.data() + e * nb * D, nb, D, db2 + e * D);
            if (dw2)  // dW2_e = dY_e^T A_e
                dev_gemm_batched<T>(true, false, D, F, nb, dy.data(), D, nb * D, A.data(), F, nb * F, dw2, F, D * F, E, op);
            if (!(dw1 || db1 || need_x)) return grads;
            dA = Tensor<T>::empty({S, F}, dev);  // dA_e = dY_e W2_e, then dH in place
            dev_gemm_batched<T>(false, false, nb, F, D, dy.data(), D, nb * D, W.get(0, 2), F, D * F, dA.data(), F, nb * F,
                                E, op);
            moekd::detail::device_entry(o.moe_act_backward, op, g.shape())(H.data(), A.data(), dA.data(), S * F, gelu);
            for (int64_t e = 0; e < E && db1; ++e)
                moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(dA.data() + e * nb * F, nb, F, db1 + e * F);
            if (dw1)  // dW1_e = dH_e^T X_e
                dev_gemm_batched<T>(true, false, F, D, nb, dA.data(), F, nb * F, xd.data(), D, nb * D, dw1, D, F * D, E, op);
            if (need_x)  // dX_e = dH_e W1_e
                dev_gemm_batched<T>(false, false, nb, D, F, dA.data(), F, nb * F, W.get(0, 0), D, F * D, grads[0].data(), D,
                                    nb * D, E, op);
            return grads;
        }
        for (int64_t e = 0; e < E; ++e) {
            const int64_t r0 = plan->offsets[e], n = plan->offsets[e + 1] - r0;
            if (n == 0) continue;
            const T* gy = dy.data() + r0 * D;
            const T* a = A.data() + r0 * F;
            if (T* db2 = out(e, 3)) moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(gy, n, D, db2);
            if (T* dw2 = out(e, 2)) dev_gemm<T>(true, false, D, F, n, gy, D, a, F, dw2, F, op);  // dY^T A
            T *dw1 = out(e, 0), *db1 = out(e, 1);
            if (!(dw1 || db1 || need_x)) continue;
            if (!dA.defined()) dA = Tensor<T>::empty({S, F}, dev);
            T* da = dA.data() + r0 * F;
            dev_gemm<T>(false, false, n, F, D, gy, D, W.get(e, 2), F, da, F, op);  // dA = dY W2
            moekd::detail::device_entry(o.moe_act_backward, op, g.shape())(H.data() + r0 * F, a, da, n * F, gelu);
            if (db1) moekd::detail::device_entry(o.moe_column_sum, op, g.shape())(da, n, F, db1);
            if (dw1) dev_gemm<T>(true, false, F, D, n, da, F, xd.data() + r0 * D, D, dw1, D, op);  // dH^T X
            if (need_x)
                dev_gemm<T>(false, false, n, D, F, da, F, W.get(e, 0), D, grads[0].data() + r0 * D, D, op);  // dH W1
        }
        return grads;
    });
}

}  // namespace detail

/// When on (the default), expert_ffn accumulates the gradients of leaf weights straight into their
/// .grad; off, it returns them to the autograd engine as every op does. Same values either way.
inline void set_direct_leaf_grads(bool on) { detail::direct_leaf_grads_setting() = on; }

// ---- the grouped expert FFN ------------------------------------------------------------------------
/// ys[rows of e] = act(xs[rows of e] @ w1[e]^T + b1[e]) @ w2[e]^T + b2[e] for every expert e, over
/// the contiguous row blocks of the plan: one GEMM per expert and layer.
/// xs: (S, D) -> ys: (S, D). Backward per expert (dY = its rows of the gradient):
///   db2 = colsum(dY), dW2 = dY^T A, dA = dY W2, dH = dA * act'(H), db1 = colsum(dH),
///   dW1 = dH^T X, dX = dH W1.
template <class T>
Tensor<T> expert_ffn(const Tensor<T>& xs, const PlanPtr& plan, const ExpertWeights<T>& w,
                     nn::Activation act = nn::Activation::ReLU) {
    MOEKD_CHECK(plan, "expert_ffn: no dispatch plan");
    const int64_t E = plan->num_experts;
    MOEKD_CHECK(w.num_experts() == E, "expert_ffn: ", w.num_experts(), " experts' weights for a plan over ", E, " experts");
    const int64_t F = w.ffn_dim(), D = w.d_model(), S = plan->rows();
    MOEKD_CHECK(xs.dim() == 2 && xs.size(0) == S && xs.size(1) == D, "expert_ffn: xs ", xs.shape(), " must be (S, D) = (",
                S, ", ", D, ")");
    // inputs: xs, then w1, b1, w2, b2 of each expert (per-expert form) or the four stacked tensors
    std::vector<Tensor<T>> inputs{xs};
    auto expect = [&](const Tensor<T>& t, const Shape& s, const char* what, int64_t e, bool optional) {
        if (optional && !t.defined()) return;
        MOEKD_CHECK(t.defined() && t.shape() == s, "expert_ffn: ", what, e >= 0 ? msg(" of expert ", e) : std::string(),
                    " is ", t.defined() ? msg(t.shape()) : std::string("undefined"), ", expected ", s);
        MOEKD_CHECK(t.device() == xs.device(), "expert_ffn: ", what, e >= 0 ? msg(" of expert ", e) : std::string(),
                    " is on ", t.device(), ", xs ", xs.shape(), " on ", xs.device(), " (operands on different devices)");
    };
    if (w.stacked()) {
        expect(w.W1, {E, F, D}, "W1", -1, false);
        expect(w.B1, {E, F}, "B1", -1, true);
        expect(w.W2, {E, D, F}, "W2", -1, false);
        expect(w.B2, {E, D}, "B2", -1, true);
        inputs.insert(inputs.end(), {w.W1, w.B1, w.W2, w.B2});
    } else {
        MOEKD_CHECK(w.b1.size() == w.w1.size() && w.w2.size() == w.w1.size() && w.b2.size() == w.w1.size(),
                    "expert_ffn: per-expert lists differ in length (w1 ", w.w1.size(), ", b1 ", w.b1.size(), ", w2 ",
                    w.w2.size(), ", b2 ", w.b2.size(), "); use undefined tensors for absent biases");
        for (int64_t e = 0; e < E; ++e) {
            expect(w.w1[e], {F, D}, "fc1 weight", e, false);
            expect(w.b1[e], {F}, "fc1 bias", e, true);
            expect(w.w2[e], {D, F}, "fc2 weight", e, false);
            expect(w.b2[e], {D}, "fc2 bias", e, true);
            inputs.insert(inputs.end(), {w.w1[e], w.b1[e], w.w2[e], w.b2[e]});
        }
    }
    // contiguous views of every weight and raw pointers per expert
    std::vector<Tensor<T>> held;
    for (size_t i = 1; i < inputs.size(); ++i)
        held.push_back(inputs[i].defined() ? moekd::detail::contiguous_data(inputs[i]) : Tensor<T>());
    if (xs.device() != Device::CPU) {
        detail::ExpertPtrs<T> W;
        W.held = std::move(held);
        W.stacked = w.stacked();
        W.F = F;
        W.D = D;
        return detail::expert_ffn_device(xs, plan, inputs, W, act == nn::Activation::GELU);
    }
    struct Ptr {
        const T *w1, *b1, *w2, *b2;
    };
    std::vector<Ptr> P(E);
    for (int64_t e = 0; e < E; ++e) {
        auto at = [&](int which, int64_t per) -> const T* {
            const Tensor<T>& h = w.stacked() ? held[which] : held[e * 4 + which];
            if (!h.defined()) return nullptr;
            return h.data() + (w.stacked() ? e * per : 0);
        };
        P[e] = {at(0, F * D), at(1, F), at(2, D * F), at(3, D)};
    }

    const bool gelu = act == nn::Activation::GELU;
    const Tensor<T> xc = moekd::detail::contiguous_data(xs);
    Tensor<T> A = Tensor<T>::empty({S, F});                           // activations
    Tensor<T> H = gelu ? Tensor<T>::empty({S, F}) : Tensor<T>();      // pre-activations (GELU only)
    Tensor<T> ys = Tensor<T>::empty({S, D});
    const auto segs = detail::split_rows(plan->offsets, detail::forward_rows(S));
    const auto order = detail::schedule(segs);
    detail::run_tasks(static_cast<int64_t>(segs.size()), true, [&](int64_t i, int) {
        const auto& sg = segs[order[i]];
        const int64_t n = sg.r1 - sg.r0;
        const Ptr& q = P[sg.e];
        T* h = (gelu ? H : A).data() + sg.r0 * F;
        T* a = A.data() + sg.r0 * F;
        // biases are written first and the GEMM adds onto them (beta = 1), as linear() does
        if (q.b1)
            for (int64_t i = 0; i < n; ++i) std::copy_n(q.b1, F, h + i * F);
        moekd::detail::gemm(T(1), detail::CMat<T>{xc.data() + sg.r0 * D, n, D, D, 1},
                            detail::CMat<T>{q.w1, F, D, D, 1}.t(), q.b1 ? T(1) : T(0),
                            detail::MMat<T>{h, n, F, F, 1});
        for (int64_t i = 0; i < n; ++i) {
            if (gelu) kern::bias_act_row<kern::Gelu>(h + i * F, static_cast<const T*>(nullptr), F, a + i * F);
            else kern::bias_act_row<kern::Relu>(h + i * F, static_cast<const T*>(nullptr), F, a + i * F);
        }
        T* y = ys.data() + sg.r0 * D;
        if (q.b2)
            for (int64_t i = 0; i < n; ++i) std::copy_n(q.b2, D, y + i * D);
        moekd::detail::gemm(T(1), detail::CMat<T>{a, n, F, F, 1}, detail::CMat<T>{q.w2, D, F, F, 1}.t(),
                            q.b2 ? T(1) : T(0), detail::MMat<T>{y, n, D, D, 1});
    });

    const bool stacked = w.stacked();
    return record<T>(
        ys, "expert_ffn", inputs,
        [plan, inputs, held, P, F, D, E, S, gelu, stacked, xd = xc.detach(), A, H](const Tensor<T>& g) {
            const Tensor<T> dy = moekd::detail::contiguous_data(g);
            const bool direct = detail::direct_leaf_grads_setting();
            const bool need_x = needs_grad(inputs[0]);
            // gradient sinks, one per weight input (stacked: 4; per expert: 4 E)
            // (a tensor given twice, e.g. experts sharing a weight, goes through the engine, which
            // sums its two gradients)
            std::vector<detail::GradSink<T>> sink(inputs.size());
            for (size_t i = 1; i < inputs.size(); ++i) {
                const bool empty_expert = !stacked && plan->kept[(i - 1) / 4] == 0;
                bool repeated = false;
                for (size_t j = 1; j < inputs.size() && inputs[i].defined(); ++j)
                    repeated = repeated || (j != i && inputs[j].is_same(inputs[i]));
                if (!empty_expert) sink[i] = detail::make_sink(inputs[i], direct && !repeated);
            }
            auto sink_of = [&](int64_t e, int which) -> detail::GradSink<T>& {
                return sink[stacked ? 1 + which : 1 + e * 4 + which];
            };
            auto per = [&](int which) { return which == 0 || which == 2 ? F * D : which == 1 ? F : D; };
            // where expert e's gradient `which` lives inside its sink
            auto dst = [&](int64_t e, int which) { return sink_of(e, which).data + (stacked ? e * per(which) : 0); };
            // a fresh stacked gradient must be zero for experts that got no rows
            if (stacked)
                for (int which = 0; which < 4; ++which) {
                    auto& s = sink[1 + which];
                    if (!s.active() || s.beta != T(0)) continue;
                    for (int64_t e = 0; e < E; ++e)
                        if (plan->kept[e] == 0) std::fill_n(s.data + e * per(which), per(which), T(0));
                }

            Tensor<T> dxs = need_x ? Tensor<T>::empty({S, D}) : Tensor<T>();
            const auto segs = detail::split_rows(plan->offsets, detail::backward_rows(S));
            const auto order = detail::schedule(segs);
            // a task that does not start its expert's block writes its weight gradients to
            // scratch, added to the expert's after all tasks end (in task order: deterministic)
            using Acc = moekd::detail::Acc<T>;
            struct SegOut {
                std::vector<Acc> db1, db2;
                Tensor<T> dw1, dw2;  // scratch for a continuation segment
            };
            std::vector<SegOut> outs(segs.size());
            std::vector<Tensor<T>> scratch(static_cast<size_t>(num_threads()));  // per worker: dA, then dH
            detail::run_tasks(static_cast<int64_t>(segs.size()), true, [&](int64_t i, int worker) {
                const int64_t task = order[i];
                const auto& sg = segs[task];
                SegOut& o = outs[task];
                const int64_t e = sg.e, n = sg.r1 - sg.r0;
                Tensor<T>& buf = scratch[worker];  // from the caching allocator: no fresh pages per step
                if (!buf.defined() || buf.numel() < n * F) buf = Tensor<T>::empty({n, F});
                const bool cont = sg.r0 != plan->offsets[e];
                const Ptr& q = P[e];
                auto& s_w1 = sink_of(e, 0);
                auto& s_b1 = sink_of(e, 1);
                auto& s_w2 = sink_of(e, 2);
                auto& s_b2 = sink_of(e, 3);
                const T* gy = dy.data() + sg.r0 * D;
                const T* a = A.data() + sg.r0 * F;
                if (s_b2.active()) {
                    o.db2.assign(D, Acc(0));
                    for (int64_t i = 0; i < n; ++i)
                        for (int64_t d = 0; d < D; ++d) o.db2[d] += static_cast<Acc>(gy[i * D + d]);
                }
                if (s_w2.active()) {  // dW2 = dY^T A: (D, n) @ (n, F)
                    T* out = dst(e, 2);
                    T beta = s_w2.beta;
                    if (cont) o.dw2 = Tensor<T>::empty({D, F}), out = o.dw2.data(), beta = T(0);
                    moekd::detail::gemm(T(1), detail::CMat<T>{gy, n, D, D, 1}.t(), detail::CMat<T>{a, n, F, F, 1},
                                        beta, detail::MMat<T>{out, D, F, F, 1});
                }
                if (!(s_w1.active() || s_b1.active() || need_x)) return;
                T* da = buf.data();  // dA = dY W2: (n, D) @ (D, F)
                moekd::detail::gemm(T(1), detail::CMat<T>{gy, n, D, D, 1}, detail::CMat<T>{q.w2, D, F, F, 1}, T(0),
                                    detail::MMat<T>{da, n, F, F, 1});
                if (s_b1.active()) o.db1.assign(F, Acc(0));
                Acc* db1 = s_b1.active() ? o.db1.data() : nullptr;
                const T* h = (gelu ? H : A).data() + sg.r0 * F;
                for (int64_t i = 0; i < n; ++i) {
                    if (gelu) kern::act_backward_row<kern::Gelu>(h + i * F, a + i * F, da + i * F, F, db1);
                    else kern::act_backward_row<kern::Relu>(h + i * F, a + i * F, da + i * F, F, db1);
                }
                const T* x = xd.data() + sg.r0 * D;
                if (s_w1.active()) {  // dW1 = dH^T X: (F, n) @ (n, D)
                    T* out = dst(e, 0);
                    T beta = s_w1.beta;
                    if (cont) o.dw1 = Tensor<T>::empty({F, D}), out = o.dw1.data(), beta = T(0);
                    moekd::detail::gemm(T(1), detail::CMat<T>{da, n, F, F, 1}.t(), detail::CMat<T>{x, n, D, D, 1},
                                        beta, detail::MMat<T>{out, F, D, D, 1});
                }
                if (need_x)  // dX = dH W1: (n, F) @ (F, D)
                    moekd::detail::gemm(T(1), detail::CMat<T>{da, n, F, F, 1}, detail::CMat<T>{q.w1, F, D, D, 1}, T(0),
                                        detail::MMat<T>{dxs.data() + sg.r0 * D, n, D, D, 1});
            });
            // join: continuation parts and bias sums, expert by expert in row order
            std::vector<std::vector<Acc>> b1sum(E), b2sum(E);
            for (size_t task = 0; task < segs.size(); ++task) {
                const auto& sg = segs[task];
                SegOut& o = outs[task];
                const int64_t e = sg.e;
                if (o.dw1.defined()) {
                    T* out = dst(e, 0);
                    for (int64_t i = 0; i < F * D; ++i) out[i] += o.dw1.data()[i];
                }
                if (o.dw2.defined()) {
                    T* out = dst(e, 2);
                    for (int64_t i = 0; i < F * D; ++i) out[i] += o.dw2.data()[i];
                }
                auto fold = [](std::vector<Acc>& acc, const std::vector<Acc>& v) {
                    if (v.empty()) return;
                    if (acc.empty()) acc = v;
                    else
                        for (size_t i = 0; i < v.size(); ++i) acc[i] += v[i];
                };
                fold(b1sum[e], o.db1);
                fold(b2sum[e], o.db2);
            }
            for (int64_t e = 0; e < E; ++e) {
                auto put = [&](int which, const std::vector<Acc>& v) {
                    if (v.empty()) return;
                    T* out = dst(e, which);
                    const T beta = sink_of(e, which).beta;
                    for (size_t i = 0; i < v.size(); ++i)
                        out[i] = beta == T(0) ? static_cast<T>(v[i]) : out[i] + static_cast<T>(v[i]);
                };
                put(1, b1sum[e]);
                put(3, b2sum[e]);
            }
            std::vector<Tensor<T>> grads(inputs.size());
            grads[0] = dxs;
            for (size_t i = 1; i < inputs.size(); ++i) grads[i] = detail::finish_sink(sink[i]);
            return grads;
        });
}

namespace detail {

/// The ground truth: every kept assignment's expert FFN evaluated by plain loops in double, times
/// its gate, summed over the token's choices. x: (N, D), gates: (N, k) -> (N, D). No autograd.
template <class T>
Tensor<T> moe_reference(const Tensor<T>& x, const DispatchPlan& plan, const Tensor<T>& gates,
                        const ExpertWeights<T>& w, nn::Activation act) {
    NoGrad ng;
    const int64_t N = plan.num_tokens, k = plan.top_k, D = w.d_model(), F = w.ffn_dim();
    const std::vector<T> xv = x.to_vector(), gv = gates.to_vector();
    auto vec = [&](const std::vector<Tensor<T>>& list, const Tensor<T>& stacked, int64_t e) {
        const Tensor<T> t = w.stacked() ? (stacked.defined() ? stacked.select(0, e) : Tensor<T>()) : list[e];
        return t.defined() ? t.to_vector() : std::vector<T>();
    };
    Tensor<T> y = Tensor<T>::zeros({N, D});
    std::vector<double> acc(D), h(F);
    for (int64_t t = 0; t < N; ++t) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < k; ++j) {
            if (plan.slot_of[t * k + j] < 0) continue;
            const int64_t e = plan.expert_idx[t * k + j];
            const auto w1 = vec(w.w1, w.W1, e), b1 = vec(w.b1, w.B1, e), w2 = vec(w.w2, w.W2, e), b2 = vec(w.b2, w.B2, e);
            for (int64_t f = 0; f < F; ++f) {
                double s = b1.empty() ? 0.0 : double(b1[f]);
                for (int64_t d = 0; d < D; ++d) s += double(w1[f * D + d]) * double(xv[t * D + d]);
                h[f] = act == nn::Activation::ReLU ? (s > 0 ? s : 0.0) : 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0)));
            }
            for (int64_t d = 0; d < D; ++d) {
                double s = b2.empty() ? 0.0 : double(b2[d]);
                for (int64_t f = 0; f < F; ++f) s += double(w2[d * F + f]) * h[f];
                acc[d] += double(gv[t * k + j]) * s;
            }
        }
        for (int64_t d = 0; d < D; ++d) y.data()[t * D + d] = static_cast<T>(acc[d]);
    }
    return y;
}

}  // namespace detail
}  // namespace moekd::moe
