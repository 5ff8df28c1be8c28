// index.cu — the CUDA implementations of the op API's index, select, reduce and loss-row entries
// of the device table (core/backend.hpp): pow, gather / scatter-add along a dim, where, the
// comparisons and mask logic, max / min over rows, argmax / top-k, and nll_loss.
//
// Written for a GPU: grid-stride loops with adjacent threads on adjacent elements of the plan's
// (row-major) shape; max / min and long-row argmax a block per row with a shared-memory tree.
// Deterministic: scatter-add gives each thread one line along the scattered dim and adds that
// line in order (the CPU's order, so the same bits, and no float atomics: lines never share a
// destination); max / min / argmax are exact whatever the reduction order. Top-k is a thread per
// column picking k times (k is small where it is used: the MoE router's top-1 / top-2). Compiled
// by nvcc into moekd::cuda, and by g++ into the emulated backend (emu/), where CI runs it.
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/elementwise.cuh>
#include <moekd/kernels/index.cuh>
#include <moekd/kernels/softmax.cuh>

namespace moekd::cuda {
namespace {

constexpr unsigned kBlock = 256;

unsigned grid_for(int64_t n) { return kern::cuda::grid_for(n, kBlock); }
unsigned rows_grid(int64_t rows) { return kern::cuda::grid_1d(rows); }

#define MOEKD_GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// ---- pow -------------------------------------------------------------------------------------
template <class T>
__global__ void pow_kernel(const T* __restrict__ x, T p, T* __restrict__ y, int64_t n) {
    MOEKD_GRID_STRIDE(i, n) y[i] = kern::Pow::fwd(x[i], p);
}
template <class T>
__global__ void pow_backward_kernel(const T* __restrict__ x, T p, const T* __restrict__ g, T* __restrict__ gx,
                                    int64_t n) {
    MOEKD_GRID_STRIDE(i, n) gx[i] = kern::Pow::bwd(x[i], p, g[i]);
}

// ---- gather / scatter-add along a dim ---------------------------------------------------------
template <class T>
__global__ void gather_kernel(T* dst, const T* src, const int64_t* idx, int64_t sd, LoopPlan p) {
    MOEKD_GRID_STRIDE(i, p.numel) dst[plan_offset(p, 0, i)] = src[plan_offset(p, 1, i) + idx[plan_offset(p, 2, i)] * sd];
}

/// Line l of the plan's shape along `dim`: its three operand offsets at position 0 of the dim.
MOEKD_HD inline void line_base(const LoopPlan& p, int dim, int64_t l, int64_t base[3]) {
    for (int k = 0; k < 3; ++k) base[k] = p.offset[k];
    for (int d = p.rank - 1; d >= 0; --d) {
        if (d == dim) continue;
        const int64_t c = l % p.shape[d];
        l /= p.shape[d];
        for (int k = 0; k < 3; ++k) base[k] += c * p.stride[k][d];
    }
}

template <class T>
__global__ void scatter_add_kernel(T* dst, const int64_t* idx, const T* src, int64_t sd, int dim, int64_t skip,
                                   int64_t lines, LoopPlan p) {
    MOEKD_GRID_STRIDE(l, lines) {
        int64_t b[3];
        line_base(p, dim, l, b);
        for (int64_t j = 0; j < p.shape[dim]; ++j) {
            const int64_t v = idx[b[1] + j * p.stride[1][dim]];
            if (v != skip) dst[b[0] + v * sd] += src[b[2] + j * p.stride[2][dim]];
        }
    }
}

// ---- where / compare / logic -----------------------------------------------------------------
template <class T>
__global__ void where_kernel(T* out, const uint8_t* cond, const T* a, const T* b, T av, T bv, LoopPlan p) {
    MOEKD_GRID_STRIDE(i, p.numel) {
        const bool c = cond[plan_offset(p, 1, i)] != 0;
        out[plan_offset(p, 0, i)] = c ? (a ? a[plan_offset(p, 2, i)] : av) : (b ? b[plan_offset(p, 3, i)] : bv);
    }
}
template <class T>
__global__ void compare_kernel(CompareOp op, uint8_t* c, const T* a, const T* b, LoopPlan p) {
    MOEKD_GRID_STRIDE(i, p.numel)
    c[plan_offset(p, 0, i)] = kern::compare(op, a[plan_offset(p, 1, i)], b[plan_offset(p, 2, i)]) ? 1 : 0;
}
__global__ void logic_kernel(LogicOp op, uint8_t* c, const uint8_t* a, const uint8_t* b, LoopPlan p) {
    MOEKD_GRID_STRIDE(i, p.numel)
    c[plan_offset(p, 0, i)] = kern::logic(op, a[plan_offset(p, 1, i)], b ? b[plan_offset(p, 2, i)] : 0) ? 1 : 0;
}

// ---- max / min over rows (a block per row) ------------------------------------------------------
template <class T>
__global__ void extreme_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n, bool is_max) {
    __shared__ T smem[kBlock];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * n;
        T best = row[0];
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) best = kern::extreme_fold(best, row[i], is_max);
        smem[threadIdx.x] = best;
        __syncthreads();
        for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) smem[threadIdx.x] = kern::extreme_fold(smem[threadIdx.x], smem[threadIdx.x + s], is_max);
            __syncthreads();
        }
        if (threadIdx.x == 0) y[r] = smem[0];
        __syncthreads();
    }
}

