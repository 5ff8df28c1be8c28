// linalg.cu — the device table's linalg entries (core/backend.hpp, section "linalg"): the thin SVD
// of one row-major matrix through cuSOLVER's Jacobi SVD (gesvdj), which linalg::svd
// (linalg/svd.hpp) calls for CUDA tensors (any batch, any strides: it hands this entry one
// contiguous matrix at a time), and so the OneS knowledge gathering (linalg/knowledge_gathering.hpp).
// Compiled by nvcc into moekd::cuda, and by g++ into the emulated backend (emu/), whose cuSOLVER
// is answered by emu/src/solver.cpp.
//
// cuSOLVER is column-major. A row-major (M, N) matrix read as column-major is A^T (N x M), so we
// decompose A^T = U' S V'^T, i.e. A = V' S U'^T: U' (N x K column-major) has exactly the bytes of
// Vt (K, N) row-major, and V' (M x K column-major) is U^T, transposed into U (M, K) by cuBLAS geam.
#include <cusolverDn.h>

#include <algorithm>
#include <type_traits>

#include <moekd/core/backend.hpp>
#include <moekd/core/tensor.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>

#include "cublas.hpp"

namespace moekd::cuda {
namespace {

void cusolver_check(cusolverStatus_t st, const char* call, const char* file, int line) {
    if (st == CUSOLVER_STATUS_SUCCESS) return;
    throw Error(msg("cuSOLVER error: status ", static_cast<int>(st), " in ", call, " [", file, ":", line, "]"));
}
#define MOEKD_CUSOLVER_CHECK(call) cusolver_check((call), #call, __FILE__, __LINE__)

/// This thread's cuSOLVER dense handle (made on first use, destroyed at thread exit).
cusolverDnHandle_t cusolver_handle() {
    struct Holder {
        cusolverDnHandle_t h = nullptr;
        ~Holder() {
            if (h) cusolverDnDestroy(h);
        }
    };
    thread_local Holder holder;
    if (!holder.h) MOEKD_CUSOLVER_CHECK(cusolverDnCreate(&holder.h));
    return holder.h;
}

/// RAII for gesvdj's parameters (tolerance, sweeps).
struct GesvdjParams {
    gesvdjInfo_t p = nullptr;
    GesvdjParams() { MOEKD_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&p)); }
    ~GesvdjParams() {
        if (p) cusolverDnDestroyGesvdjInfo(p);
    }
    GesvdjParams(const GesvdjParams&) = delete;
    GesvdjParams& operator=(const GesvdjParams&) = delete;
};

template <class T>
cusolverStatus_t gesvdj_buffer(cusolverDnHandle_t h, int m, int n, const T* a, int lda, const T* s, const T* u,
                               int ldu, const T* v, int ldv, int* lwork, gesvdjInfo_t p) {
    if constexpr (std::is_same_v<T, float>)
        return cusolverDnSgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, lda, s, u, ldu, v, ldv, lwork, p);
    else
        return cusolverDnDgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, lda, s, u, ldu, v, ldv, lwork, p);
}

template <class T>
cusolverStatus_t gesvdj(cusolverDnHandle_t h, int m, int n, T* a, int lda, T* s, T* u, int ldu, T* v, int ldv, T* work,
                        int lwork, int* info, gesvdjInfo_t p) {
    if constexpr (std::is_same_v<T, float>)
        return cusolverDnSgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, lda, s, u, ldu, v, ldv, work, lwork, info, p);
    else
        return cusolverDnDgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, lda, s, u, ldu, v, ldv, work, lwork, info, p);
}

/// C (rows, cols) = A^T, column-major, A (cols, rows) with leading dims lda / ldc (cuBLAS geam).
void transpose(const float* a, int lda, float* c, int ldc, int rows, int cols) {
    const float one = 1.f, zero = 0.f;
    MOEKD_CUBLAS_CHECK(
        cublasSgeam(detail::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, cols, &one, a, lda, &zero, c, ldc, c, ldc));
}
void transpose(const double* a, int lda, double* c, int ldc, int rows, int cols) {
    const double one = 1.0, zero = 0.0;
    MOEKD_CUBLAS_CHECK(
        cublasDgeam(detail::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, cols, &one, a, lda, &zero, c, ldc, c, ldc));
}

/// Thin SVD of one contiguous row-major (M, N) device matrix at a_in (left unchanged) into u (M, K),
/// s (K, descending) and vt (K, N), row-major device buffers, K = min(M, N); gesvdj at machine
/// precision, at most 100 sweeps. Throws when gesvdj reports a bad argument or no convergence.
template <class T>
void svd(const T* a_in, int64_t M, int64_t N, T* u, T* s, T* vt) {
    const char* op = "linalg::svd";
    const double tol = 0.0;
    const int max_sweeps = 100;
    const int64_t K = std::min(M, N);
    if (K == 0) return;
    const int m = detail::blas_int(N, op), n = detail::blas_int(M, op);
    // gesvdj overwrites its input: work on a copy.
    Tensor<T> a = Tensor<T>::empty({M, N}, Device::CUDA);
    MOEKD_CUDA_CHECK(cudaMemcpy(a.data(), a_in, sizeof(T) * static_cast<size_t>(M * N), cudaMemcpyDeviceToDevice));
    Tensor<T> vprime = Tensor<T>::empty({K, M}, Device::CUDA);  // V' column-major (M x K) = U^T row-major
    Tensor<int32_t> info = Tensor<int32_t>::empty({1}, Device::CUDA);
    cusolverDnHandle_t h = cusolver_handle();
    GesvdjParams params;
    MOEKD_CUSOLVER_CHECK(cusolverDnXgesvdjSetTolerance(params.p, tol));
    MOEKD_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(params.p, max_sweeps));
    // A^T is m x n column-major with lda = m; U' is m x K (ldu = m) = Vt; V' is n x K (ldv = n).
    int lwork = 0;
    MOEKD_CUSOLVER_CHECK(gesvdj_buffer<T>(h, m, n, a.data(), m, s, vt, m, vprime.data(), n, &lwork, params.p));
    Tensor<T> work = Tensor<T>::empty({std::max(lwork, 1)}, Device::CUDA);
    MOEKD_CUSOLVER_CHECK(gesvdj<T>(h, m, n, a.data(), m, s, vt, m, vprime.data(), n, work.data(), lwork, info.data(),
                                   params.p));
    int32_t host_info = 0;
    MOEKD_CUDA_CHECK(cudaMemcpy(&host_info, info.data(), sizeof host_info, cudaMemcpyDeviceToHost));
    MOEKD_CHECK(host_info == 0, op, ": gesvdj on a (", M, ", ", N, ") matrix returned info = ", host_info,
                host_info > 0 ? " (did not converge within the sweep limit)" : " (invalid argument)");
    // U (M, K) row-major is K x M column-major (ldc = K) = (V')^T, V' being M x K (lda = M).
    transpose(vprime.data(), n, u, static_cast<int>(K), static_cast<int>(K), n);
}

#undef MOEKD_CUSOLVER_CHECK

}  // namespace

void detail::install_linalg_ops() {
    DeviceOps<float>::cuda().svd = &svd<float>;
    DeviceOps<double>::cuda().svd = &svd<double>;
}

}  // namespace moekd::cuda
