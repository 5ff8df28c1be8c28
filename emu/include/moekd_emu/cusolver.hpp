// moekd_emu/cusolver.hpp — cuSOLVER's Jacobi SVD (gesvdj), answered on the host (Eigen's
// JacobiSVD) in the emulated CUDA build. Column-major; econ = 1 (thin) and econ = 0 both work;
// S is descending as cuSOLVER's. The singular vectors' signs are Eigen's, which may differ from
// the device's: callers must not depend on them (tests/gpu/linalg_gpu_test.cpp compares U S Vt, and
// the singular vectors only up to sign).
#pragma once

#include "runtime.hpp"

enum cusolverStatus_t {
    CUSOLVER_STATUS_SUCCESS = 0,
    CUSOLVER_STATUS_NOT_INITIALIZED = 1,
    CUSOLVER_STATUS_ALLOC_FAILED = 2,
    CUSOLVER_STATUS_INVALID_VALUE = 3,
    CUSOLVER_STATUS_EXECUTION_FAILED = 6,
    CUSOLVER_STATUS_INTERNAL_ERROR = 7,
};
enum cusolverEigMode_t { CUSOLVER_EIG_MODE_NOVECTOR = 0, CUSOLVER_EIG_MODE_VECTOR = 1 };

struct cusolverDnContext;
using cusolverDnHandle_t = cusolverDnContext*;
struct gesvdjInfo;
using gesvdjInfo_t = gesvdjInfo*;

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* h);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s);
cusolverStatus_t cusolverGetProperty(libraryPropertyType type, int* value);
cusolverStatus_t cusolverDnCreateGesvdjInfo(gesvdjInfo_t* p);
cusolverStatus_t cusolverDnDestroyGesvdjInfo(gesvdjInfo_t p);
cusolverStatus_t cusolverDnXgesvdjSetTolerance(gesvdjInfo_t p, double tol);
cusolverStatus_t cusolverDnXgesvdjSetMaxSweeps(gesvdjInfo_t p, int sweeps);

cusolverStatus_t cusolverDnSgesvdj_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n,
                                              const float* a, int lda, const float* s, const float* u, int ldu,
                                              const float* v, int ldv, int* lwork, gesvdjInfo_t p);
cusolverStatus_t cusolverDnDgesvdj_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n,
                                              const double* a, int lda, const double* s, const double* u, int ldu,
                                              const double* v, int ldv, int* lwork, gesvdjInfo_t p);
cusolverStatus_t cusolverDnSgesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n, float* a,
                                   int lda, float* s, float* u, int ldu, float* v, int ldv, float* work, int lwork,
                                   int* info, gesvdjInfo_t p);
cusolverStatus_t cusolverDnDgesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n, double* a,
                                   int lda, double* s, double* u, int ldu, double* v, int ldv, double* work,
                                   int lwork, int* info, gesvdjInfo_t p);
