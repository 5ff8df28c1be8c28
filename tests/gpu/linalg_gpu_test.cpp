// linalg_gpu_test.cpp — linalg::svd and the OneS knowledge gathering on CUDA tensors against the
// CPU: linalg::svd of a device tensor goes through the device table's `svd` entry (cuSOLVER
// gesvdj, kernels/linalg.cu), so the same calls run on both devices. Checked: the factors stay on
// the device with the CPU's shapes; S matches the CPU's (LAPACK gesdd); U diag(S) Vt reconstructs
// A; U has orthonormal columns and Vt orthonormal rows; tall, wide, square, rank-deficient, empty,
// batched and strided (transposed) inputs, float and double; the singular vectors of random
// matrices equal the CPU's up to sign; NaN input is the CPU's error; gather_weights /
// average_biases of device experts match the CPU's (ranks equal, W_g on the device). Linked with
// moekd::cuda (or moekd::cuda_emu: linalg_gpu_test_emu).
//
// Needs a GPU. Without one it prints "SKIPPED: no CUDA device: <reason>" and exits 77 (ctest:
// skipped). `linalg_gpu_test --no-device` runs the checks that hold without a GPU.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <moekd/cuda.hpp>
#include <moekd/linalg/knowledge_gathering.hpp>
#include <moekd/linalg/svd.hpp>
#include <moekd/tensor.hpp>

#include "gpu_main.hpp"

using namespace moekd;

namespace {

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
    const std::vector<T> x = a.to(Device::CPU).contiguous().to_vector(), y = b.to(Device::CPU).contiguous().to_vector();
    REQUIRE(x.size() == y.size());
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(double(x[i]) - double(y[i])));
    return m;
}

template <class T>
double max_abs(const Tensor<T>& a) {
    double m = 0;
    for (T v : a.to(Device::CPU).contiguous().to_vector()) m = std::max(m, std::abs(double(v)));
    return m;
}

template <class T>
Tensor<T> eye(int64_t n) {
    Tensor<T> I = Tensor<T>::zeros({n, n});
    for (int64_t i = 0; i < n; ++i) I.data()[i * n + i] = T(1);
    return I;
}

template <class T>
double tol() {
    return std::is_same_v<T, float> ? 2e-4 : 1e-10;
}

/// Checks one matrix (M, N) of a (host copies of the device factors): reconstruction, S vs the
/// CPU's, orthonormality.
template <class T>
void check_matrix(const Tensor<T>& A, const Tensor<T>& U, const Tensor<T>& S, const Tensor<T>& Vt,
                  const Tensor<T>& S_cpu) {
    const int64_t M = A.size(0), N = A.size(1), K = std::min(M, N);
    REQUIRE(U.shape() == Shape{M, K});
    REQUIRE(S.shape() == Shape{K});
    REQUIRE(Vt.shape() == Shape{K, N});
    const double scale = std::max(1.0, max_abs(A));
    CHECK(max_abs_diff(S, S_cpu) <= tol<T>() * scale);
    const std::vector<T> s = S.to_vector();
    for (size_t k = 1; k < s.size(); ++k) CHECK(s[k] <= s[k - 1]);
    for (T v : s) CHECK(v >= T(0));
    CHECK(max_abs_diff(matmul(U * S, Vt), A) <= tol<T>() * scale * double(K));
    // orthonormal columns of U / rows of Vt, for the non-zero singular values (a zero one's vectors
    // are still orthonormal from gesvdj, but only where the rank is full is that guaranteed)
    int64_t r = 0;
    for (T v : s) r += double(v) > 1e-5 * double(s.empty() ? T(1) : s[0]);
    const Tensor<T> Ur = U.narrow(1, 0, r).contiguous(), Vr = Vt.narrow(0, 0, r).contiguous();
    CHECK(max_abs_diff(matmul(Ur.transpose(0, 1), Ur), eye<T>(r)) <= tol<T>() * 10);
    CHECK(max_abs_diff(matmul(Vr, Vr.transpose(0, 1)), eye<T>(r)) <= tol<T>() * 10);
}

