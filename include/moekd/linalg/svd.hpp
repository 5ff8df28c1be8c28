// svd.hpp — thin singular value decomposition on the CPU (divide and conquer: LAPACK's ?gesdd from
// OpenBLAS, as torch.linalg.svd on the CPU, or Eigen's BDCSVD in a build without OpenBLAS) and
// the truncation rank of OneS eq. 12, for the SVD-based knowledge gathering of MoE experts.
//
//   auto [U, S, Vt] = linalg::svd(W);            // W: (M, N) -> U (M, K), S (K), Vt (K, N)
//   int64_t k = linalg::truncation_rank(S, 0.9); // smallest k keeping 90% of sum(S)
//   W ~= U[:, :k] diag(S[:k]) Vt[:k, :]
//
// Conventions follow torch.linalg.svd(A, full_matrices=False): K = min(M, N), S descending and
// non-negative, the third factor is V^T ("Vh"), not V. Signs of singular vector pairs are
// whatever the algorithm gives (they are not unique). Batches (..., M, N) are decomposed matrix by
// matrix. No autograd: the outputs carry no history (OneS uses the SVD to initialise weights, not
// inside a loss). With MOEKD_BLAS (the moekd target defines it when it links OpenBLAS, whose
// LAPACK has gesdd) the decomposition is one ?gesdd call per matrix; otherwise Eigen's BDCSVD.
// (BDCSVD is also a heavy template: instantiating it for float and double added about 80 s of
// -O3 compile time to every translation unit that called svd, which is why gesdd comes first.)
// On a CUDA tensor linalg::svd runs cuSOLVER's Jacobi SVD (gesvdj) through the device table (DeviceOps<T>::svd, kernels/linalg.cu), so the same call works on
// both devices.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#if !defined(MOEKD_BLAS)
#include "../core/eigen.hpp"  // first: it silences GCC's AVX-512 false positives for all of Eigen
#include <Eigen/SVD>
#endif

#if defined(MOEKD_BLAS)
// LAPACK's divide-and-conquer SVD (OpenBLAS bundles LAPACK). The trailing size_t is the hidden
// length of the Fortran character argument jobz (gfortran's ABI).
extern "C" {
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
             const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info,
             size_t jobz_len);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info,
             size_t jobz_len);
}
#endif

namespace moekd::linalg {

/// A thin SVD: A = U diag(S) Vt.  A: (..., M, N) -> U: (..., M, K), S: (..., K), Vt: (..., K, N),
/// K = min(M, N). U and Vt have orthonormal columns / rows.
template <class T>
struct SVD {
    Tensor<T> U;
    Tensor<T> S;
    Tensor<T> Vt;
};

namespace detail {

#if defined(MOEKD_BLAS)
template <class T>
void gesdd(const char* jobz, const int* m, const int* n, T* a, const int* lda, T* s, T* u, const int* ldu, T* vt,
           const int* ldvt, T* work, const int* lwork, int* iwork, int* info) {
    if constexpr (std::is_same_v<T, float>) sgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info, 1);
    else dgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info, 1);
}

