// gpu_test.cpp — the CUDA backend's basics through the op API, against the CPU: host<->device
// moves (Tensor::to), the caching allocator, the unary ops (forward and autograd backward) in
// float and double on a shape with a partial last block, add / sub / mul / div / pow (also
// broadcast), and matmul over cuBLAS for every transpose combination (transposed device views, an
// empty inner dim), with gradients. backend_ops_test runs every registry case in double; this
// program adds float, the odd sizes and the views. Compiled by g++ and linked with moekd::cuda:
// the way most programs use the backend.
//
// Needs a GPU. Without one (these build machines: "CUDA driver version is insufficient ...")
// it prints "SKIPPED: ..." and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
// `gpu_test --no-device` runs instead the checks that hold on a machine without a GPU: the
// backend links and starts, reports no device without throwing, fills the device table, and
// fails with moekd::Error where memory is needed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
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
    REQUIRE(got.defined());
    REQUIRE(want.defined());
    REQUIRE(got.shape() == want.shape());
    const std::vector<T> g = got.to_vector(), w = want.to_vector();  // to_vector copies a device tensor back
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        const double d = std::abs(double(g[i]) - double(w[i])) / std::max(1.0, std::abs(double(w[i])));
        worst = std::max(worst, d);
    }
    return worst;
}

template <class T> constexpr double tol() { return sizeof(T) == 4 ? 2e-5 : 1e-12; }

template <class T>
Tensor<T> leaf(Tensor<T> t) {
    t.requires_grad_();
    return t;
}

template <class T>
using Fn = std::function<Tensor<T>(const std::vector<Tensor<T>>&)>;

/// f on CPU leaves and on copies of them on the device, the backward of sum(y * g) on both:
/// the outputs and every input's gradient must agree.
template <class T>
void check_op(const char* name, const Fn<T>& f, const std::vector<Tensor<T>>& inputs, double tolerance) {
    INFO(name << " in " << dtype_name<T>());
    std::vector<Tensor<T>> cpu, dev;
    for (const auto& x : inputs) {
        cpu.push_back(leaf(x.clone().detach()));
        dev.push_back(leaf(x.to(Device::CUDA)));
    }
    const Tensor<T> y = f(cpu), yd = f(dev);
    REQUIRE(yd.device() == Device::CUDA);
    CHECK(max_rel_err(yd, y.detach()) < tolerance);
    Generator gen(7);
    const Tensor<T> g = Tensor<T>::randn(y.shape(), gen);
    sum(y * g).backward();
    sum(yd * g.to(Device::CUDA)).backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
        INFO("gradient of input " << i);
        REQUIRE(dev[i].grad().defined());
        CHECK(dev[i].grad().device() == Device::CUDA);
        CHECK(max_rel_err(dev[i].grad(), cpu[i].grad()) < tolerance);
    }
}

template <class T>
void check_all_unary() {
    Generator gen(1);
    const Shape s{37, 129};  // odd sizes: a partial last block
    const Tensor<T> x = Tensor<T>::randn(s, gen, 0.0, 2.0), xpos = Tensor<T>::rand(s, gen, 0.1, 4.0);
    const auto unary = [](Tensor<T> (*op)(const Tensor<T>&)) {
        return Fn<T>([op](const std::vector<Tensor<T>>& v) { return op(v[0]); });
    };
    check_op<T>("gelu", unary(&moekd::gelu<T>), {x}, tol<T>());
    check_op<T>("sigmoid", unary(&moekd::sigmoid<T>), {x}, tol<T>());
    check_op<T>("exp", unary(&moekd::exp<T>), {x}, tol<T>());
    check_op<T>("tanh", unary(&moekd::tanh<T>), {x}, tol<T>());
    check_op<T>("relu", unary(&moekd::relu<T>), {x}, tol<T>());
    check_op<T>("neg", unary(&moekd::neg<T>), {x}, tol<T>());
    check_op<T>("abs", unary(&moekd::abs<T>), {x}, tol<T>());
    check_op<T>("log", unary(&moekd::log<T>), {xpos}, tol<T>());
    check_op<T>("sqrt", unary(&moekd::sqrt<T>), {xpos}, tol<T>());
    check_op<T>("rsqrt", unary(&moekd::rsqrt<T>), {xpos}, tol<T>());
    // a transposed device view: the op reads it through its strides
    check_op<T>("exp of a transposed view", [](const std::vector<Tensor<T>>& v) { return exp(v[0].t()); }, {x},
                tol<T>());
}

