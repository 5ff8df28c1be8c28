// svd_test.cpp — linalg::svd (thin, BDCSVD) reconstructs its input and has orthonormal factors
// for wide and tall matrices and batches; linalg::truncation_rank picks the documented K on
// hand-made spectra; errors name the bad argument.
#include <cmath>

#include <catch2/catch.hpp>

#include <moekd/linalg/svd.hpp>
#include <moekd/ops/view.hpp>

using namespace moekd;
using Catch::Matchers::Contains;

namespace {

/// ||A - U diag(S) Vt||_F / ||A||_F for one (M, N) matrix (double accumulation).
template <class T>
double reconstruction_error(const T* a, const T* u, const T* s, const T* vt, int64_t M, int64_t N) {
    const int64_t K = std::min(M, N);
    double num = 0, den = 0;
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double r = 0;
            for (int64_t k = 0; k < K; ++k) r += double(u[i * K + k]) * double(s[k]) * double(vt[k * N + j]);
            num += (r - double(a[i * N + j])) * (r - double(a[i * N + j]));
            den += double(a[i * N + j]) * double(a[i * N + j]);
        }
    return std::sqrt(num / den);
}

/// max |X X^T - I| for the K rows of X (K, L), row-major with row stride ld and column stride cs.
template <class T>
double orthonormality_error(const T* x, int64_t K, int64_t L, int64_t rs, int64_t cs) {
    double worst = 0;
    for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < K; ++j) {
            double d = 0;
            for (int64_t l = 0; l < L; ++l) d += double(x[i * rs + l * cs]) * double(x[j * rs + l * cs]);
            worst = std::max(worst, std::abs(d - (i == j ? 1.0 : 0.0)));
        }
    return worst;
}

template <class T>
void check_decomposition(const Tensor<T>& A, double tol) {
    const int64_t M = A.size(0), N = A.size(1), K = std::min(M, N);
    auto r = linalg::svd(A);
    REQUIRE(r.U.shape() == Shape{M, K});
    REQUIRE(r.S.shape() == Shape{K});
    REQUIRE(r.Vt.shape() == Shape{K, N});
    const Tensor<T> Ac = A.contiguous();
    CHECK(reconstruction_error(Ac.data(), r.U.data(), r.S.data(), r.Vt.data(), M, N) < tol);
    CHECK(orthonormality_error(r.U.data(), K, M, 1, K) < 10 * tol);  // columns of U
    CHECK(orthonormality_error(r.Vt.data(), K, N, N, 1) < 10 * tol);  // rows of Vt
    for (int64_t k = 0; k < K; ++k) {
        CHECK(r.S.data()[k] >= T(0));
        if (k) CHECK(r.S.data()[k] <= r.S.data()[k - 1]);
    }
}

}  // namespace

TEST_CASE("svd reconstructs a wide 256x1024 float matrix", "[svd]") {
    Generator gen(1);
    check_decomposition(Tensor<float>::randn({256, 1024}, gen), 1e-4);
}

TEST_CASE("svd reconstructs a tall 1024x256 float matrix", "[svd]") {
    Generator gen(2);
    check_decomposition(Tensor<float>::randn({1024, 256}, gen), 1e-4);
}

TEST_CASE("svd in double, square, transposed view, and rank-deficient inputs", "[svd]") {
    Generator gen(3);
    check_decomposition(Tensor<double>::randn({40, 40}, gen), 1e-12);
    check_decomposition(Tensor<double>::randn({30, 17}, gen).t(), 1e-12);  // non-contiguous input
    // rank 2: outer products; singular values beyond 2 vanish
    Tensor<double> u = Tensor<double>::randn({20, 2}, gen), v = Tensor<double>::randn({2, 15}, gen);
    Tensor<double> low = Tensor<double>::zeros({20, 15});
    for (int64_t i = 0; i < 20; ++i)
        for (int64_t j = 0; j < 15; ++j) low.at({i, j}) = u.at({i, 0}) * v.at({0, j}) + u.at({i, 1}) * v.at({1, j});
    auto r = linalg::svd(low);
    CHECK(r.S.data()[1] > 1e-3);
    CHECK(r.S.data()[2] < 1e-10 * r.S.data()[0]);
    CHECK(linalg::truncation_rank(r.S, 1.0 - 1e-9) == 2);
}