/// Decomposes one row-major (M, N) matrix at a into u (M, K), s (K), vt (K, N), row-major.
/// LAPACK is column-major: the row-major A is the column-major B = A^T (N, M), and from
/// B = Ub S Vbt follows A = Vbt^T S Ub^T, so LAPACK's vt buffer (K, M) column-major is U (M, K)
/// row-major and its u buffer (N, K) column-major is Vt (K, N) row-major: no copies.
template <class T>
void svd_one(const T* a, int64_t M, int64_t N, T* u, T* s, T* vt) {
    const int64_t K = std::min(M, N);
    if (K == 0) return;
    MOEKD_CHECK(M <= INT32_MAX && N <= INT32_MAX && M * N <= INT32_MAX, "linalg::svd: a (", M, ", ", N,
                ") matrix is too large for LAPACK's 32-bit sizes");
    std::vector<T> b(a, a + M * N);  // gesdd overwrites its input
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    std::vector<int> iwork(8 * static_cast<size_t>(K));
    int info = 0, lwork = -1;
    T query = 0;
    gesdd<T>("S", &m, &n, b.data(), &m, s, vt, &m, u, &k, &query, &lwork, iwork.data(), &info);
    MOEKD_CHECK(info == 0, "linalg::svd: LAPACK gesdd workspace query failed (info ", info, ")");
    lwork = static_cast<int>(query) + 1;
    std::vector<T> work(static_cast<size_t>(lwork));
    gesdd<T>("S", &m, &n, b.data(), &m, s, vt, &m, u, &k, work.data(), &lwork, iwork.data(), &info);
    MOEKD_CHECK(info >= 0, "linalg::svd: LAPACK gesdd rejected argument ", -info);
    MOEKD_CHECK(info == 0, "linalg::svd: the decomposition of a (", M, ", ", N,
                ") matrix did not converge (LAPACK gesdd info ", info, ")");
}
#else
/// Decomposes one row-major (M, N) matrix at a into u (M, K), s (K), vt (K, N), row-major.
template <class T>
void svd_one(const T* a, int64_t M, int64_t N, T* u, T* s, T* vt) {
    using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
    using RowMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
    const int64_t K = std::min(M, N);
    if (K == 0) return;
    // BDCSVD takes the wider side as rows itself; we hand it A as stored (a row-major map).
    Eigen::BDCSVD<Mat> dec(RowMap(a, M, N), Eigen::ComputeThinU | Eigen::ComputeThinV);
    MOEKD_CHECK(dec.info() == Eigen::Success, "linalg::svd: the decomposition of a (", M, ", ", N,
                ") matrix did not converge (NaN or inf in the input?)");
    const auto& U = dec.matrixU();  // (M, K) column-major
    const auto& V = dec.matrixV();  // (N, K) column-major
    for (int64_t k = 0; k < K; ++k) s[k] = dec.singularValues()(k);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) u[i * K + k] = U(i, k);
    // V column-major (N, K) is V^T row-major (K, N): the same bytes.
    std::memcpy(vt, V.data(), sizeof(T) * static_cast<size_t>(K * N));
}
#endif

/// linalg::svd of a device tensor: the same checks, conventions and shapes, each matrix through
/// the device table's `svd` entry (cuSOLVER gesvdj, kernels/linalg.cu); the factors stay on A's
/// device. The finiteness check runs on the device (a host copy is made only to name a bad entry).
template <class T>
SVD<T> svd_device(const Tensor<T>& A) {
    MOEKD_CHECK(A.dim() >= 2, "linalg::svd: A must be a matrix (M, N) or a batch (..., M, N), got shape ",
                A.shape());
    auto* fn = moekd::detail::device_entry(DeviceOps<T>::cuda().svd, "linalg::svd", A.shape());
    const Device dev = A.device();
    const int64_t M = A.size(-2), N = A.size(-1), K = std::min(M, N);
    const Shape batch(A.shape().begin(), A.shape().end() - 2);
    const int64_t nb = numel(batch);
    const Tensor<T> ac = moekd::detail::contiguous_data(A);
    if (ac.numel() > 0) {
        bool finite = true;
        if (auto* rows_finite = DeviceOps<T>::cuda().moe_rows_finite) {
            Tensor<uint8_t> ok = Tensor<uint8_t>::empty({nb * M}, dev);
            rows_finite(ac.data(), nb * M, N, ok.data());
            const Tensor<uint8_t> okh = ok.to(Device::CPU);
            for (int64_t r = 0; r < nb * M && finite; ++r) finite = okh.data()[r] != 0;
        } else {
            finite = false;  // no device check: look on the host
        }
        if (!finite) {
            const Tensor<T> h = ac.to(Device::CPU);
            for (int64_t i = 0, n = h.numel(); i < n; ++i)
                MOEKD_CHECK(std::isfinite(h.data()[i]), "linalg::svd: A of shape ", A.shape(),
                            " has a non-finite entry (", h.data()[i], ") at flat position ", i);
        }
    }
    Shape su = batch, ss = batch, sv = batch;
    su.push_back(M), su.push_back(K);
    ss.push_back(K);
    sv.push_back(K), sv.push_back(N);
    SVD<T> r{Tensor<T>::empty(su, dev), Tensor<T>::empty(ss, dev), Tensor<T>::empty(sv, dev)};
    if (K == 0) return r;
    for (int64_t b = 0; b < nb; ++b)
        fn(ac.data() + b * M * N, M, N, r.U.data() + b * M * K, r.S.data() + b * K, r.Vt.data() + b * K * N);
    return r;
}

}  // namespace detail

