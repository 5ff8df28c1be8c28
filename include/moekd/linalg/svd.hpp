// svd.hpp — thin singular value decomposition on the CPU (Eigen's divide-and-conquer BDCSVD) and
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
// inside a loss). The moekd target defines EIGEN_USE_BLAS, so the GEMMs inside BDCSVD go to
// OpenBLAS (and so does its parallelism).
// The CUDA counterpart (cuSOLVER gesvdj) is linalg/svd_cuda.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <string>
#include <vector>

#include "../core/eigen.hpp"  // first: it silences GCC's AVX-512 false positives for all of Eigen
#include <Eigen/SVD>

#include "../core/tensor.hpp"

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

}  // namespace detail

/// Thin SVD of A: (M, N) or a batch (..., M, N), any strides, float or double. See the top of
/// this file for the conventions. Throws on NaN/inf input (the decomposition does not converge).
template <class T>
SVD<T> svd(const Tensor<T>& A) {
    static_assert(std::is_floating_point_v<T>, "linalg::svd: float or double");
    MOEKD_CHECK(A.device() == Device::CPU, "linalg::svd: A of shape ", A.shape(), " is on ", A.device(),
                "; for the GPU use linalg::cuda::svd (linalg/svd_cuda.hpp)");
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
    // One matrix after another: the parallelism is OpenBLAS's, inside BDCSVD's GEMMs. (Running
    // matrices on their own threads as well was measured 1.5-2x slower on 2 cores: the threads
    // and OpenBLAS's pool fight over the same cores.)
    for (int64_t b = 0; b < nb; ++b)
        detail::svd_one(ac.data() + b * M * N, M, N, r.U.data() + b * M * K, r.S.data() + b * K,
                        r.Vt.data() + b * K * N);
    return r;
}

/// OneS eq. 12: the smallest K >= 1 whose K largest singular values sum to at least
/// lambda * sum(S). S: (K_max) non-negative (any order; sorted descending here). lambda in (0, 1].
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