template <class T>
void check_binary() {
    Generator gen(2);
    const Shape s{3, 5, 67};
    const Tensor<T> a = Tensor<T>::randn(s, gen), b = Tensor<T>::randn(s, gen);
    const Tensor<T> col = Tensor<T>::rand({5, 1}, gen, 0.5, 2.0), pos = Tensor<T>::rand(s, gen, 0.1, 3.0);
    using V = std::vector<Tensor<T>>;
    check_op<T>("add", [](const V& v) { return add(v[0], v[1]); }, {a, b}, tol<T>());
    check_op<T>("sub", [](const V& v) { return sub(v[0], v[1]); }, {a, b}, tol<T>());
    check_op<T>("mul", [](const V& v) { return mul(v[0], v[1]); }, {a, b}, tol<T>());
    check_op<T>("div", [](const V& v) { return div(v[0], v[1]); }, {a, col}, tol<T>());  // broadcast, reduced grad
    check_op<T>("mul broadcast", [](const V& v) { return mul(v[1], v[0]); }, {a, col}, tol<T>());
    check_op<T>("pow", [](const V& v) { return pow(v[0], T(2.5)); }, {pos}, tol<T>());
}

// Naive row-major reference in double: op(a) @ op(b).
template <class T>
Tensor<T> matmul_reference(const Tensor<T>& a, const Tensor<T>& b) {
    const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
    Tensor<T> c = Tensor<T>::empty(Shape{m, n});
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t p = 0; p < k; ++p) acc += double(a.at({i, p})) * double(b.at({p, j}));
            c.at({i, j}) = static_cast<T>(acc);
        }
    return c;
}

// matmul(op(a), op(b)) with op a transpose (a transposed view of the stored matrix) or not, on
// both devices: the forward against the CPU op and a naive loop, the gradients against the CPU's.
template <class T>
void check_matmul(int64_t m, int64_t k, int64_t n) {
    Generator gen(3);
    const double gtol = sizeof(T) == 4 ? 1e-4 * std::sqrt(double(k) + 1) : 1e-11;
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            INFO("m " << m << " k " << k << " n " << n << " trans_a " << ta << " trans_b " << tb);
            const Tensor<T> a = Tensor<T>::randn(ta ? Shape{k, m} : Shape{m, k}, gen);
            const Tensor<T> b = Tensor<T>::randn(tb ? Shape{n, k} : Shape{k, n}, gen);
            const auto f = [ta, tb](const std::vector<Tensor<T>>& v) {
                return matmul(ta ? v[0].t() : v[0], tb ? v[1].t() : v[1]);
            };
            check_op<T>("matmul", f, {a, b}, gtol);
            const Tensor<T> c = matmul(ta ? a.to(Device::CUDA).t() : a.to(Device::CUDA),
                                       tb ? b.to(Device::CUDA).t() : b.to(Device::CUDA));
            CHECK(max_rel_err(c, matmul_reference(ta ? a.t() : a, tb ? b.t() : b)) < gtol);
        }
}

}  // namespace

// ---- with a GPU -------------------------------------------------------------------------------

TEST_CASE("Tensor::to moves to the device and back, contiguous and strided", "[cuda]") {
    Generator gen(4);
    const Tensor<float> x = Tensor<float>::randn(Shape{6, 9}, gen);
    const Tensor<float> xd = x.to(Device::CUDA);
    CHECK(xd.device() == Device::CUDA);
    CHECK(xd.requires_grad() == false);
    CHECK(xd.to(Device::CPU).to_vector() == x.to_vector());
    CHECK(xd.to(Device::CUDA).data() == xd.data());                      // already there: itself
    CHECK(x.t().to(Device::CUDA).is_contiguous());                        // a strided host source
    CHECK(x.t().to(Device::CUDA).to(Device::CPU).to_vector() == x.t().contiguous().to_vector());
    CHECK(xd.t().to(Device::CPU).to_vector() == x.t().contiguous().to_vector());  // a strided device view
    CHECK(xd.narrow(1, 2, 4).to(Device::CPU).to_vector() == x.narrow(1, 2, 4).contiguous().to_vector());
    CHECK(Tensor<double>::empty(Shape{0, 3}).to(Device::CUDA).to(Device::CPU).shape() == Shape{0, 3});
    CHECK(xd.to_vector() == x.to_vector());  // to_vector / item copy a device tensor back (as torch)
    const Tensor<int64_t> ids = Tensor<int64_t>::from_vector({3, -1, 7}, {3});
    CHECK(ids.to(Device::CUDA).to_vector() == ids.to_vector());
}

