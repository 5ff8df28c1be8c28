// gpu_test.cpp — the CUDA backend against the CPU path: elementwise kernels (forward and
// backward) and cuBLAS GEMM on random inputs, host<->device copies, the caching allocator.
// Compiled by g++ and linked with moekd::cuda: the way most programs will use the backend.
//
// Needs a GPU. Without one (these build machines: "CUDA driver version is insufficient ...")
// it prints "SKIPPED: ..." and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
// `gpu_test --no-device` runs instead the checks that hold on a machine without a GPU: the
// backend links and starts, reports no device without throwing, and fails with moekd::Error.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <moekd/cuda.hpp>
#include <moekd/ops/matmul.hpp>
#include <moekd/tensor.hpp>

#include "gpu_main.hpp"

using namespace moekd;

namespace {

template <class T>
double max_rel_err(const Tensor<T>& got, const Tensor<T>& want) {
    REQUIRE(got.shape() == want.shape());
    const std::vector<T> g = got.to_vector(), w = want.to_vector();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        const double d = std::abs(double(g[i]) - double(w[i])) / std::max(1.0, std::abs(double(w[i])));
        worst = std::max(worst, d);
    }
    return worst;
}

template <class T> constexpr double tol() { return sizeof(T) == 4 ? 2e-5 : 1e-12; }

// CPU forward and autograd backward of one unary op vs the device kernels on the same inputs.
template <class F, class T, class CpuOp>
void check_unary(CpuOp cpu_op, Tensor<T> x, const char* name) {
    INFO(name << " in " << dtype_name<T>());
    Generator gen(7);
    Tensor<T> g = Tensor<T>::randn(x.shape(), gen);
    x.requires_grad_();
    Tensor<T> y = cpu_op(x);
    y.backward(g);
    const Tensor<T> xd = cuda::to_device(x.detach()), gd = cuda::to_device(g);
    const Tensor<T> yd = cuda::unary<F>(xd);
    CHECK(yd.device() == Device::CUDA);
    CHECK(max_rel_err(cuda::to_cpu(yd), y.detach()) < tol<T>());
    const Tensor<T> gxd = cuda::unary_backward<F>(xd, yd, gd);
    CHECK(max_rel_err(cuda::to_cpu(gxd), x.grad()) < tol<T>());
}

template <class T>
void check_all_unary() {
    Generator gen(1);
    const Shape s{37, 129};  // odd sizes: a partial last block
    const auto x = [&] { return Tensor<T>::randn(s, gen, 0.0, 2.0); };
    const auto xpos = [&] { return Tensor<T>::rand(s, gen, 0.1, 4.0); };
    check_unary<kern::Gelu, T>([](const Tensor<T>& v) { return gelu(v); }, x(), "gelu");
    check_unary<kern::Sigmoid, T>([](const Tensor<T>& v) { return sigmoid(v); }, x(), "sigmoid");
    check_unary<kern::Exp, T>([](const Tensor<T>& v) { return exp(v); }, x(), "exp");
    check_unary<kern::Tanh, T>([](const Tensor<T>& v) { return tanh(v); }, x(), "tanh");
    check_unary<kern::Relu, T>([](const Tensor<T>& v) { return relu(v); }, x(), "relu");
    check_unary<kern::Neg, T>([](const Tensor<T>& v) { return neg(v); }, x(), "neg");
    check_unary<kern::Abs, T>([](const Tensor<T>& v) { return abs(v); }, x(), "abs");
    check_unary<kern::Log, T>([](const Tensor<T>& v) { return log(v); }, xpos(), "log");
    check_unary<kern::Sqrt, T>([](const Tensor<T>& v) { return sqrt(v); }, xpos(), "sqrt");
    check_unary<kern::Rsqrt, T>([](const Tensor<T>& v) { return rsqrt(v); }, xpos(), "rsqrt");
}

// add and mul: forward by binary<F>; backward is g for add and g * other for mul, which the
// device computes with binary<Mul> and the CPU with autograd.
template <class T>
void check_add_mul() {
    Generator gen(2);
    const Shape s{3, 5, 67};
    Tensor<T> a = Tensor<T>::randn(s, gen), b = Tensor<T>::randn(s, gen), g = Tensor<T>::randn(s, gen);
    a.requires_grad_();
    b.requires_grad_();
    const Tensor<T> ad = cuda::to_device(a.detach()), bd = cuda::to_device(b.detach()), gd = cuda::to_device(g);

    Tensor<T> c = add(a, b);
    c.backward(g);
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Add>(ad, bd)), c.detach()) < tol<T>());
    CHECK(max_rel_err(a.grad(), g) == 0);  // add passes g through: nothing to launch on the device

    a.zero_grad();
    b.zero_grad();
    Tensor<T> m = mul(a, b);
    m.backward(g);
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Mul>(ad, bd)), m.detach()) < tol<T>());
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Mul>(gd, bd)), a.grad()) < tol<T>());
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Mul>(gd, ad)), b.grad()) < tol<T>());

    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Sub>(ad, bd)), sub(a, b).detach()) < tol<T>());
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Div>(ad, bd)), div(a, b).detach()) < tol<T>());
    // pow(x, p) with a scalar p on the CPU; the device takes p as a tensor of the same shape
    const Tensor<T> x = Tensor<T>::rand(s, gen, 0.1, 3.0);
    CHECK(max_rel_err(cuda::to_cpu(cuda::binary<kern::Pow>(cuda::to_device(x), cuda::to_device(Tensor<T>::full(s, T(2.5))))),
                      pow(x, T(2.5))) < tol<T>());
}