template <class T>
__global__ void extreme_rows_backward_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
                                             T* __restrict__ gx, int64_t rows, int64_t n) {
    __shared__ int64_t count[kBlock];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * n;
        const T best = y[r];
        int64_t c = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) c += row[i] == best;
        count[threadIdx.x] = c;
        __syncthreads();
        for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) count[threadIdx.x] += count[threadIdx.x + s];
            __syncthreads();
        }
        const int64_t ties = count[0];
        const T share = ties > 0 ? g[r] / static_cast<T>(ties) : T(0);  // NaN row (no ties): no gradient
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) gx[r * n + i] = ties > 0 && row[i] == best ? share : T(0);
        __syncthreads();
    }
}

// ---- argmax / top-k ---------------------------------------------------------------------------
/// A thread per column (o, k) of x read as (outer, n, inner): short columns.
template <class T>
__global__ void argmax_columns_kernel(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner) {
    MOEKD_GRID_STRIDE(c, outer * inner) {
        const T* col = x + (c / inner) * n * inner + c % inner;
        int64_t best = 0;
        for (int64_t j = 1; j < n; ++j)
            if (kern::topk_before(col[j * inner], j, col[best * inner], best)) best = j;
        out[c] = best;
    }
}

/// A block per column: long columns (e.g. a vocabulary); the tree keeps the topk_before winner.
template <class T>
__global__ void argmax_block_kernel(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner) {
    __shared__ T sv[kBlock];
    __shared__ int64_t si[kBlock];
    for (int64_t c = blockIdx.x; c < outer * inner; c += gridDim.x) {
        const T* col = x + (c / inner) * n * inner + c % inner;
        int64_t best = threadIdx.x < n ? int64_t(threadIdx.x) : 0;
        for (int64_t j = best + blockDim.x; j < n; j += blockDim.x)
            if (kern::topk_before(col[j * inner], j, col[best * inner], best)) best = j;
        sv[threadIdx.x] = col[best * inner];
        si[threadIdx.x] = best;
        __syncthreads();
        for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s && kern::topk_before(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
                sv[threadIdx.x] = sv[threadIdx.x + s];
                si[threadIdx.x] = si[threadIdx.x + s];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) out[c] = si[0];
        __syncthreads();
    }
}

/// A thread per column: pick j-th = the best element ranked after pick j-1 (topk_before is a
/// strict total order, so no element is picked twice and no marks are needed).
template <class T>
__global__ void topk_kernel(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner, int64_t k) {
    MOEKD_GRID_STRIDE(c, outer * inner) {
        const int64_t o = c / inner, i = c % inner;
        const T* col = x + o * n * inner + i;
        int64_t prev = -1;
        for (int64_t j = 0; j < k; ++j) {
            int64_t best = -1;
            for (int64_t m = 0; m < n; ++m) {
                if (prev >= 0 && !kern::topk_before(col[prev * inner], prev, col[m * inner], m)) continue;
                if (best < 0 || kern::topk_before(col[m * inner], m, col[best * inner], best)) best = m;
            }
            out[(o * k + j) * inner + i] = best;
            prev = best;
        }
    }
}

// ---- nll_loss ----------------------------------------------------------------------------------
template <class T>
__global__ void nll_rows_kernel(const T* scores, const int64_t* t, T* rows, int64_t N, int64_t C, int64_t ignore) {
    MOEKD_GRID_STRIDE(r, N) rows[r] = t[r] == ignore ? T(0) : -scores[r * C + t[r]];
}
template <class T>
__global__ void nll_backward_kernel(const int64_t* t, const T* g, bool per_row, T divisor, T* gx, int64_t N, int64_t C,
                                    int64_t ignore) {
    MOEKD_GRID_STRIDE(i, N * C) {
        const int64_t r = i / C, c = i % C;
        const T scale = per_row ? g[r] : (divisor > T(0) ? g[0] / divisor : T(0));
        gx[i] = t[r] != ignore && c == t[r] ? -scale : T(0);
    }
}

#undef MOEKD_GRID_STRIDE

void check_launch() { MOEKD_CUDA_CHECK(cudaGetLastError()); }

