// backend.hpp — the seam between the ops and the devices (as ggml's backend interface or
// flashlight's tensor adapter): an op checks its arguments, then runs the implementation for its
// operands' device, then records a backward that dispatches again.
//
// The CPU implementations are the loops in ops/*.hpp. The device implementations are this table
// of functions, which the CUDA backend fills when a program links it (kernels/ops.cu; including
// <moekd/cuda.hpp> installs it, as DeviceAllocHooks does for memory), so these headers never
// need CUDA. The same table is filled by the emulated CUDA build (emu/), which is how CI runs
// every device implementation without a GPU. An op whose device entry is missing says so:
//   "softmax: tensor of shape (2, 3) is on cuda; softmax has no CUDA implementation yet"
#pragma once

#include <cstddef>
#include <cstdint>

#include "device.hpp"
#include "error.hpp"
#include "shape.hpp"
#include "../kernels/optim.cuh"

namespace moekd {

enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Rsqrt, Abs, Tanh, Sigmoid, Relu, Gelu };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

/// An elementwise loop over `shape` (rank <= kMaxRank) with up to four operands, each read
/// through its own element strides (0 where it is broadcast) from its offset: operand 0 is the output.
struct LoopPlan {
    static constexpr int kMaxRank = 8;
    static constexpr int kMaxOperands = 4;
    int rank = 0;
    int64_t numel = 1;
    int64_t shape[kMaxRank] = {};
    int64_t stride[kMaxOperands][kMaxRank] = {};
    int64_t offset[kMaxOperands] = {};
};

/// The plan for a loop over `shape` whose N operands have the given strides (null: broadcast
/// everywhere) and offsets.
template <size_t N>
LoopPlan make_loop_plan(const Shape& shape, const Shape* const (&strides)[N], const int64_t (&offsets)[N],
                        const char* op) {
    static_assert(N <= LoopPlan::kMaxOperands, "a loop plan takes at most four operands");
    LoopPlan p;
    MOEKD_CHECK(shape.rank() <= LoopPlan::kMaxRank, op, ": tensors of rank ", shape.rank(), " (shape ", shape,
                ") on the GPU; the device loops take at most ", LoopPlan::kMaxRank, " dims");
    p.rank = static_cast<int>(shape.rank());
    for (int d = 0; d < p.rank; ++d) {
        p.shape[d] = shape[d];
        p.numel *= shape[d];
        for (size_t k = 0; k < N; ++k) p.stride[k][d] = strides[k] ? (*strides[k])[d] : 0;
    }
    for (size_t k = 0; k < N; ++k) p.offset[k] = offsets[k];
    return p;
}

/// The storage offset of element i (row-major over the plan's shape) for operand k.
MOEKD_HD inline int64_t plan_offset(const LoopPlan& p, int k, int64_t i) {
    int64_t o = p.offset[k];
    for (int d = p.rank - 1; d >= 0; --d) {
        const int64_t idx = i % p.shape[d];
        i /= p.shape[d];
        o += idx * p.stride[k][d];
    }
    return o;
}

enum class CompareOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge };
enum class LogicOp : uint8_t { Not, And, Or };