template <class T>
void svd_case(const Tensor<T>& A_cpu) {
    CAPTURE(A_cpu.shape());
    const Tensor<T> A_dev = A_cpu.to(Device::CUDA);
    const linalg::SVD<T> d = linalg::svd(A_dev);
    const linalg::SVD<T> c = linalg::svd(A_cpu);
    CHECK(d.U.device() == Device::CUDA);
    CHECK(d.S.device() == Device::CUDA);
    CHECK(d.Vt.device() == Device::CUDA);
    REQUIRE(d.U.shape() == c.U.shape());
    REQUIRE(d.S.shape() == c.S.shape());
    REQUIRE(d.Vt.shape() == c.Vt.shape());
    const Tensor<T> A = A_cpu.contiguous();
    const Tensor<T> U = d.U.to(Device::CPU), S = d.S.to(Device::CPU), Vt = d.Vt.to(Device::CPU);
    const int64_t M = A.size(-2), N = A.size(-1);
    const int64_t nb = A.numel() / std::max<int64_t>(1, M * N);
    if (A.dim() == 2) {
        check_matrix(A, U, S, Vt, c.S);
        return;
    }
    const Tensor<T> A3 = A.reshape({nb, M, N}), U3 = U.reshape({nb, M, std::min(M, N)}),
                    S3 = S.reshape({nb, std::min(M, N)}), V3 = Vt.reshape({nb, std::min(M, N), N}),
                    C3 = c.S.reshape({nb, std::min(M, N)});
    for (int64_t b = 0; b < nb; ++b)
        check_matrix<T>(A3.select(0, b).contiguous(), U3.select(0, b).contiguous(), S3.select(0, b).contiguous(),
                        V3.select(0, b).contiguous(), C3.select(0, b).contiguous());
}

template <class T>
void svd_cases() {
    Generator gen(7);
    for (const Shape& s : std::vector<Shape>{{1, 1}, {5, 3}, {3, 5}, {16, 16}, {33, 8}, {8, 40}, {64, 48}})
        svd_case(Tensor<T>::randn(s, gen));
    // batched, and a strided (transposed) view: (2, 3, 6, 4) from (2, 3, 4, 6)
    svd_case(Tensor<T>::randn({2, 3, 6, 4}, gen));
    svd_case(Tensor<T>::randn({2, 3, 4, 6}, gen).transpose(-1, -2));
    // rank 2 (20, 12): an outer-product sum
    const Tensor<T> lr = matmul(Tensor<T>::randn({20, 2}, gen), Tensor<T>::randn({2, 12}, gen));
    svd_case(lr);
    // scaled: large entries
    svd_case(Tensor<T>::randn({9, 7}, gen) * T(1000));
}

TEST_CASE("linalg::svd of a CUDA tensor matches the CPU (S, reconstruction, orthonormality)", "[cuda]") {
    SECTION("float") { svd_cases<float>(); }
    SECTION("double") { svd_cases<double>(); }
}

TEST_CASE("linalg::svd on the device: empty matrices, NaN input", "[cuda]") {
    const linalg::SVD<float> e = linalg::svd(Tensor<float>::zeros({0, 3}, Device::CUDA));
    CHECK(e.U.shape() == Shape{0, 0});
    CHECK(e.S.shape() == Shape{0});
    CHECK(e.Vt.shape() == Shape{0, 3});
    CHECK(e.U.device() == Device::CUDA);

    Tensor<float> bad = Tensor<float>::ones({4, 3});
    bad.data()[7] = std::nanf("");
    CHECK_THROWS_WITH(linalg::svd(bad.to(Device::CUDA)),
                      Catch::Contains("linalg::svd: A of shape (4, 3) has a non-finite entry (nan) at flat position 7"));
    CHECK_THROWS_WITH(linalg::svd(Tensor<float>::ones({3}, Device::CUDA)), Catch::Contains("must be a matrix"));
}

