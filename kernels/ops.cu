// ops.cu — the CUDA implementations of the op API's device table (core/backend.hpp): fill,
// strided copy, unary forward/backward (and silu's own entries), broadcasting binary ops, row
// sums, GEMM, dropout (Philox), and the fused SGD / Adam / LAMB updates.
//
// Written for a GPU: grid-stride loops with adjacent threads on adjacent output elements (so the
// contiguous operand, always the output here, is written coalesced); the row sum is a block per
// row with a shared-memory tree in a fixed order (deterministic: the same input gives the same
// bits), accumulating float in double as the CPU's sum does. Compiled by nvcc into moekd::cuda,
// and by g++ into the emulated backend (emu/), where CI runs it.
#include <moekd/core/backend.hpp>
#include <moekd/core/tensor.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/elementwise.cuh>
#include <moekd/kernels/random.cuh>

#include <type_traits>

#include "cublas.hpp"

namespace moekd::cuda {
namespace {

constexpr unsigned kBlock = 256;

unsigned grid_for(int64_t n) { return kern::cuda::grid_for(n, kBlock); }

template <class T>
__global__ void fill_kernel(T* __restrict__ p, T v, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        p[i] = v;
}

template <class T>
__global__ void copy_kernel(T* dst, const T* src, LoopPlan p) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x)
        dst[plan_offset(p, 0, i)] = src[plan_offset(p, 1, i)];
}

template <class F, class T>
__global__ void binary_kernel(T* c, const T* a, const T* b, LoopPlan p) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x)
        c[plan_offset(p, 0, i)] = F::fwd(a[plan_offset(p, 1, i)], b[plan_offset(p, 2, i)]);
}

/// y[r] = sum of row r (n contiguous elements); a block per row, grid-stride over rows.
template <class T>
__global__ void sum_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
    using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
    __shared__ Acc smem[kBlock];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * n;
        Acc acc = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += row[i];
        smem[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) smem[threadIdx.x] += smem[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) y[r] = static_cast<T>(smem[0]);
        __syncthreads();  // smem is reused by the next row
    }
}

void check_launch(const char* what) { MOEKD_CUDA_CHECK(cudaGetLastError()); (void)what; }

template <class T>
void fill(T* p, T v, int64_t n) {
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, fill_kernel<T>)(p, v, n);
    check_launch("fill");
}

template <class T>
void copy(T* dst, const T* src, const LoopPlan& p) {
    MOEKD_LAUNCH(grid_for(p.numel), kBlock, 0, 0, copy_kernel<T>)(dst, src, p);
    check_launch("copy");
}

// The ten unary ops, one case each (the same list serves forward and backward).
#define MOEKD_UNARY_CASES(CASE)                                                                          \
    CASE(Neg) CASE(Exp) CASE(Log) CASE(Sqrt) CASE(Rsqrt) CASE(Abs) CASE(Tanh) CASE(Sigmoid) CASE(Relu) \
    CASE(Gelu)

template <class T>
void unary(UnaryOp op, const T* x, T* y, int64_t n) {
    switch (op) {
#define MOEKD_UNARY_CASE(F) \
    case UnaryOp::F: MOEKD_CUDA_CHECK((kern::cuda::launch_unary_fwd<kern::F, T>(x, y, n))); return;
        MOEKD_UNARY_CASES(MOEKD_UNARY_CASE)
#undef MOEKD_UNARY_CASE
    }
    throw Error("cuda: unknown unary op");
}

template <class T>
void unary_backward(UnaryOp op, const T* x, const T* y, const T* g, T* gx, int64_t n) {
    switch (op) {
#define MOEKD_UNARY_CASE(F) \
    case UnaryOp::F: MOEKD_CUDA_CHECK((kern::cuda::launch_unary_bwd<kern::F, T>(x, y, g, gx, n))); return;
        MOEKD_UNARY_CASES(MOEKD_UNARY_CASE)
#undef MOEKD_UNARY_CASE
    }
    throw Error("cuda: unknown unary op");
}
#undef MOEKD_UNARY_CASES

// silu has entries of its own (docs/adding_an_op.md's example): the same unary kernels.
template <class T>
void silu(const T* x, T* y, int64_t n) {
    if (n > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_unary_fwd<kern::Silu, T>(x, y, n)));
}
template <class T>
void silu_backward(const T* x, const T* y, const T* g, T* gx, int64_t n) {
    if (n > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_unary_bwd<kern::Silu, T>(x, y, g, gx, n)));
}