TEST_CASE("the caching allocator reuses freed blocks", "[cuda]") {
    auto& alloc = cuda::CudaAllocator::instance();
    const auto before = cuda::memory_stats();
    { Tensor<float> t = Tensor<float>::empty(Shape{1000, 1000}, Device::CUDA); }
    const auto mid = alloc.stats();
    CHECK(mid.bytes_in_use == before.bytes_in_use);
    CHECK(mid.bytes_cached >= cuda::CudaAllocator::round_size(4000000));
    { Tensor<float> t = Tensor<float>::empty(Shape{1000, 1000}, Device::CUDA); }
    CHECK(cuda::memory_stats().cache_hits == mid.cache_hits + 1);
    cuda::empty_cache();
    CHECK(cuda::memory_stats().bytes_cached == 0);
}

TEST_CASE("unary ops on CUDA tensors match the CPU, forward and backward", "[cuda]") {
    check_all_unary<float>();
    check_all_unary<double>();
}

TEST_CASE("add / sub / mul / div / pow on CUDA tensors match the CPU (also broadcast)", "[cuda]") {
    check_binary<float>();
    check_binary<double>();
}

TEST_CASE("matmul on CUDA tensors (cuBLAS) matches the CPU for every transpose combination", "[cuda]") {
    check_matmul<float>(37, 53, 29);
    check_matmul<double>(37, 53, 29);
    check_matmul<float>(128, 64, 96);
    check_matmul<double>(1, 7, 1);
    // an empty inner dimension: zeros (the gemm entry's k == 0 path)
    const Tensor<float> z = matmul(Tensor<float>::ones({5, 0}, Device::CUDA), Tensor<float>::ones({0, 3}, Device::CUDA));
    CHECK(z.device() == Device::CUDA);
    CHECK(z.to_vector() == std::vector<float>(15, 0.0f));
}

TEST_CASE("ops on CUDA tensors check their inputs as on the CPU", "[cuda]") {
    const Tensor<float> a = Tensor<float>::ones(Shape{2, 3}, Device::CUDA);
    const Tensor<float> b = Tensor<float>::ones(Shape{4, 5}, Device::CUDA);
    CHECK_THROWS_WITH(matmul(a, b), Catch::Contains("(2, 3)") && Catch::Contains("(4, 5)"));
    CHECK_THROWS_WITH(add(a, b), Catch::Contains("not broadcastable"));
    CHECK_THROWS_WITH(matmul(a, Tensor<float>::ones(Shape{3, 2})), Catch::Contains("different devices"));
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
    CHECK_THROWS_AS(Tensor<float>::ones(Shape{4}).to(Device::CUDA), Error);
    CHECK_THROWS_AS(cuda::synchronize(), Error);
    CHECK(cuda::memory_stats().bytes_in_use == 0);
}

TEST_CASE("no device: including <moekd/cuda.hpp> fills the device table without touching CUDA", "[nodevice]") {
    const DeviceOps<float>& f = DeviceOps<float>::cuda();
    const DeviceOps<double>& d = DeviceOps<double>::cuda();
    CHECK((f.fill && f.copy && f.unary && f.unary_backward && f.binary && f.sum_rows && f.gemm));
    CHECK((d.fill && d.copy && d.unary && d.unary_backward && d.binary && d.sum_rows && d.gemm));
    CHECK((DeviceOps<int64_t>::cuda().copy && DeviceOps<uint8_t>::cuda().copy));
    CHECK((DeviceCopyHooks::cuda().to_device && DeviceCopyHooks::cuda().to_host));
    const Tensor<float> x = Tensor<float>::ones(Shape{2, 3});
    CHECK(matmul(x, x.t()).to_vector() == std::vector<float>(4, 3.0f));  // the CPU path is untouched
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