/// A random (M, N) matrix (distinct singular values): each left singular vector of the device's
/// SVD equals the CPU's up to sign.
template <class T>
void sign_case(int64_t M, int64_t N) {
    CAPTURE(M, N);
    Generator gen(31);
    const Tensor<T> A = Tensor<T>::randn({M, N}, gen);
    const linalg::SVD<T> c = linalg::svd(A), d = linalg::svd(A.to(Device::CUDA));
    const int64_t K = std::min(M, N);
    const std::vector<T> u = d.U.to_vector(), uc = c.U.to_vector();
    for (int64_t q = 0; q < K; ++q) {
        double dot = 0;
        for (int64_t i = 0; i < M; ++i) dot += double(u[i * K + q]) * double(uc[i * K + q]);
        CHECK(std::abs(std::abs(dot) - 1.0) < 10 * tol<T>());
    }
}

TEST_CASE("linalg::svd on the device: the singular vectors are the CPU's up to sign", "[cuda]") {
    sign_case<float>(40, 24);
    sign_case<double>(40, 24);
    sign_case<float>(24, 40);
    sign_case<double>(17, 17);
}

template <class T>
void gather_case(int64_t M, int64_t N, int64_t E, double lambda, const std::vector<double>& w) {
    CAPTURE(M, N, E, lambda, w.size());
    Generator gen(11 + uint64_t(M));
    std::vector<Tensor<T>> cpu, dev, bc, bd;
    for (int64_t i = 0; i < E; ++i) {
        // decaying spectra, so the truncation rank is well defined (no ties at the cut)
        Tensor<T> W = Tensor<T>::randn({M, N}, gen);
        const linalg::SVD<T> s = linalg::svd(W);
        std::vector<T> sv = s.S.to_vector();
        for (size_t k = 0; k < sv.size(); ++k) sv[k] = T(std::pow(0.7, double(k)) * (1.0 + 0.1 * double(i)));
        W = matmul(s.U * Tensor<T>::from_vector(sv, {int64_t(sv.size())}), s.Vt).contiguous();
        cpu.push_back(W);
        dev.push_back(W.to(Device::CUDA));
        const Tensor<T> b = Tensor<T>::randn({M}, gen);
        bc.push_back(b);
        bd.push_back(b.to(Device::CUDA));
    }
    const auto gc = linalg::gather_weights(cpu, lambda, w);
    const auto gd = linalg::gather_weights(dev, lambda, w);
    CHECK(gd.weight.device() == Device::CUDA);
    CHECK(gd.ranks == gc.ranks);
    CHECK(gd.full == gc.full);
    CHECK(max_abs_diff(gd.weight, gc.weight) <= tol<T>() * 10 * std::max(1.0, max_abs(gc.weight)));
    CHECK(max_abs_diff(gd.S, gc.S) <= tol<T>() * 10);
    const Tensor<T> mc = linalg::average_biases(bc, w), md = linalg::average_biases(bd, w);
    CHECK(md.device() == Device::CUDA);
    CHECK(max_abs_diff(md, mc) == 0.0);
}

TEST_CASE("gather_weights / average_biases of CUDA experts match the CPU", "[cuda]") {
    SECTION("float") {
        gather_case<float>(16, 8, 4, 0.75, {});
        gather_case<float>(8, 24, 3, 0.9, {0.5, 0.25, 0.25});
    }
    SECTION("double") {
        gather_case<double>(12, 12, 2, 0.6, {});
        gather_case<double>(10, 6, 4, 1.0, {1.0, 2.0, 0.0, 1.0});
    }
    Generator gen(1);
    CHECK_THROWS_WITH(linalg::gather_weights<float>({Tensor<float>::randn({4, 3}, gen).to(Device::CUDA),
                                                     Tensor<float>::randn({4, 3}, gen)},
                                                    0.5),
                      Catch::Contains("all experts must be on one device"));
}

// ---- without a GPU (linalg_gpu_test --no-device) -------------------------------------------------

TEST_CASE("no device: the svd entry is installed, CPU svd is unchanged", "[nodevice]") {
    CHECK(DeviceOps<float>::cuda().svd != nullptr);
    CHECK(DeviceOps<double>::cuda().svd != nullptr);
    Generator gen(5);
    const Tensor<double> A = Tensor<double>::randn({6, 4}, gen);
    const linalg::SVD<double> s = linalg::svd(A);
    CHECK(max_abs_diff(matmul(s.U * s.S, s.Vt), A) < 1e-12);
}

}  // namespace

int main(int argc, char** argv) { return moekd::test::gpu_test_main(argc, argv); }