// Naive row-major reference in double: alpha * op(a) @ op(b) + beta * c0.
template <class T>
Tensor<T> gemm_reference(const Tensor<T>& a, const Tensor<T>& b, const Tensor<T>& c0, bool ta, bool tb, double alpha,
                         double beta) {
    const int64_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1), n = tb ? b.size(0) : b.size(1);
    Tensor<T> c = Tensor<T>::empty(Shape{m, n});
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t p = 0; p < k; ++p)
                acc += double(ta ? a.at({p, i}) : a.at({i, p})) * double(tb ? b.at({j, p}) : b.at({p, j}));
            c.at({i, j}) = static_cast<T>(alpha * acc + beta * double(c0.at({i, j})));
        }
    return c;
}

template <class T>
void check_gemm(int64_t m, int64_t k, int64_t n) {
    Generator gen(3);
    const double gtol = sizeof(T) == 4 ? 1e-4 * std::sqrt(double(k) + 1) : 1e-11;
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            INFO("m " << m << " k " << k << " n " << n << " trans_a " << ta << " trans_b " << tb << " "
                      << dtype_name<T>());
            const Tensor<T> a = Tensor<T>::randn(ta ? Shape{k, m} : Shape{m, k}, gen);
            const Tensor<T> b = Tensor<T>::randn(tb ? Shape{n, k} : Shape{k, n}, gen);
            const Tensor<T> c0 = Tensor<T>::randn(Shape{m, n}, gen);
            Tensor<T> cd = cuda::to_device(c0);
            cuda::gemm(cuda::to_device(a), cuda::to_device(b), cd, ta, tb, T(0.5), T(2));
            CHECK(max_rel_err(cuda::to_cpu(cd), gemm_reference(a, b, c0, ta, tb, 0.5, 2.0)) < gtol);
            // the same product through transposed device views (no copy; cuBLAS flips its flag)
            const Tensor<T> at = cuda::to_device(a.t().contiguous()).t(), bt = cuda::to_device(b.t().contiguous()).t();
            Tensor<T> cv = cuda::to_device(c0);
            cuda::gemm(at, bt, cv, ta, tb, T(0.5), T(2));
            CHECK(max_rel_err(cuda::to_cpu(cv), gemm_reference(a, b, c0, ta, tb, 0.5, 2.0)) < gtol);
        }
    const Tensor<T> a = Tensor<T>::randn(Shape{m, k}, gen), b = Tensor<T>::randn(Shape{k, n}, gen);
    const Tensor<T> zero = Tensor<T>::zeros(Shape{m, n});
    const Tensor<T> cd = cuda::to_cpu(cuda::matmul(cuda::to_device(a), cuda::to_device(b)));
    CHECK(max_rel_err(cd, gemm_reference(a, b, zero, false, false, 1.0, 0.0)) < gtol);
    CHECK(max_rel_err(cd, moekd::matmul(a, b).detach()) < gtol);  // the CPU op (Eigen / OpenBLAS)
}

}  // namespace

// ---- with a GPU -------------------------------------------------------------------------------

TEST_CASE("to_device / to_cpu round trip, contiguous and strided", "[cuda]") {
    Generator gen(4);
    const Tensor<float> x = Tensor<float>::randn(Shape{6, 9}, gen);
    const Tensor<float> xd = cuda::to_device(x);
    CHECK(xd.device() == Device::CUDA);
    CHECK(cuda::to_cpu(xd).to_vector() == x.to_vector());
    CHECK(cuda::to_device(x.t()).is_contiguous());
    CHECK(cuda::to_cpu(cuda::to_device(x.t())).to_vector() == x.t().to_vector());  // strided host source
    CHECK(cuda::to_cpu(xd.t()).to_vector() == x.t().to_vector());                  // strided device view
    CHECK(cuda::to_cpu(xd.narrow(1, 2, 4)).to_vector() == x.narrow(1, 2, 4).to_vector());
    CHECK(cuda::to_cpu(cuda::to_device(Tensor<double>::empty(Shape{0, 3}))).shape() == Shape{0, 3});
    CHECK(xd.to_vector() == x.to_vector());  // to_vector / item copy a device tensor back (as torch)
}

