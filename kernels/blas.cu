// blas.cu — the per-thread cuBLAS handle and the column-major GEMM behind the device table's
// gemm entry (kernels/ops.cu, which does the row-major bookkeeping: operand swap, strides).
//
// Host code only; declared in kernels/cublas.hpp, private to kernels/*.cu.
#include <moekd/cuda/runtime.hpp>

#include <unordered_map>

#include "cublas.hpp"

namespace moekd::cuda::detail {

cublasHandle_t cublas_handle() {
    // cuBLAS handles are bound to a device and must not be used by two threads at once. They are
    // kept for the life of the process: destroying them during static destruction can race the
    // runtime's own teardown.
    thread_local std::unordered_map<int, cublasHandle_t>* handles = new std::unordered_map<int, cublasHandle_t>();
    const int device = current_device();
    auto it = handles->find(device);
    if (it != handles->end()) return it->second;
    cublasHandle_t h = nullptr;
    MOEKD_CUBLAS_CHECK(cublasCreate(&h));
    handles->emplace(device, h);
    return h;
}

namespace {

template <class T, class Gemm, class Geam>
void gemm_impl(Gemm gemm_fn, Geam geam_fn, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a,
               int lda, const T* b, int ldb, T beta, T* c, int ldc) {
    cublasHandle_t h = cublas_handle();
    if (m == 0 || n == 0) return;
    if (k == 0) {  // C = beta C; BLAS leaves this case to the implementation, so do it explicitly
        if (beta == T(0)) {
            MOEKD_CUDA_CHECK(cudaMemset2D(c, sizeof(T) * ldc, 0, sizeof(T) * m, n));
        } else {
            const T zero(0);
            MOEKD_CUBLAS_CHECK(geam_fn(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, &beta, c, ldc, &zero, c, ldc, c, ldc));
        }
        return;
    }
    MOEKD_CUBLAS_CHECK(gemm_fn(h, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                               &alpha, a, lda, b, ldb, &beta, c, ldc));
}

}  // namespace

void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc) {
    gemm_impl<float>(cublasSgemm, cublasSgeam, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
                   const double* b, int ldb, double beta, double* c, int ldc) {
    gemm_impl<double>(cublasDgemm, cublasDgeam, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace moekd::cuda::detail