TEST_CASE("svd of a diagonal matrix gives its sorted absolute diagonal", "[svd]") {
    Tensor<double> A = Tensor<double>::zeros({3, 4});
    A.at({0, 0}) = 2;
    A.at({1, 1}) = -5;
    A.at({2, 2}) = 1;
    auto r = linalg::svd(A);
    CHECK(r.S.at({0}) == Approx(5.0));
    CHECK(r.S.at({1}) == Approx(2.0));
    CHECK(r.S.at({2}) == Approx(1.0));
    // the first pair carries the sign: u_0 v_0^T = -e_1 e_1^T
    CHECK(r.U.at({1, 0}) * r.Vt.at({0, 1}) == Approx(-1.0));
}

TEST_CASE("svd of a batch decomposes each matrix", "[svd]") {
    Generator gen(4);
    Tensor<float> A = Tensor<float>::randn({3, 2, 24, 10}, gen);
    auto r = linalg::svd(A);
    REQUIRE(r.U.shape() == Shape{3, 2, 24, 10});
    REQUIRE(r.S.shape() == Shape{3, 2, 10});
    REQUIRE(r.Vt.shape() == Shape{3, 2, 10, 10});
    for (int64_t b = 0; b < 6; ++b) {
        CHECK(reconstruction_error(A.data() + b * 240, r.U.data() + b * 240, r.S.data() + b * 10,
                                   r.Vt.data() + b * 100, 24, 10) < 1e-5);
        auto one = linalg::svd(A.reshape({6, 24, 10}).select(0, b));
        for (int64_t k = 0; k < 10; ++k) CHECK(one.S.data()[k] == Approx(r.S.data()[b * 10 + k]).epsilon(1e-6));
    }
}

TEST_CASE("svd errors", "[svd]") {
    CHECK_THROWS_WITH(linalg::svd(Tensor<float>::zeros({5})), Contains("linalg::svd") && Contains("(5,)"));
    Tensor<float> bad = Tensor<float>::ones({3, 3});
    bad.at({1, 2}) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(linalg::svd(bad), Contains("non-finite"));
    auto e = linalg::svd(Tensor<double>::zeros({0, 4}));
    CHECK(e.S.numel() == 0);
}

TEST_CASE("truncation_rank keeps the smallest K reaching lambda of the spectrum", "[svd]") {
    // S = (4, 3, 2, 1): total 10; prefix sums 4, 7, 9, 10.
    Tensor<float> S = Tensor<float>::from_vector({4, 3, 2, 1});
    CHECK(linalg::truncation_rank(S, 0.1) == 1);
    CHECK(linalg::truncation_rank(S, 0.4) == 1);   // 4 >= 4
    CHECK(linalg::truncation_rank(S, 0.41) == 2);
    CHECK(linalg::truncation_rank(S, 0.7) == 2);   // 7 >= 7
    CHECK(linalg::truncation_rank(S, 0.71) == 3);
    CHECK(linalg::truncation_rank(S, 0.9) == 3);
    CHECK(linalg::truncation_rank(S, 0.95) == 4);
    CHECK(linalg::truncation_rank(S, 1.0) == 4);
    // order does not matter: the largest values are taken first
    CHECK(linalg::truncation_rank(Tensor<float>::from_vector({1, 4, 2, 3}), 0.7) == 2);
    // trailing zeros are never needed, even at lambda = 1
    CHECK(linalg::truncation_rank(Tensor<double>::from_vector({5, 0, 0}), 1.0) == 1);
    CHECK(linalg::truncation_rank(Tensor<double>::from_vector({3, 1, 0, 0}), 1.0) == 2);
    // a flat spectrum needs ceil(lambda * n)
    CHECK(linalg::truncation_rank(Tensor<double>::ones({10}), 0.25) == 3);
    // degenerate spectra
    CHECK(linalg::truncation_rank(Tensor<double>::zeros({4}), 0.5) == 1);
    CHECK(linalg::truncation_rank(Tensor<double>::zeros({0}), 0.5) == 0);
}

TEST_CASE("truncation_rank rejects lambda <= 0 or > 1, naming it", "[svd]") {
    Tensor<float> S = Tensor<float>::from_vector({2, 1});
    CHECK_THROWS_WITH(linalg::truncation_rank(S, 0.0), Contains("lambda = 0"));
    CHECK_THROWS_WITH(linalg::truncation_rank(S, 1.5), Contains("lambda = 1.5"));
    CHECK_THROWS_WITH(linalg::truncation_rank(S, -0.2), Contains("lambda = -0.2"));
    CHECK_THROWS_WITH(linalg::truncation_rank(S, std::nan("")), Contains("lambda"));
    CHECK_THROWS_WITH(linalg::truncation_rank(Tensor<float>::from_vector({1, -1}), 0.5), Contains("negative"));
    CHECK_THROWS_WITH(linalg::truncation_rank(Tensor<float>::ones({2, 2}), 0.5), Contains("1-D"));
}