TEST_CASE("the caching allocator reuses freed blocks", "[cuda]") {
    auto& alloc = cuda::CudaAllocator::instance();
    const auto before = alloc.stats();
    { Tensor<float> t = Tensor<float>::empty(Shape{1000, 1000}, Device::CUDA); }
    const auto mid = alloc.stats();
    CHECK(mid.bytes_in_use == before.bytes_in_use);
    CHECK(mid.bytes_cached >= cuda::CudaAllocator::round_size(4000000));
    { Tensor<float> t = Tensor<float>::empty(Shape{1000, 1000}, Device::CUDA); }
    CHECK(alloc.stats().cache_hits == mid.cache_hits + 1);
    alloc.empty_cache();
    CHECK(alloc.stats().bytes_cached == 0);
}

TEST_CASE("device unary kernels match the CPU ops, forward and backward", "[cuda]") {
    check_all_unary<float>();
    check_all_unary<double>();
}

TEST_CASE("device add / mul / sub / div / pow match the CPU ops", "[cuda]") {
    check_add_mul<float>();
    check_add_mul<double>();
}

TEST_CASE("cuBLAS gemm matches a naive loop and moekd::matmul for every transpose combination", "[cuda]") {
    check_gemm<float>(37, 53, 29);
    check_gemm<double>(37, 53, 29);
    check_gemm<float>(128, 64, 96);
    check_gemm<double>(1, 7, 1);
    check_gemm<float>(5, 0, 3);  // empty inner dimension: c = beta * c
}

TEST_CASE("device ops check their inputs", "[cuda]") {
    const Tensor<float> a = cuda::to_device(Tensor<float>::ones(Shape{2, 3}));
    const Tensor<float> b = cuda::to_device(Tensor<float>::ones(Shape{4, 5}));
    CHECK_THROWS_WITH(cuda::matmul(a, b), Catch::Contains("(2, 3)") && Catch::Contains("(4, 5)"));
    CHECK_THROWS_WITH(cuda::binary<kern::Add>(a, b), Catch::Contains("do not broadcast"));
    CHECK_THROWS_WITH(cuda::unary<kern::Exp>(a.t()), Catch::Contains("not contiguous"));
    const Tensor<float> c = cuda::to_device(Tensor<float>::ones(Shape{4, 5, 6}));
    CHECK_THROWS_WITH(cuda::matmul(a, c), Catch::Contains("2-D"));
}

// ---- without a GPU (gpu_test --no-device) --------------------------------------------------------

TEST_CASE("no device: the backend starts and reports why", "[nodevice]") {
    CHECK(cuda::device_count() == 0);
    CHECK_FALSE(cuda::no_device_reason().empty());
    const std::string info = cuda::build_info();
    std::cout << "build_info: " << info << "\n";
    CHECK_THAT(info, Catch::Contains("cuBLAS") && Catch::Contains("cuSOLVER") && Catch::Contains("devices: 0"));
}

TEST_CASE("no device: allocating device memory throws moekd::Error with the CUDA error", "[nodevice]") {
    CHECK(DeviceAllocHooks::cuda().allocate != nullptr);  // installed by including <moekd/cuda.hpp>
    CHECK_THROWS_WITH(Tensor<float>::empty(Shape{4}, Device::CUDA), Catch::Contains("CUDA error"));
    CHECK_THROWS_AS(cuda::to_device(Tensor<float>::ones(Shape{4})), Error);
    CHECK_THROWS_AS(cuda::synchronize(), Error);
}

TEST_CASE("no device: device functions reject host tensors before touching CUDA", "[nodevice]") {
    const Tensor<float> x = Tensor<float>::ones(Shape{2, 3});
    CHECK_THROWS_WITH(cuda::unary<kern::Gelu>(x), Catch::Contains("is on cpu") && Catch::Contains("to_device"));
    CHECK_THROWS_WITH(cuda::binary<kern::Mul>(x, x), Catch::Contains("cuda::binary"));
    CHECK_THROWS_WITH(cuda::matmul(x, x.t()), Catch::Contains("cuda::matmul") && Catch::Contains("is on cpu"));
    CHECK_THROWS_WITH(cuda::matmul(Tensor<float>::ones(Shape{3}), x), Catch::Contains("2-D"));
    Tensor<float> c = Tensor<float>::zeros(Shape{2, 2});
    CHECK_THROWS_WITH(cuda::gemm(x, x, c, false, true), Catch::Contains("cuda::gemm") && Catch::Contains("is on cpu"));
}

TEST_CASE("no device: allocator size classes", "[nodevice]") {
    using A = cuda::CudaAllocator;
    CHECK(A::round_size(0) == 512);
    CHECK(A::round_size(513) == 1024);
    CHECK(A::round_size(4096) == 4096);
    CHECK(A::round_size(4097) == 5120);  // 1/8 of 8192
    CHECK(A::round_size(1000000) == 1048576);
}

int main(int argc, char** argv) { return moekd::test::gpu_test_main(argc, argv); }
