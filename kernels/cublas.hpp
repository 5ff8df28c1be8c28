// cublas.hpp — private to kernels/*.cu: the cuBLAS pieces the device table's implementations
// share (kernels/ops.cu's gemm entry, kernels/experts.cu's strided-batched expert GEMMs,
// kernels/linalg.cu's transpose of the SVD factors). Not installed and not on any include path: a
// program multiplies device matrices with moekd::matmul / linear on CUDA tensors.
//
// cuBLAS is column-major; moekd is row-major. A row-major (R, C) matrix read as column-major is
// its transpose, so row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T:
// the operands swap places and nothing is copied.
#pragma once

#include <cublas_v2.h>

#include <climits>
#include <cstdint>

#include <moekd/core/error.hpp>
#include <moekd/cuda/error.hpp>

namespace moekd::cuda::detail {

/// This thread's cuBLAS handle for the current device (made on first use, kept for the process
/// lifetime). Defined in kernels/blas.cu.
cublasHandle_t cublas_handle();

inline void cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    throw Error(msg("cuBLAS error: ", cublasGetStatusString(st), " (", cublasGetStatusName(st), ") in ", call, " [",
                    file, ":", line, "]"));
}

/// Column-major GEMM, C = alpha op(A) op(B) + beta C (cublasSgemm / cublasDgemm, and k == 0 done
/// explicitly). kernels/blas.cu.
void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc);
void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
                   const double* b, int ldb, double beta, double* c, int ldc);

/// v as cuBLAS's int, or an error naming `op` when it does not fit.
inline int blas_int(int64_t v, const char* op) {
    MOEKD_CHECK(v <= INT_MAX, op, ": dimension ", v, " exceeds cuBLAS's 32-bit limit");
    return static_cast<int>(v);
}

}  // namespace moekd::cuda::detail

#define MOEKD_CUBLAS_CHECK(call) ::moekd::cuda::detail::cublas_check((call), #call, __FILE__, __LINE__)
