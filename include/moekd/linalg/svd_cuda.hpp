// svd_cuda.hpp — thin SVD of device matrices through cuSOLVER's Jacobi SVD (gesvdj), returning
// the same linalg::SVD struct, with the same conventions, as the CPU linalg::svd (svd.hpp).
//
// Compiled only under nvcc or in code built against the CUDA backend (MOEKD_CUDA=1, i.e. linking
// moekd::cuda, which brings cuSOLVER); elsewhere this header is empty, so including it is
// always safe.
//
// cuSOLVER is column-major. A row-major (M, N) matrix read as column-major is A^T (N x M), so we
// decompose A^T = U' S V'^T, i.e. A = V' S U'^T: U' (N x K column-major) has exactly the bytes of
// Vt (K, N) row-major, and V' (M x K column-major) is U^T, transposed into U (M, K) by cuBLAS geam.
//
//   auto d = moekd::linalg::cuda::svd(moekd::cuda::to_device(W));   // W: (M, N) -> d.U, d.S, d.Vt on the GPU
#pragma once

#if defined(__CUDACC__) || (defined(MOEKD_CUDA) && MOEKD_CUDA)

#include <cusolverDn.h>

#include <algorithm>
#include <type_traits>

#include "../cuda/allocator.hpp"
#include "../cuda/blas.hpp"
#include "../cuda/error.hpp"
#include "svd.hpp"

namespace moekd::linalg::cuda {
namespace detail {

inline void cusolver_check(cusolverStatus_t st, const char* call, const char* file, int line) {
    if (st == CUSOLVER_STATUS_SUCCESS) return;
    throw Error(msg("cuSOLVER error: status ", static_cast<int>(st), " in ", call, " [", file, ":", line, "]"));
}
#define MOEKD_CUSOLVER_CHECK(call) ::moekd::linalg::cuda::detail::cusolver_check((call), #call, __FILE__, __LINE__)

/// This thread's cuSOLVER dense handle (made on first use, destroyed at thread exit).
inline cusolverDnHandle_t cusolver_handle() {
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
inline void transpose(const float* a, int lda, float* c, int ldc, int rows, int cols) {
    const float one = 1.f, zero = 0.f;
    moekd::cuda::detail::cublas_check(cublasSgeam(moekd::cuda::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, cols,
                                                  &one, a, lda, &zero, c, ldc, c, ldc),
                                      "cublasSgeam", __FILE__, __LINE__);
}
inline void transpose(const double* a, int lda, double* c, int ldc, int rows, int cols) {
    const double one = 1.0, zero = 0.0;
    moekd::cuda::detail::cublas_check(cublasDgeam(moekd::cuda::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, cols,
                                                  &one, a, lda, &zero, c, ldc, c, ldc),
                                      "cublasDgeam", __FILE__, __LINE__);
}

/// Thin SVD of one contiguous row-major (M, N) device matrix at a (left unchanged) into u (M, K),
/// s (K) and vt (K, N), row-major device buffers, K = min(M, N): the body of linalg::cuda::svd,
/// and the device table's `svd` entry (kernels/linalg.cu) that linalg::svd calls on CUDA tensors.
template <class T>
void svd_raw(const T* a_in, int64_t M, int64_t N, T* u, T* s, T* vt, double tol = 0.0, int max_sweeps = 100,
             const char* op = "linalg::cuda::svd") {
    const int64_t K = std::min(M, N);
    if (K == 0) return;
    const int m = moekd::cuda::detail::blas_int(N, op), n = moekd::cuda::detail::blas_int(M, op);
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
                host_info > 0 ? " (did not converge within the sweep limit; raise max_sweeps or tol)"
                              : " (invalid argument)");
    // U (M, K) row-major is K x M column-major (ldc = K) = (V')^T, V' being M x K (lda = M).
    transpose(vprime.data(), n, u, static_cast<int>(K), static_cast<int>(K), n);
}

}  // namespace detail

/// Thin SVD of a contiguous device matrix A: (M, N) on Device::CUDA, float or double.
/// Returns U (M, K), S (K), Vt (K, N) on the GPU, K = min(M, N), S descending (as linalg::svd).
/// tol / max_sweeps: gesvdj's convergence tolerance (0: machine precision) and sweep limit.
/// Throws moekd::Error when gesvdj reports a bad argument or no convergence (info != 0).
/// (linalg::svd of a CUDA tensor calls the same code through the device table, any strides and batches.)
template <class T>
SVD<T> svd(const Tensor<T>& A, double tol = 0.0, int max_sweeps = 100) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "linalg::cuda::svd: float or double");
    const char* op = "linalg::cuda::svd";
    MOEKD_CHECK(A.defined() && A.dim() == 2, op, ": A must be a 2-D matrix (M, N)", A.defined() ? ", got shape " : "",
                A.defined() ? msg(A.shape()) : std::string());
    MOEKD_CHECK(A.device() == Device::CUDA, op, ": A of shape ", A.shape(), " is on ", A.device(),
                "; copy it with cuda::to_device() first, or use linalg::svd on the CPU");
    MOEKD_CHECK(A.is_contiguous(), op, ": A of shape ", A.shape(), " with strides ", A.strides(),
                " must be contiguous");
    const int64_t M = A.size(0), N = A.size(1), K = std::min(M, N);
    (void)moekd::cuda::detail::blas_int(N, op), (void)moekd::cuda::detail::blas_int(M, op);
    SVD<T> r{Tensor<T>::empty({M, K}, Device::CUDA), Tensor<T>::empty({K}, Device::CUDA),
             Tensor<T>::empty({K, N}, Device::CUDA)};
    detail::svd_raw<T>(A.data(), M, N, r.U.data(), r.S.data(), r.Vt.data(), tol, max_sweeps, op);
    return r;
}

}  // namespace moekd::linalg::cuda

#endif
