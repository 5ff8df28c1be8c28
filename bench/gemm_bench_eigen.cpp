// gemm_bench_eigen.cpp — the "Eigen without BLAS" side of bench/gemm_bench.cpp, in its own
// translation unit: built with -O3 -march=native -fopenmp against Eigen3::Eigen only, never with
// EIGEN_USE_BLAS (the moekd target adds that define, so this file must not see moekd::moekd).
// Eigen's own GEMM kernels, parallelised by OpenMP, are what a user gets from plain Eigen.
#ifdef EIGEN_USE_BLAS
#error "gemm_bench_eigen.cpp measures Eigen's own GEMM: build it without EIGEN_USE_BLAS"
#endif

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

void bench_eigen_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    Eigen::setNbThreads(n);
}

int bench_eigen_threads() { return Eigen::nbThreads(); }

int bench_omp_max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// c: (n, n) = a: (n, n) @ b: (n, n) (or @ b^T with trans_b), all row-major.
void bench_eigen_sgemm(int n, const float* a, const float* b, float* c, bool trans_b) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<const Mat> A(a, n, n), B(b, n, n);
    Eigen::Map<Mat> C(c, n, n);
    if (trans_b) C.noalias() = A * B.transpose();
    else C.noalias() = A * B;
}