// ---- the host entries -------------------------------------------------------------------------
template <class T>
void pow_fwd(const T* x, T p, T* y, int64_t n) {
    if (n == 0) return;
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, pow_kernel<T>)(x, p, y, n);
    check_launch();
}
template <class T>
void pow_bwd(const T* x, T p, const T* g, T* gx, int64_t n) {
    if (n == 0) return;
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, pow_backward_kernel<T>)(x, p, g, gx, n);
    check_launch();
}
template <class T>
void gather(T* dst, const T* src, const int64_t* idx, int64_t sd, const LoopPlan& p) {
    if (p.numel == 0) return;
    MOEKD_LAUNCH(grid_for(p.numel), kBlock, 0, 0, gather_kernel<T>)(dst, src, idx, sd, p);
    check_launch();
}
template <class T>
void scatter_add(T* dst, const int64_t* idx, const T* src, int64_t sd, int dim, int64_t skip, const LoopPlan& p) {
    if (p.numel == 0) return;
    const int64_t lines = p.numel / p.shape[dim];
    MOEKD_LAUNCH(grid_for(lines), kBlock, 0, 0, scatter_add_kernel<T>)(dst, idx, src, sd, dim, skip, lines, p);
    check_launch();
}
template <class T>
void where(T* out, const uint8_t* cond, const T* a, const T* b, T av, T bv, const LoopPlan& p) {
    if (p.numel == 0) return;
    MOEKD_LAUNCH(grid_for(p.numel), kBlock, 0, 0, where_kernel<T>)(out, cond, a, b, av, bv, p);
    check_launch();
}
template <class T>
void compare(CompareOp op, uint8_t* c, const T* a, const T* b, const LoopPlan& p) {
    if (p.numel == 0) return;
    MOEKD_LAUNCH(grid_for(p.numel), kBlock, 0, 0, compare_kernel<T>)(op, c, a, b, p);
    check_launch();
}
void logic(LogicOp op, uint8_t* c, const uint8_t* a, const uint8_t* b, const LoopPlan& p) {
    if (p.numel == 0) return;
    MOEKD_LAUNCH(grid_for(p.numel), kBlock, 0, 0, logic_kernel)(op, c, a, b, p);
    check_launch();
}
template <class T>
void extreme_rows(const T* x, T* y, int64_t rows, int64_t n, bool is_max) {
    if (rows == 0) return;
    MOEKD_LAUNCH(rows_grid(rows), kBlock, 0, 0, extreme_rows_kernel<T>)(x, y, rows, n, is_max);
    check_launch();
}
template <class T>
void extreme_rows_backward(const T* x, const T* y, const T* g, T* gx, int64_t rows, int64_t n) {
    if (rows == 0) return;
    MOEKD_LAUNCH(rows_grid(rows), kBlock, 0, 0, extreme_rows_backward_kernel<T>)(x, y, g, gx, rows, n);
    check_launch();
}
template <class T>
void argmax(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner) {
    const int64_t cols = outer * inner;
    if (cols == 0) return;
    if (n >= 1024) MOEKD_LAUNCH(rows_grid(cols), kBlock, 0, 0, argmax_block_kernel<T>)(x, out, outer, n, inner);
    else MOEKD_LAUNCH(grid_for(cols), kBlock, 0, 0, argmax_columns_kernel<T>)(x, out, outer, n, inner);
    check_launch();
}
template <class T>
void topk(const T* x, int64_t* out, int64_t outer, int64_t n, int64_t inner, int64_t k) {
    const int64_t cols = outer * inner;
    if (cols == 0 || k == 0) return;
    MOEKD_LAUNCH(grid_for(cols), kBlock, 0, 0, topk_kernel<T>)(x, out, outer, n, inner, k);
    check_launch();
}
template <class T>
void nll_rows(const T* scores, const int64_t* t, T* rows, T* loss, int64_t N, int64_t C, int64_t ignore,
              double divisor) {
    if (N > 0) {
        MOEKD_LAUNCH(grid_for(N), kBlock, 0, 0, nll_rows_kernel<T>)(scores, t, rows, N, C, ignore);
        check_launch();
    }
    if (loss) MOEKD_CUDA_CHECK((kern::cuda::launch_cross_entropy_reduce<T>(rows, loss, N, divisor)));
}
template <class T>
void nll_backward(const int64_t* t, const T* g, bool per_row, T divisor, T* gx, int64_t N, int64_t C, int64_t ignore) {
    if (N * C == 0) return;
    MOEKD_LAUNCH(grid_for(N * C), kBlock, 0, 0, nll_backward_kernel<T>)(t, g, per_row, divisor, gx, N, C, ignore);
    check_launch();
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.pow = &pow_fwd<T>;
    o.pow_backward = &pow_bwd<T>;
    o.gather = &gather<T>;
    o.scatter_add = &scatter_add<T>;
    o.where = &where<T>;
    o.compare = &compare<T>;
    o.extreme_rows = &extreme_rows<T>;
    o.extreme_rows_backward = &extreme_rows_backward<T>;
    o.argmax = &argmax<T>;
    o.topk = &topk<T>;
    o.nll_rows = &nll_rows<T>;
    o.nll_backward = &nll_backward<T>;
}

}  // namespace

void detail::install_index_ops() {
    install_for<float>();
    install_for<double>();
    DeviceOps<int64_t>::cuda().compare = &compare<int64_t>;  // e.g. eq(ids, pad) on the device
    DeviceOps<uint8_t>::cuda().compare = &compare<uint8_t>;
    DeviceMaskOps::cuda().logic = &logic;
}

}  // namespace moekd::cuda