/// Thin SVD of A: (M, N) or a batch (..., M, N), any strides, float or double. See the top of
/// this file for the conventions. Throws on NaN/inf input (the decomposition does not converge).
/// A on the GPU: the factors are computed and returned there (cuSOLVER gesvdj through the device
/// table, detail::svd_device); signs of singular vector pairs may differ from the CPU's.
template <class T>
SVD<T> svd(const Tensor<T>& A) {
    static_assert(std::is_floating_point_v<T>, "linalg::svd: float or double");
    if (A.device() != Device::CPU) return detail::svd_device(A);
    MOEKD_CHECK(A.dim() >= 2, "linalg::svd: A must be a matrix (M, N) or a batch (..., M, N), got shape ",
                A.shape());
    const int64_t M = A.size(-2), N = A.size(-1), K = std::min(M, N);
    const Shape batch(A.shape().begin(), A.shape().end() - 2);
    const int64_t nb = numel(batch);
    const Tensor<T> ac = moekd::detail::contiguous_data(A);
    for (int64_t i = 0, n = ac.numel(); i < n; ++i)
        MOEKD_CHECK(std::isfinite(ac.data()[i]), "linalg::svd: A of shape ", A.shape(), " has a non-finite entry (",
                    ac.data()[i], ") at flat position ", i);
    Shape su = batch, ss = batch, sv = batch;
    su.push_back(M), su.push_back(K);
    ss.push_back(K);
    sv.push_back(K), sv.push_back(N);
    SVD<T> r{Tensor<T>::empty(su), Tensor<T>::empty(ss), Tensor<T>::empty(sv)};
    // One matrix after another: the parallelism is OpenBLAS's, inside gesdd (or BDCSVD's GEMMs). (Running
    // matrices on their own threads as well was measured 1.5-2x slower on 2 cores: the threads
    // and OpenBLAS's pool fight over the same cores.)
    for (int64_t b = 0; b < nb; ++b)
        detail::svd_one(ac.data() + b * M * N, M, N, r.U.data() + b * M * K, r.S.data() + b * K,
                        r.Vt.data() + b * K * N);
    return r;
}

/// OneS eq. 12 ("sum of the top K singular values ~= lambda * sum"; the paper writes ~=, we read
/// it as the smallest K >= 1 whose K largest singular values sum to at least lambda * sum(S)). S: (K_max) non-negative (any order; sorted descending here). lambda in (0, 1].
/// lambda = 1 gives the number of singular values up to the last non-zero one; an all-zero S
/// gives 1; an empty S gives 0. Sums are taken in double, largest first.
template <class T>
int64_t truncation_rank(const Tensor<T>& S, double lambda) {
    MOEKD_CHECK(lambda > 0.0 && lambda <= 1.0, "linalg::truncation_rank: lambda = ", lambda,
                " is outside (0, 1]; it is the fraction of the singular value sum to keep");
    MOEKD_CHECK(S.dim() == 1, "linalg::truncation_rank: S must be 1-D singular values, got shape ", S.shape());
    std::vector<T> v = S.to_vector();
    if (v.empty()) return 0;
    for (size_t i = 0; i < v.size(); ++i)
        MOEKD_CHECK(v[i] >= T(0) && std::isfinite(v[i]), "linalg::truncation_rank: singular value ", v[i],
                    " at position ", i, " of S (shape ", S.shape(), ") is negative or not finite");
    std::sort(v.begin(), v.end(), [](T x, T y) { return x > y; });
    double total = 0;
    for (T x : v) total += double(x);
    const double want = lambda * total;
    double acc = 0;
    for (size_t k = 0; k < v.size(); ++k) {
        acc += double(v[k]);
        if (acc >= want) return static_cast<int64_t>(k + 1);
    }
    return static_cast<int64_t>(v.size());  // rounding left acc a hair under want
}

}  // namespace moekd::linalg
