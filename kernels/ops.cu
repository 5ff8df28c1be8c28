// ops.cu — the CUDA implementations of the op API's device table (core/backend.hpp): fill,
// strided copy, unary forward/backward, broadcasting binary ops, row sums, GEMM, dropout (Philox),
// and the fused SGD / Adam updates.
//
// Written for a GPU: grid-stride loops with adjacent threads on adjacent output elements (so the
// contiguous operand, always the output here, is written coalesced); the row sum is a block per
// row with a shared-memory tree in a fixed order (deterministic: the same input gives the same
// bits), accumulating float in double as the CPU's sum does. Compiled by nvcc into moekd::cuda,
// and by g++ into the emulated backend (emu/), where CI runs it.
#include <moekd/core/backend.hpp>
#include <moekd/cuda/blas.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/norm.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/cuda/softmax.hpp>
#include <moekd/kernels/elementwise.cuh>
#include <moekd/kernels/random.cuh>

#include <type_traits>

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

// softmax / layer_norm / cross-entropy: the row kernels of kernels/softmax.cu and kernels/norm.cu
// (a warp per short row, a block per long row), reached through their raw launchers.
template <class T>
void softmax_fwd(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
    detail::softmax_fwd_raw(x, y, outer, n, inner, log);
}
template <class T>
void softmax_bwd(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
    detail::softmax_grad_raw(y, g, gx, outer, n, inner, log);
}
template <class T>
void layer_norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N, T eps) {
    detail::layer_norm_fwd_raw(x, w, b, y, mean, rstd, M, N, eps);
}
template <class T>
void layer_norm_bwd(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw, T* gb, int64_t M,
                    int64_t N) {
    detail::layer_norm_bwd_raw(x, w, g, mean, rstd, gx, gw, gb, M, N);
}
template <class T>
void cross_entropy_fwd(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                       int64_t C, int64_t ignore_index, T smoothing, double divisor) {
    detail::cross_entropy_fwd_raw(logits, targets, rows, rmax, lsum, loss, N, C, ignore_index, smoothing, divisor);
}
template <class T>
void cross_entropy_bwd(const T* logits, const int64_t* targets, const T* rmax, const T* lsum, const T* g, bool per_row,
                       T divisor, T* gx, int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    detail::cross_entropy_bwd_raw(logits, targets, rmax, lsum, g, per_row, divisor, gx, N, C, ignore_index, smoothing);
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.fill = &fill<T>;
    o.copy = &copy<T>;
    o.unary = &unary<T>;
    o.unary_backward = &unary_backward<T>;
    o.binary = &binary<T>;
    o.sum_rows = &sum_rows<T>;
    o.gemm = &gemm<T>;
    o.softmax = &softmax_fwd<T>;
    o.softmax_backward = &softmax_bwd<T>;
    o.layer_norm = &layer_norm_fwd<T>;
    o.layer_norm_backward = &layer_norm_bwd<T>;
    o.cross_entropy = &cross_entropy_fwd<T>;
    o.cross_entropy_backward = &cross_entropy_bwd<T>;
    o.dropout = &dropout<T>;
    o.dropout_backward = &dropout_backward<T>;
    o.sgd_step = &sgd_step<T>;
    o.adam_step = &adam_step<T>;
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
    install_index_ops();
    install_loss_ops();
    install_moe_ops();
    install_linalg_ops();
    DeviceCopyHooks::cuda().to_device = &to_device;
    DeviceCopyHooks::cuda().to_host = &to_host;
}

}  // namespace moekd::cuda