template <class T>
void binary(BinaryOp op, T* c, const T* a, const T* b, const LoopPlan& p) {
    const unsigned g = grid_for(p.numel);
    switch (op) {
        case BinaryOp::Add: MOEKD_LAUNCH(g, kBlock, 0, 0, binary_kernel<kern::Add, T>)(c, a, b, p); break;
        case BinaryOp::Sub: MOEKD_LAUNCH(g, kBlock, 0, 0, binary_kernel<kern::Sub, T>)(c, a, b, p); break;
        case BinaryOp::Mul: MOEKD_LAUNCH(g, kBlock, 0, 0, binary_kernel<kern::Mul, T>)(c, a, b, p); break;
        case BinaryOp::Div: MOEKD_LAUNCH(g, kBlock, 0, 0, binary_kernel<kern::Div, T>)(c, a, b, p); break;
    }
    check_launch("binary");
}

template <class T>
void sum_rows(const T* x, T* y, int64_t rows, int64_t n) {
    MOEKD_LAUNCH(kern::cuda::grid_1d(rows), kBlock, 0, 0, sum_rows_kernel<T>)(x, y, rows, n);
    check_launch("sum_rows");
}

/// Row-major C = alpha op(A) op(B) + beta C as the column-major C^T = op(B)^T op(A)^T.
template <class T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
    const char* op = "matmul";
    detail::gemm_colmajor(tb, ta, detail::blas_int(n, op), detail::blas_int(m, op), detail::blas_int(k, op), alpha, b,
                          detail::blas_int(ldb, op), a, detail::blas_int(lda, op), beta, c, detail::blas_int(ldc, op));
}

template <class T>
__global__ void sgd_step_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, int64_t n,
                                kern::SgdStep<T> s) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        kern::sgd_elem(p[i], g[i], buf ? buf + i : nullptr, s);
}

template <class T>
__global__ void adam_step_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                                 int64_t n, kern::AdamStep<T> s) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        kern::adam_elem(p[i], g[i], m[i], v[i], s);
}

// LAMB in two launches of the same grid, lamb_blocks(n) (a function of n only, so the sums do not
// depend on the GPU): pass 1 updates the moments and writes each block's partial sums of p^2 and
// u^2 (u = kern::lamb_direction, in double, a fixed tree); pass 2 has every block reduce those
// partials in one fixed order (the same bits in every block), take the trust ratio and apply
// p -= scale u, recomputing u from m, v and p (the same function of the same values) rather than
// storing it. The norms never leave the device; no float atomics.
constexpr unsigned kLambMaxBlocks = 1024;
unsigned lamb_blocks(int64_t n) {
    const unsigned g = grid_for(n);
    return g < kLambMaxBlocks ? g : kLambMaxBlocks;
}

/// a and b summed over the block (kBlock threads) in a fixed tree; every thread gets the sums.
__device__ inline void block_sum2(double (&smem)[2][kBlock], double& a, double& b) {
    smem[0][threadIdx.x] = a;
    smem[1][threadIdx.x] = b;
    __syncthreads();
    for (unsigned s = kBlock / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            smem[0][threadIdx.x] += smem[0][threadIdx.x + s];
            smem[1][threadIdx.x] += smem[1][threadIdx.x + s];
        }
        __syncthreads();
    }
    a = smem[0][0];
    b = smem[1][0];
}

template <class T>
__global__ void lamb_moments_kernel(const T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                                    T* __restrict__ v, int64_t n, kern::LambStep<T> s, double* __restrict__ partial) {
    __shared__ double smem[2][kBlock];
    double p_sq = 0, u_sq = 0;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        T mi = m[i], vi = v[i];
        const T pi = p[i];
        kern::lamb_moments(g[i], mi, vi, s);
        m[i] = mi;
        v[i] = vi;
        const T u = kern::lamb_direction(pi, mi, vi, s);
        p_sq += double(pi) * pi;
        u_sq += double(u) * u;
    }
    block_sum2(smem, p_sq, u_sq);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = p_sq;
        partial[gridDim.x + blockIdx.x] = u_sq;
    }
}

template <class T>
__global__ void lamb_apply_kernel(T* __restrict__ p, const T* __restrict__ m, const T* __restrict__ v, int64_t n,
                                  kern::LambStep<T> s, const double* __restrict__ partial, unsigned parts) {
    __shared__ double smem[2][kBlock];
    double p_sq = 0, u_sq = 0;
    for (unsigned j = threadIdx.x; j < parts; j += kBlock) {
        p_sq += partial[j];
        u_sq += partial[parts + j];
    }
    block_sum2(smem, p_sq, u_sq);
    const T scale = kern::lamb_scale<T>(s.lr, p_sq, u_sq);
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        T pi = p[i];
        kern::lamb_apply(pi, kern::lamb_direction(pi, m[i], v[i], s), scale);
        p[i] = pi;
    }
}

