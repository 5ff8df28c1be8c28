// experts.cu — the device table's grouped-expert-FFN entries (core/backend.hpp; moe::expert_ffn
// in moe/dispatch.hpp, whose per-expert GEMMs are the table's gemm): bias + activation, its
// backward, bias add, the bias-gradient column sums, and the strided-batched GEMM of stacked
// expert weights (cuBLAS), for float and double. The per-element math is kern::bias_act_row /
// kern::act_backward_row of include/moekd/kernels/dispatch.cuh, the functions moe::expert_ffn calls
// on the CPU, here with one element per thread (a row of length 1); column sums are one thread per
// column, rows in order, in double (deterministic). Compiled by nvcc into moekd::cuda, and by g++
// into the emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/dispatch.cuh>
#include <moekd/kernels/elementwise.cuh>

#include "cublas.hpp"

namespace moekd::cuda {
namespace {

using detail::blas_int;
using detail::cublas_check;
using detail::cublas_handle;

using kern::cuda::grid_for;

// h, a: (n, F); b: (F) or null.
template <class Act, class T>
__global__ void bias_act_kernel(T* __restrict__ h, const T* __restrict__ b, T* __restrict__ a, int64_t count,
                                int64_t F) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
        kern::bias_act_row<Act>(h + i, b ? b + i % F : static_cast<const T*>(nullptr), 1, a + i);
}

template <class T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t count, int64_t D) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
        y[i] += b[i % D];
}

template <class Act, class T>
__global__ void act_backward_kernel(const T* __restrict__ h, const T* __restrict__ a, T* __restrict__ da,
                                    int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
        kern::act_backward_row<Act, T, double>(h + i, a + i, da + i, 1, static_cast<double*>(nullptr));
}

// out[c] = sum_r x[r * C + c], rows in order, in double: one thread per column (coalesced reads).
template <class T>
__global__ void column_sum_kernel(const T* __restrict__ x, int64_t n, int64_t C, T* __restrict__ out) {
    for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
        double s = 0;
        for (int64_t r = 0; r < n; ++r) s += static_cast<double>(x[r * C + c]);
        out[c] = static_cast<T>(s);
    }
}

/// h[i] += b[i % F] (b may be null); a[i] = act(h[i]) over n * F elements.
template <class T>
void bias_act_raw(T* h, const T* b, T* a, int64_t n, int64_t F, bool gelu) {
    const int64_t count = n * F;
    if (count == 0) return;
    if (gelu) MOEKD_LAUNCH(grid_for(count, 256), 256, 0, 0, bias_act_kernel<kern::Gelu, T>)(h, b, a, count, F);
    else MOEKD_LAUNCH(grid_for(count, 256), 256, 0, 0, bias_act_kernel<kern::Relu, T>)(h, b, a, count, F);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

/// y[i] += b[i % D] over n * D elements.
template <class T>
void add_bias_raw(T* y, const T* b, int64_t n, int64_t D) {
    const int64_t count = n * D;
    if (count == 0) return;
    MOEKD_LAUNCH(grid_for(count, 256), 256, 0, 0, add_bias_kernel<T>)(y, b, count, D);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

/// da[i] = act'(h[i]) * da[i] over count elements (in place).
template <class T>
void act_backward_raw(const T* h, const T* a, T* da, int64_t count, bool gelu) {
    if (count == 0) return;
    if (gelu) MOEKD_LAUNCH(grid_for(count, 256), 256, 0, 0, act_backward_kernel<kern::Gelu, T>)(h, a, da, count);
    else MOEKD_LAUNCH(grid_for(count, 256), 256, 0, 0, act_backward_kernel<kern::Relu, T>)(h, a, da, count);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

/// out[c] = sum over rows r (in order, in double) of x[r * C + c].  x: (n, C), out: (C).
template <class T>
void column_sum_raw(const T* x, int64_t n, int64_t C, T* out) {
    if (C == 0) return;
    MOEKD_LAUNCH(grid_for(C, 128), 128, 0, 0, column_sum_kernel<T>)(x, n, C, out);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

cublasStatus_t strided_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                               const float* alpha, const float* a, int lda, long long sa, const float* b, int ldb,
                               long long sb, const float* beta, float* c, int ldc, long long sc, int batch) {
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}
cublasStatus_t strided_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                               const double* alpha, const double* a, int lda, long long sa, const double* b, int ldb,
                               long long sb, const double* beta, double* c, int ldc, long long sc, int batch) {
    return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}

/// `batch` row-major GEMMs C_i (m, n) = op(A_i) op(B_i) (beta 0), X_i = x + i * stride_x, through
/// cublas{S,D}gemmStridedBatched (operands swapped for column-major, as the gemm entry does).
template <class T>
void gemm_strided_batched_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                              int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T* c, int64_t ldc,
                              int64_t stride_c, int64_t batch) {
    const char* op = "expert_ffn (strided-batched GEMM)";
    if (m == 0 || n == 0 || batch == 0) return;
    MOEKD_CHECK(k > 0, op, ": an empty inner dimension");
    const T one(1), zero(0);
    // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first, then A
    cublas_check(strided_batched(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 blas_int(n, op), blas_int(m, op), blas_int(k, op), &one, b, blas_int(ldb, op),
                                 stride_b, a, blas_int(lda, op), stride_a, &zero, c, blas_int(ldc, op), stride_c,
                                 blas_int(batch, op)),
                 "cublasXgemmStridedBatched", __FILE__, __LINE__);
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.moe_bias_act = &bias_act_raw<T>;
    o.moe_add_bias = &add_bias_raw<T>;
    o.moe_act_backward = &act_backward_raw<T>;
    o.moe_column_sum = &column_sum_raw<T>;
    o.moe_gemm_strided_batched = &gemm_strided_batched_raw<T>;
}

}  // namespace

void detail::install_expert_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