/// Device implementations for element type T (float, double; int64_t and uint8_t have fill and
/// copy only). Null entries are missing.
/// Pointers are storage bases; plans carry offsets and strides. All calls are synchronous with
/// respect to later calls on the same device (one stream) and throw moekd::Error on failure.
template <class T>
struct DeviceOps {
    void (*fill)(T* p, T value, int64_t n) = nullptr;
    /// dst (operand 0) = src (operand 1), any strides.
    void (*copy)(T* dst, const T* src, const LoopPlan& plan) = nullptr;
    void (*unary)(UnaryOp op, const T* x, T* y, int64_t n) = nullptr;  // contiguous
    /// gx = dL/dx from x, y = f(x) and g = dL/dy, contiguous.
    void (*unary_backward)(UnaryOp op, const T* x, const T* y, const T* g, T* gx, int64_t n) = nullptr;
    /// y = silu(x) and gx = g * silu'(x) over n contiguous elements (kern::Silu; the backward
    /// gets the forward's y too).
    void (*silu)(const T* x, T* y, int64_t n) = nullptr;
    void (*silu_backward)(const T* x, const T* y, const T* g, T* gx, int64_t n) = nullptr;
    /// c (operand 0) = a (operand 1) op b (operand 2), each read through its strides (broadcast: 0).
    /// c may be a or b itself (each output element reads only its own inputs).
    void (*binary)(BinaryOp op, T* c, const T* a, const T* b, const LoopPlan& plan) = nullptr;
    /// y[r] = sum of the n contiguous elements of row r (a block per row, double accumulation
    /// for float as on the CPU, a fixed order: the same input gives the same bits).
    void (*sum_rows)(const T* x, T* y, int64_t rows, int64_t n) = nullptr;
    /// Row-major C (m, n) = alpha op(A) op(B) + beta C, op(X) = X^T when tX; lda etc. are row
    /// strides of the stored matrices.
    void (*gemm)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                 int64_t ldb, T beta, T* c, int64_t ldc) = nullptr;
    /// The same product inside a bf16 autocast scope (core/precision.hpp; installed for float only):
    /// bf16 copies of A and B (round to nearest even), fp32 accumulation into the fp32 C
    /// (cublasGemmEx, kernels/gemm_bf16.cu). What matmul / linear / bmm call on the device in a scope.
    void (*gemm_bf16)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                      const T* b, int64_t ldb, T beta, T* c, int64_t ldc) = nullptr;

    /// softmax (log_softmax when `log`) of contiguous x read as (outer, n, inner) over n, and its
    /// backward from the output y and its gradient g (kernels/softmax.cuh: a warp or a block per row).
    void (*softmax)(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) = nullptr;
    void (*softmax_backward)(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner,
                             bool log) = nullptr;
    /// layer_norm of M contiguous rows of N (w, b may be null); mean and rstd (M) saved for the
    /// backward, which writes any of gx, gw, gb that is not null (gw, gb deterministic).
    void (*layer_norm)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N,
                       T eps) = nullptr;
    void (*layer_norm_backward)(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw,
                                T* gb, int64_t M, int64_t N) = nullptr;
    /// Fused cross-entropy of logits (N, C) against int64 targets on the device: per-row loss, row
    /// max and log-sum (0 for ignored rows) and, unless loss is null, the reduced loss (the row
    /// sum in double / divisor). Backward: scale(r) = g[r] when per_row, else g[0] / divisor.
    void (*cross_entropy)(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                          int64_t C, int64_t ignore_index, T smoothing, double divisor) = nullptr;
    void (*cross_entropy_backward)(const T* logits, const int64_t* targets, const T* rmax, const T* lsum,
                                   const T* g, bool per_row, T divisor, T* gx, int64_t N, int64_t C,
                                   int64_t ignore_index, T smoothing) = nullptr;
    /// Dropout of n contiguous elements: mask[i] = kern::dropout_keep(seed, i, p), y = mask ? x * scale
    /// : 0; the backward gx = mask ? g * scale : 0.
    void (*dropout)(const T* x, T* y, uint8_t* mask, int64_t n, uint64_t seed, double p, T scale) = nullptr;
    void (*dropout_backward)(const uint8_t* mask, const T* g, T* gx, int64_t n, T scale) = nullptr;
    /// Fused optimizer updates of n elements in place (kernels/optim.cuh's per-element math).
    void (*sgd_step)(T* p, const T* g, T* buf, int64_t n, const kern::SgdStep<T>& s) = nullptr;
    void (*adam_step)(T* p, const T* g, T* m, T* v, int64_t n, const kern::AdamStep<T>& s) = nullptr;
    /// LAMB: the moments, then p -= T(lr * trust) u with the trust ratio kern::lamb_trust of the
    /// squared norms of p and u, summed in double in a fixed order on the device (deterministic).
    void (*lamb_step)(T* p, const T* g, T* m, T* v, int64_t n, const kern::LambStep<T>& s) = nullptr;

    // ---- index, select, reduce, join (ops/index.hpp, select.hpp, reduce.hpp, elementwise.hpp,
    //      join.hpp, loss.hpp; kernels/index.cu) ----
    /// y = x ** p and gx = g * d(x ** p)/dx (kern::Pow), contiguous.
    void (*pow)(const T* x, T p, T* y, int64_t n) = nullptr;
    void (*pow_backward)(const T* x, T p, const T* g, T* gx, int64_t n) = nullptr;
    /// Gather along one dim: for every element of the plan's shape (the index's), dst (operand 0)
    /// = src (operand 1, its stride along the dim zeroed) + idx (operand 2) * src_dim_stride.
    void (*gather)(T* dst, const T* src, const int64_t* idx, int64_t src_dim_stride, const LoopPlan& plan) = nullptr;
    /// The reverse, deterministic: dst (operand 0, its stride along `dim` zeroed) + idx (operand 1)
    /// * dst_dim_stride += src (operand 2). One thread per line along `dim` of the plan's shape
    /// adds that line's elements in order (the CPU's order: the same bits, no atomics); lines
    /// never share a destination element. Elements whose index equals `skip` are left out (-1: none).
    void (*scatter_add)(T* dst, const int64_t* idx, const T* src, int64_t dst_dim_stride, int dim, int64_t skip,
                        const LoopPlan& plan) = nullptr;
    /// out (operand 0) = cond (operand 1) != 0 ? a (operand 2) : b (operand 3); a null a or b
    /// stands for the value a_value or b_value everywhere.
    void (*where)(T* out, const uint8_t* cond, const T* a, const T* b, T a_value, T b_value,
                  const LoopPlan& plan) = nullptr;
    /// c (operand 0, uint8) = a (operand 1) op b (operand 2) ? 1 : 0.
    void (*compare)(CompareOp op, uint8_t* c, const T* a, const T* b, const LoopPlan& plan) = nullptr;
    /// y[r] = max (is_max) or min of the n contiguous elements of row r, NaN propagating; the
    /// backward shares g[r] evenly between the elements equal to y[r] (none for a NaN row).
    void (*extreme_rows)(const T* x, T* y, int64_t rows, int64_t n, bool is_max) = nullptr;
    void (*extreme_rows_backward)(const T* x, const T* y, const T* g, T* gx, int64_t rows, int64_t n) = nullptr;
    /// Over contiguous x read as (outer, n, inner), along n: the position of the largest element
    /// (argmax, (outer, inner)), or of the k largest in descending order (topk, (outer, k, inner));
    /// NaN counts as largest, ties go to the lower position (kern::topk_before).
    void (*argmax)(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner) = nullptr;
    void (*topk)(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner, int64_t k) = nullptr;
    /// nll_loss rows: rows[r] = -scores[r, t[r]] (0 where t[r] == ignore_index), scores (N, C)
    /// contiguous, and unless loss is null the reduced loss (the row sum in double / divisor);
    /// backward: gx (N, C) = 0 except gx[r, t[r]] = -scale(r), scale(r) = g[r] when per_row,
    /// else g[0] / divisor.
    void (*nll_rows)(const T* scores, const int64_t* t, T* rows, T* loss, int64_t N, int64_t C, int64_t ignore_index,
                     double divisor) = nullptr;
    void (*nll_backward)(const int64_t* t, const T* g, bool per_row, T divisor, T* gx, int64_t N, int64_t C,
                         int64_t ignore_index) = nullptr;

    // ---- losses (losses/kd.hpp, losses/relation.hpp; kernels/kl.cu, kernels/relation.cu) ----
    /// Fused symmetric KL (TSJT) of contiguous logit rows a, b (rows, n), a warp or a block per row
    /// (kernels/kl.cuh); mask: (rows) uint8 or null, nonzero = a padding row (skipped). Writes
    /// stats (rows x 6 T: kern::KlRowStats per kept row), count[0] = the kept rows and loss[0] =
    /// the mean over kept rows of KL(p_a || p_b) + KL(p_b || p_a) (row losses summed in double in
    /// a fixed order; 0 when no row is kept). count, loss: device pointers.
    void (*symmetric_kl)(const T* a, const T* b, const uint8_t* mask, T* stats, T* loss, int64_t* count,
                         int64_t rows, int64_t n) = nullptr;
    /// Its backward: ga, gb (either may be null: a detached side) = g[0] / count[0] times the
    /// closed-form gradient of the row's loss; zeros on padding rows (and everywhere when
    /// count[0] == 0). g (the upstream scalar) and count are device pointers.
    void (*symmetric_kl_backward)(const T* a, const T* b, const uint8_t* mask, const T* stats, const T* g,
                                  const int64_t* count, T* ga, T* gb, int64_t rows, int64_t n) = nullptr;
    /// Soft distillation (OneS) of contiguous rows (rows, n): per row KL(softmax(teacher / temp) ||
    /// softmax(student / temp)) from the same fused row kernel (the logits are scaled by
    /// T(1 / temp) as they are read); stats as above; loss[0] = temp^2 * (row sum) / rows.
    void (*soft_distill)(const T* student, const T* teacher, double temperature, T* stats, T* loss, int64_t rows,
                         int64_t n) = nullptr;
    /// Its backward (student side only): gs = T(g[0] * temp / rows) * (q - p) per element.
    void (*soft_distill_backward)(const T* student, const T* teacher, double temperature, const T* stats, const T* g,
                                  T* gs, int64_t rows, int64_t n) = nullptr;
    /// Relation losses: y = x / max(||x||, eps) per contiguous row of (rows, n), a warp or a block
    /// per row (kernels/relation.cuh); nrm[r] = that divisor.
    void (*l2_normalize_rows)(const T* x, T* y, T* nrm, int64_t rows, int64_t n, T eps) = nullptr;
    /// Its backward: gx from the gradient gy of y, multiplied by scale[0] first when scale (a
    /// device pointer) is not null; nrm from the forward. gx may alias gy.
    void (*l2_normalize_rows_backward)(const T* y, const T* gy, const T* scale, const T* nrm, T* gx, int64_t rows,
                                       int64_t n, T eps) = nullptr;
    /// e (rows, n) holds the student Gram rows and becomes e - gt; sq (rows) receives the row sums
    /// of squares, loss[0] = T(scale * their sum) (double, fixed order).
    void (*relation_diff)(T* e, const T* gt, T* sq, T* loss, int64_t rows, int64_t n, double scale) = nullptr;

    // ---- MoE (moe/router.hpp, balance.hpp, dispatch.hpp; kernels/gating.cu, dispatch.cu, experts.cu) ----
    // Router rows (kernels/gating.cuh; the MOEKD_HD row functions moe::* runs on the CPU).
    // logits, probs: (N, E); idx, gates, slot, position: (N, k); all contiguous.
    /// Fused softmax over E + top-k (ties to the lower expert) + gates per token (kern::softmax_topk_row).
    void (*moe_softmax_topk)(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                             bool normalize) = nullptr;
    /// gates at given experts (kern::topk_gates_row); idx checked by the caller.
    void (*moe_topk_gates)(const T* probs, const int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                           bool normalize) = nullptr;
    /// dprobs (N, E), overwritten: the backward of the gates (kern::topk_gates_backward_row).
    void (*moe_topk_gates_backward)(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs,
                                    int64_t N, int64_t E, int64_t k, bool normalize) = nullptr;
    /// Gates renormalised over the choices the plan kept (kern::kept_gates_row), and the backward
    /// (dprobs (N, E) overwritten).
    void (*moe_kept_gates)(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position, T* gates,
                           int64_t N, int64_t E, int64_t k) = nullptr;
    void (*moe_kept_gates_backward)(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                                    const T* gates, const T* dgates, T* dprobs, int64_t N, int64_t E,
                                    int64_t k) = nullptr;
    /// ok[t] = 1 when every logit of row t of x (N, E) is finite, else 0 (kern::row_all_finite);
    /// the caller copies the N bytes to the host to name the layer and the token.
    void (*moe_rows_finite)(const T* x, int64_t N, int64_t E, uint8_t* ok) = nullptr;
    /// out[t] = logsumexp of row t of x (N, E) (kern::row_logsumexp).
    void (*moe_row_logsumexp)(const T* x, T* out, int64_t N, int64_t E) = nullptr;
    /// out[c] = (sum over rows r not padded (pad null: every row) of x[r, c]) / real, x: (N, C); a
    /// block per column, a fixed-order tree in double for float (deterministic).
    void (*moe_masked_column_mean)(const T* x, const uint8_t* pad, T* out, int64_t N, int64_t C,
                                   int64_t real) = nullptr;
    // The dispatch plan (integer only; the same functions in both tables). idx: (N, k) in [0, E)
    // (out-of-range values are left out, position -1, for the caller's host check to report).
    /// counts (E) and each assignment's queue position (N * k, GShard priority order, -1 for pad):
    /// a block per expert scanning the assignments in tiles with a block-level prefix sum.
    void (*moe_capacity_positions)(const int64_t* idx, const uint8_t* pad, int64_t* counts, int64_t* position,
                                   int64_t N, int64_t k, int64_t E) = nullptr;
    /// kept (E) = min(counts, capacity), offsets (E + 1) = their exclusive prefix sum.
    void (*moe_dispatch_offsets)(const int64_t* counts, int64_t* kept, int64_t* offsets, int64_t E,
                                 int64_t capacity) = nullptr;
    /// The stable scatter (kern::scatter_assignment): slot_of (N * k), slot_token / slot_choice (S);
    /// idx_copy (N * k, may be null) gets a copy of idx.
    void (*moe_scatter_slots)(const int64_t* idx, const int64_t* position, const int64_t* offsets, int64_t* slot_of,
                              int64_t* slot_token, int64_t* slot_choice, int64_t* idx_copy, int64_t N, int64_t k,
                              int64_t capacity) = nullptr;
    // Token rows (kernels/dispatch.cuh): x, dx: (N, D); xs, ys: (S, D). Every output element sums
    // its contributions in a fixed order (choices j = 0, 1, ...): no atomics, the same bits each run.
    /// xs[s] = x[slot_token[s]].
    void (*moe_permute)(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D) = nullptr;
    /// dx[t] = sum over kept j of dxs[slot_of[t, j]] (0 when none).
    void (*moe_permute_backward)(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k,
                                 int64_t D) = nullptr;
    /// y[t] = sum over kept j of gates[t, j] * ys[slot_of[t, j]] (0 when none).
    void (*moe_combine)(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k,
                        int64_t D) = nullptr;
    /// dys[slot_of[t, j]] = gates[t, j] dy[t]; dgates[t, j] = <dy[t], ys[slot_of[t, j]]> (double
    /// accumulation, 0 when dropped); either output may be null.
    void (*moe_combine_backward)(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys, T* dgates,
                                 int64_t N, int64_t k, int64_t D) = nullptr;
    // The grouped expert FFN's elementwise parts (kernels/experts.cu); its GEMMs are `gemm` above
    // (`gemm_bf16` inside a bf16 scope).
    /// h[i] += b[i % F] (b may be null); a[i] = relu / gelu (h[i]), over n * F elements.
    void (*moe_bias_act)(T* h, const T* b, T* a, int64_t n, int64_t F, bool gelu) = nullptr;
    /// y[i] += b[i % D] over n * D elements.
    void (*moe_add_bias)(T* y, const T* b, int64_t n, int64_t D) = nullptr;
    /// da[i] = act'(h[i]) da[i] in place over count elements.
    void (*moe_act_backward)(const T* h, const T* a, T* da, int64_t count, bool gelu) = nullptr;
    /// out[c] = sum over rows in order (in double) of x[r, c]; x: (n, C). Bias gradients.
    void (*moe_column_sum)(const T* x, int64_t n, int64_t C, T* out) = nullptr;
    /// `batch` row-major GEMMs C_i (m, n) = op(A_i) op(B_i), X_i = x + i * stride_x (cuBLAS
    /// strided-batched): the expert GEMMs of stacked weights when every expert has the same rows.
    void (*moe_gemm_strided_batched)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                                     int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T* c, int64_t ldc,
                                     int64_t stride_c, int64_t batch) = nullptr;
    /// The same in bf16 (float only): bf16 copies of every A_i and B_i, fp32 accumulation
    /// (cublasGemmStridedBatchedEx, kernels/gemm_bf16.cu); the expert GEMMs inside a bf16 scope.
    void (*moe_gemm_strided_batched_bf16)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a,
                                          int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b,
                                          T* c, int64_t ldc, int64_t stride_c, int64_t batch) = nullptr;

    // ---- linalg (linalg/svd.hpp; kernels/linalg.cu) ----
    /// Thin SVD of one contiguous row-major (M, N) matrix a: u (M, K), s (K, descending), vt (K, N)
    /// row-major, K = min(M, N) (cuSOLVER gesvdj, kernels/linalg.cu); a is left unchanged.
    /// Throws when gesvdj does not converge.
    void (*svd)(const T* a, int64_t M, int64_t N, T* u, T* s, T* vt) = nullptr;

    static DeviceOps& cuda() {
        static DeviceOps ops;
        return ops;
    }
};