/// A thread per element: its Philox word decides (kern::dropout_keep), so the mask does not
/// depend on the launch shape.
template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, uint8_t* __restrict__ mask, int64_t n,
                               uint64_t seed, double p, T scale) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const bool keep = kern::dropout_keep(seed, i, p);
        mask[i] = keep ? 1 : 0;
        y[i] = keep ? x[i] * scale : T(0);
    }
}

template <class T>
__global__ void dropout_backward_kernel(const uint8_t* __restrict__ mask, const T* __restrict__ g, T* __restrict__ gx,
                                        int64_t n, T scale) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        gx[i] = mask[i] ? g[i] * scale : T(0);
}

template <class T>
void dropout(const T* x, T* y, uint8_t* mask, int64_t n, uint64_t seed, double p, T scale) {
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, dropout_kernel<T>)(x, y, mask, n, seed, p, scale);
    check_launch("dropout");
}

template <class T>
void dropout_backward(const uint8_t* mask, const T* g, T* gx, int64_t n, T scale) {
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, dropout_backward_kernel<T>)(mask, g, gx, n, scale);
    check_launch("dropout_backward");
}

template <class T>
void sgd_step(T* p, const T* g, T* buf, int64_t n, const kern::SgdStep<T>& s) {
    if (n == 0) return;
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, sgd_step_kernel<T>)(p, g, buf, n, s);
    check_launch("sgd_step");
}

template <class T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, const kern::AdamStep<T>& s) {
    if (n == 0) return;
    MOEKD_LAUNCH(grid_for(n), kBlock, 0, 0, adam_step_kernel<T>)(p, g, m, v, n, s);
    check_launch("adam_step");
}

template <class T>
void lamb_step(T* p, const T* g, T* m, T* v, int64_t n, const kern::LambStep<T>& s) {
    if (n == 0) return;
    const unsigned blocks = lamb_blocks(n);
    // the partial sums, 2 x blocks doubles from the caching allocator (freed after the queued passes)
    Tensor<double> partial = Tensor<double>::empty({2 * int64_t(blocks)}, Device::CUDA);
    MOEKD_LAUNCH(blocks, kBlock, 0, 0, lamb_moments_kernel<T>)(p, g, m, v, n, s, partial.data());
    check_launch("lamb_step");
    MOEKD_LAUNCH(blocks, kBlock, 0, 0, lamb_apply_kernel<T>)(p, m, v, n, s, partial.data(), blocks);
    check_launch("lamb_step");
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.fill = &fill<T>;
    o.copy = &copy<T>;
    o.unary = &unary<T>;
    o.unary_backward = &unary_backward<T>;
    o.silu = &silu<T>;
    o.silu_backward = &silu_backward<T>;
    o.binary = &binary<T>;
    o.sum_rows = &sum_rows<T>;
    o.gemm = &gemm<T>;
    o.dropout = &dropout<T>;
    o.dropout_backward = &dropout_backward<T>;
    o.sgd_step = &sgd_step<T>;
    o.adam_step = &adam_step<T>;
    o.lamb_step = &lamb_step<T>;
}

void to_device(void* dst, const void* src, size_t bytes) {
    MOEKD_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void to_host(void* dst, const void* src, size_t bytes) {
    MOEKD_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

/// The integer element types (indices, masks) move and fill on the device; their math is the
/// index ops' (kernels/index.cu).
template <class T>
void install_storage_ops() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.fill = &fill<T>;
    o.copy = &copy<T>;
}

}  // namespace

void install_ops() {
    install_for<float>();
    install_for<double>();
    install_storage_ops<int64_t>();
    install_storage_ops<uint8_t>();
    // the other kernel files' entries (cuda/ops.hpp lists them)
    detail::install_index_ops();
    detail::install_softmax_ops();
    detail::install_norm_ops();
    detail::install_kl_ops();
    detail::install_relation_ops();
    detail::install_router_ops();
    detail::install_dispatch_ops();
    detail::install_expert_ops();
    detail::install_linalg_ops();
    detail::install_bf16_ops();
    DeviceCopyHooks::cuda().to_device = &to_device;
    DeviceCopyHooks::cuda().to_host = &to_host;
}

}  // namespace moekd::cuda
