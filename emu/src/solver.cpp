// solver.cpp — cuSOLVER's gesvdj for the emulated CUDA build, on Eigen's JacobiSVD (the same
// one-sided Jacobi family as gesvdj). Reference code. info = 0 on success; tolerance and sweep
// limit are recorded but Eigen's own convergence test is used (it iterates to machine precision).
#include <moekd_emu/cusolver.hpp>

#include <Eigen/Core>
#include <Eigen/SVD>

#include <algorithm>

struct cusolverDnContext {
    cudaStream_t stream = nullptr;
};
struct gesvdjInfo {
    double tol = 0;
    int sweeps = 100;
};

namespace {

template <class T>
bool on_device(const T* p, size_t n) {
    return n == 0 || moekd::emu::device_range(p, n * sizeof(T));
}

template <class T>
cusolverStatus_t gesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n, T* a, int lda, T* s,
                        T* u, int ldu, T* v, int ldv, int* info) {
    if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || lda < std::max(1, m)) return CUSOLVER_STATUS_INVALID_VALUE;
    const int p = std::min(m, n), ucols = econ ? p : m, vcols = econ ? p : n;
    const bool vec = jobz == CUSOLVER_EIG_MODE_VECTOR;
    if (vec && (ldu < std::max(1, m) || ldv < std::max(1, n))) return CUSOLVER_STATUS_INVALID_VALUE;
    if (!on_device(a, size_t(lda) * n) || !on_device(s, size_t(p)) || !on_device(info, 1) ||
        (vec && (!on_device(u, size_t(ldu) * ucols) || !on_device(v, size_t(ldv) * vcols))))
        return CUSOLVER_STATUS_INVALID_VALUE;
    moekd::emu::DeviceAccess open{a, s, u, v, info};
    using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    const Mat A = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>(a, m, n, Eigen::OuterStride<>(lda));
    const unsigned opts = !vec ? 0u : econ ? (Eigen::ComputeThinU | Eigen::ComputeThinV)
                                           : (Eigen::ComputeFullU | Eigen::ComputeFullV);
    Eigen::JacobiSVD<Mat> svd(A, opts);
    for (int i = 0; i < p; ++i) s[i] = svd.singularValues()(i);
    if (vec) {
        Eigen::Map<Mat, 0, Eigen::OuterStride<>>(u, m, ucols, Eigen::OuterStride<>(ldu)) = svd.matrixU();
        Eigen::Map<Mat, 0, Eigen::OuterStride<>>(v, n, vcols, Eigen::OuterStride<>(ldv)) = svd.matrixV();
    }
    *info = 0;
    return CUSOLVER_STATUS_SUCCESS;
}

}  // namespace

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* h) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    }
    *h = new cusolverDnContext();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h) {
    delete h;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) {
    if (!moekd::emu::valid_stream(s)) return CUSOLVER_STATUS_INVALID_VALUE;
    h->stream = s;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverGetProperty(libraryPropertyType type, int* value) {
    *value = type == MAJOR_VERSION ? 12 : 0;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateGesvdjInfo(gesvdjInfo_t* p) {
    *p = new gesvdjInfo();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroyGesvdjInfo(gesvdjInfo_t p) {
    delete p;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXgesvdjSetTolerance(gesvdjInfo_t p, double tol) {
    p->tol = tol;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXgesvdjSetMaxSweeps(gesvdjInfo_t p, int sweeps) {
    p->sweeps = sweeps;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSgesvdj_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t, int, int m, int n,
                                              const float*, int, const float*, const float*, int, const float*, int,
                                              int* lwork, gesvdjInfo_t) {
    if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
    *lwork = std::max(1, std::min(m, n));  // unused by the emulation; a real size keeps callers honest
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDgesvdj_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t, int, int m, int n,
                                              const double*, int, const double*, const double*, int, const double*,
                                              int, int* lwork, gesvdjInfo_t) {
    if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
    *lwork = std::max(1, std::min(m, n));
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSgesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n, float* a,
                                   int lda, float* s, float* u, int ldu, float* v, int ldv, float*, int, int* info,
                                   gesvdjInfo_t) {
    return gesvdj(h, jobz, econ, m, n, a, lda, s, u, ldu, v, ldv, info);
}
cusolverStatus_t cusolverDnDgesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n, double* a,
                                   int lda, double* s, double* u, int ldu, double* v, int ldv, double*, int,
                                   int* info, gesvdjInfo_t) {
    return gesvdj(h, jobz, econ, m, n, a, lda, s, u, ldu, v, ldv, info);
}
