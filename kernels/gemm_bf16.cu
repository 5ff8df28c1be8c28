// gemm_bf16.cu — the device table's bf16 GEMMs (core/backend.hpp: gemm_bf16 and
// moe_gemm_strided_batched_bf16), what matmul / linear / bmm and the expert FFN call on CUDA
// tensors inside a bf16 autocast scope (core/precision.hpp), and the probe behind
// bf16_support(Device::CUDA).
//
// Each operand is packed into a dense bf16 copy (bf16(float) of core/dtype.hpp, round to nearest
// even: the per-element function the CPU's conversion ends in) and multiplied by cublasGemmEx /
// cublasGemmStridedBatchedEx with CUBLAS_COMPUTE_32F, fp32 accumulation into the fp32 C, as
// torch.autocast does on the GPU. Unlike the CPU path, the copies are made per call (a parameter's
// copy is not cached across the products of a step). Float only; compiled by nvcc into
// moekd::cuda and by g++ into the emulated backend (emu/, whose cuBLAS answers the *Ex calls).
#include <moekd/core/backend.hpp>
#include <moekd/core/precision.hpp>
#include <moekd/core/tensor.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/common.cuh>

#include <map>
#include <mutex>

#include "cublas.hpp"

namespace moekd::cuda {
namespace {

using detail::blas_int;
using detail::cublas_check;
using detail::cublas_handle;

// dst = the `count` = batch * rows * cols elements of `batch` row-major (rows, cols) matrices read
// with row stride ld and matrix stride `stride`, packed dense and rounded to bf16.
__global__ void pack_bf16_kernel(const float* __restrict__ src, int64_t rows, int64_t cols, int64_t ld,
                                 int64_t stride, int64_t count, bf16* __restrict__ dst) {
    const int64_t per = rows * cols;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t m = i / per, rc = i - m * per, r = rc / cols, c = rc - r * cols;
        dst[i] = bf16(src[m * stride + r * ld + c]);
    }
}

/// The dense bf16 copy of `batch` stored row-major (rows, cols) matrices, from the caching
/// allocator (freed when the caller's GEMM is queued: every launch is on the default stream).
Tensor<bf16> pack_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
    const int64_t count = batch * rows * cols;
    Tensor<bf16> out = Tensor<bf16>::empty({count}, Device::CUDA);
    if (count == 0) return out;
    MOEKD_LAUNCH(kern::cuda::grid_for(count, 256), 256, 0, 0, pack_bf16_kernel)(src, rows, cols, ld, stride, count,
                                                                                out.data());
    MOEKD_CUDA_CHECK(cudaGetLastError());
    return out;
}

cublasOperation_t op_of(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/// `batch` row-major GEMMs C_i (m, n) = alpha op(A_i) op(B_i) + beta C_i, X_i = x + i * stride_x,
/// k > 0, on bf16 copies of every A_i and B_i: cublasGemmEx for one, cublasGemmStridedBatchedEx
/// for more.
void gemm_bf16_batched(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                       int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float beta,
                       float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
    // the stored matrices: A is (m, k), or (k, m) read transposed; B likewise
    const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    const Tensor<bf16> a16 = pack_bf16(a, ar, ac, lda, stride_a, batch);
    const Tensor<bf16> b16 = pack_bf16(b, br, bc, ldb, stride_b, batch);
    // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first (kernels/cublas.hpp)
    cublasHandle_t h = cublas_handle();
    const int M = blas_int(n, op), N = blas_int(m, op), K = blas_int(k, op), LC = blas_int(ldc, op);
    if (batch == 1)
        cublas_check(cublasGemmEx(h, op_of(tb), op_of(ta), M, N, K, &alpha, b16.data(), CUDA_R_16BF, blas_int(bc, op),
                                  a16.data(), CUDA_R_16BF, blas_int(ac, op), &beta, c, CUDA_R_32F, LC,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx", __FILE__, __LINE__);
    else
        cublas_check(cublasGemmStridedBatchedEx(h, op_of(tb), op_of(ta), M, N, K, &alpha, b16.data(), CUDA_R_16BF,
                                                blas_int(bc, op), br * bc, a16.data(), CUDA_R_16BF, blas_int(ac, op),
                                                ar * ac, &beta, c, CUDA_R_32F, LC, stride_c, blas_int(batch, op),
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmStridedBatchedEx", __FILE__, __LINE__);
}

/// Row-major C (m, n) = alpha op(A) op(B) + beta C on bf16 copies of A and B (the gemm entry's
/// contract, core/backend.hpp).
void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) return DeviceOps<float>::cuda().gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);  // beta C
    gemm_bf16_batched("matmul (bf16)", ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

/// `batch` row-major GEMMs C_i (m, n) = op(A_i) op(B_i) (beta 0), X_i = x + i * stride_x, on
/// bf16 copies (the moe_gemm_strided_batched entry's contract).
void gemm_strided_batched_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                               int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float* c, int64_t ldc,
                               int64_t stride_c, int64_t batch) {
    const char* op = "expert_ffn (bf16 strided-batched GEMM)";
    if (m == 0 || n == 0 || batch == 0) return;
    MOEKD_CHECK(k > 0, op, ": an empty inner dimension");
    gemm_bf16_batched(op, ta, tb, m, n, k, 1.0f, a, lda, stride_a, b, ldb, stride_b, 0.0f, c, ldc, stride_c, batch);
}

/// bf16_support(Device::CUDA): a current device of compute capability 8.0 or later (bf16 tensor
/// cores; PyTorch asks the same of its bf16 GEMMs). Asked once per device.
Bf16Support probe() {
    int count = 0, device = 0;
    if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
        (void)cudaGetLastError();  // clear it: the answer is the message
        return {false, msg("no CUDA device (", cudaGetErrorString(e), ")")};
    }
    if (count == 0) return {false, "no CUDA device (none found)"};
    MOEKD_CUDA_CHECK(cudaGetDevice(&device));
    static std::mutex mu;
    static std::map<int, Bf16Support> known;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = known.find(device); it != known.end()) return it->second;
    cudaDeviceProp p{};
    MOEKD_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    Bf16Support s;
    if (p.major < 8)
        s = {false, msg(p.name, " (compute capability ", p.major, ".", p.minor,
                        ") has no bf16 tensor cores; bf16 GEMMs need 8.0 or later")};
    else
        s = {true, msg("cuBLAS bf16 GEMM (cublasGemmEx, fp32 accumulation) on ", p.name, ", compute capability ",
                       p.major, ".", p.minor)};
    return known.emplace(device, s).first->second;
}

}  // namespace

void detail::install_bf16_ops() {
    DeviceOps<float>& o = DeviceOps<float>::cuda();
    o.gemm_bf16 = &gemm_bf16;
    o.moe_gemm_strided_batched_bf16 = &gemm_strided_batched_bf16;
    moekd::detail::cuda_bf16_probe() = &probe;
}

}  // namespace moekd::cuda