/// Mask logic on the device (uint8 masks, any non-zero is true): c (operand 0) = op(a (1), b (2));
/// b is unused for Not.
struct DeviceMaskOps {
    void (*logic)(LogicOp op, uint8_t* c, const uint8_t* a, const uint8_t* b, const LoopPlan& plan) = nullptr;
    static DeviceMaskOps& cuda() {
        static DeviceMaskOps ops;
        return ops;
    }
};

/// Host <-> device copies of raw bytes, installed with the CUDA allocator.
struct DeviceCopyHooks {
    void (*to_device)(void* dst, const void* src, size_t bytes) = nullptr;
    void (*to_host)(void* dst, const void* src, size_t bytes) = nullptr;
    static DeviceCopyHooks& cuda() {
        static DeviceCopyHooks h;
        return h;
    }
};

namespace detail {
/// The device table entry `fn` for op `op` on a tensor of `shape`, or an error saying what is
/// missing (no CUDA backend linked, or no device implementation of this op yet).
template <class F>
F device_entry(F fn, const char* op, const Shape& shape) {
    MOEKD_CHECK(fn, op, ": tensor of shape ", shape, " is on cuda; ", op,
                " has no CUDA implementation in this program (link moekd::cuda and include <moekd/cuda.hpp>, "
                "or copy with .to(Device::CPU))");
    return fn;
}
}  // namespace detail

}  // namespace moekd
