// matmul_test.cpp — the fast matmul / bmm / linear / detail::gemm paths against the naive
// reference (detail::matmul_reference) in float and double, over square, non-square,
// transposed, strided and broadcast operands; the shape errors; gradients reaching both sides.
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

#include <moekd/autograd/engine.hpp>
#include <moekd/ops/matmul.hpp>

using namespace moekd;

namespace {

template <class T>
constexpr double tol() {
    return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// |got - ref| <= tol * (|ref| + sqrt(K)) elementwise (K: the length of each dot product).
template <class T>
void require_close(const Tensor<T>& got, const Tensor<T>& ref, int64_t K) {
    REQUIRE(got.shape() == ref.shape());
    const auto g = got.to_vector(), r = ref.to_vector();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        const double err = std::abs(double(g[i]) - double(r[i])) / (std::abs(double(r[i])) + std::sqrt(double(K) + 1));
        worst = std::max(worst, err);
    }
    INFO("shape " << got.shape() << " K " << K << " worst scaled error " << worst);
    CHECK(worst <= tol<T>());
}

// (N, K, M) sizes: tiny (Eigen's coefficient path), odd, square and non-square up to ~300
const std::vector<std::array<int64_t, 3>> kSizes = {
    {1, 1, 1}, {1, 7, 1}, {2, 3, 4}, {7, 13, 5}, {17, 1, 9}, {64, 64, 64},
    {100, 37, 1}, {1, 50, 120}, {129, 257, 65}, {300, 200, 150}, {256, 300, 256},
};

}  // namespace

TEMPLATE_TEST_CASE("matmul 2-D equals the reference for plain and transposed operands", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(7);
    for (auto [N, K, M] : kSizes) {
        Tensor<T> a = Tensor<T>::randn({N, K}, gen), b = Tensor<T>::randn({K, M}, gen);
        const Tensor<T> ref = detail::matmul_reference(a, b);
        require_close(matmul(a, b), ref, K);
        // transposed views: column-major maps (no copy)
        Tensor<T> at = detail::contiguous_data(a.t()).t(), bt = detail::contiguous_data(b.t()).t();
        REQUIRE(at.shape() == a.shape());
        require_close(matmul(at, b), ref, K);
        require_close(matmul(a, bt), ref, K);
        require_close(matmul(at, bt), ref, K);
        // strided: a column slice of a wider matrix (row stride > cols)
        Tensor<T> wide = Tensor<T>::randn({N, K + 5}, gen);
        Tensor<T> as = wide.narrow(1, 3, K);
        require_close(matmul(as, b), detail::matmul_reference(as, b), K);
    }
}

TEMPLATE_TEST_CASE("matmul reads operands without a unit stride by copying", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(8);
    // every other column and every other row: neither stride is 1
    Tensor<T> big = Tensor<T>::randn({2 * 33, 2 * 21}, gen);
    Tensor<T> a = detail::as_strided(big, {33, 21}, {2 * 2 * 21, 2}, 0);
    Tensor<T> b = Tensor<T>::randn({21, 40}, gen);
    require_close(matmul(a, b), detail::matmul_reference(a, b), 21);
    // an expanded operand (row stride 0): rows overlap, BLAS cannot take it
    Tensor<T> row = Tensor<T>::randn({1, 21}, gen);
    Tensor<T> e = row.expand({30, 21});
    require_close(matmul(e, b), detail::matmul_reference(e, b), 21);
    require_close(matmul(b.t(), e.t()), detail::matmul_reference(b.t(), e.t()), 21);
}

TEST_CASE("blas_layout maps row-major and transposed views without a copy", "[matmul]") {
    auto l = detail::blas_layout(4, 3, 3, 1);  // contiguous (4, 3)
    CHECK((l.ok && l.row_major && l.ld == 3));
    l = detail::blas_layout(3, 4, 1, 3);  // its transpose
    CHECK((l.ok && !l.row_major && l.ld == 3));
    l = detail::blas_layout(4, 3, 10, 1);  // column slice of a (4, 10)
    CHECK((l.ok && l.row_major && l.ld == 10));
    CHECK(!detail::blas_layout(4, 3, 0, 1).ok);  // expanded rows
    CHECK(!detail::blas_layout(4, 3, 6, 2).ok);  // no unit stride
    l = detail::blas_layout(1, 5, 0, 7);         // a single row with a column stride: column-major
    CHECK((l.ok && !l.row_major && l.ld == 7));
}

TEMPLATE_TEST_CASE("matmul 1-D promotions and batched broadcasting equal the reference", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(9);
    const std::vector<std::pair<Shape, Shape>> cases = {
        {{5}, {5}},           {{5}, {5, 3}},          {{4, 5}, {5}},           {{2, 4, 5}, {5}},
        {{5}, {2, 5, 3}},     {{2, 4, 5}, {5, 3}},    {{4, 5}, {3, 5, 2}},     {{2, 1, 3, 4}, {5, 4, 2}},
        {{3, 1, 6, 7}, {1, 2, 7, 5}}, {{4, 33, 40}, {4, 40, 31}}, {{1, 6, 70}, {8, 70, 9}}, {{0, 3, 4}, {4, 2}},
        {{3, 0}, {0, 4}},
    };
    for (const auto& [sa, sb] : cases) {
        Tensor<T> a = Tensor<T>::randn(sa, gen), b = Tensor<T>::randn(sb, gen);
        const Tensor<T> ref = detail::matmul_reference(a, b);
        INFO(sa << " @ " << sb);
        require_close(matmul(a, b), ref, a.size(-1));
    }
    // hand-checked shapes
    CHECK(matmul(Tensor<T>::ones({5}), Tensor<T>::ones({5})).shape() == Shape{});
    CHECK(matmul(Tensor<T>::ones({5}), Tensor<T>::ones({5})).item() == T(5));
    CHECK(matmul(Tensor<T>::ones({2, 1, 3, 4}), Tensor<T>::ones({5, 4, 2})).shape() == Shape{2, 5, 3, 2});
    CHECK(matmul(Tensor<T>::ones({0, 4}), Tensor<T>::ones({4, 3})).shape() == Shape{0, 3});
    CHECK(matmul(Tensor<T>::ones({3, 0}), Tensor<T>::ones({0, 4})).to_vector() == std::vector<T>(12, T(0)));
}

TEST_CASE("matmul on a tiny hand-computed example", "[matmul]") {
    auto a = Tensor<double>::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
    auto b = Tensor<double>::from_vector({7, 8, 9, 10, 11, 12}, {3, 2});
    CHECK(matmul(a, b).to_vector() == std::vector<double>{58, 64, 139, 154});
    CHECK(matmul(b.t(), a.t()).to_vector() == std::vector<double>{58, 139, 64, 154});
    CHECK(matmul(a, Tensor<double>::from_vector({1, 0, -1})).to_vector() == std::vector<double>{-2, -2});
}

TEMPLATE_TEST_CASE("bmm equals the reference", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(10);
    Tensor<T> a = Tensor<T>::randn({6, 31, 45}, gen), b = Tensor<T>::randn({6, 45, 27}, gen);
    require_close(bmm(a, b), detail::matmul_reference(a, b), 45);
    Tensor<T> at = detail::contiguous_data(a.transpose(1, 2)).transpose(1, 2);
    require_close(bmm(at, b), detail::matmul_reference(a, b), 45);
    // heads split out of a (B, T, H*D) tensor by a permute: strided batch dims
    Tensor<T> q = Tensor<T>::randn({2, 10, 4 * 8}, gen);
    Tensor<T> qh = q.view({2, 10, 4, 8}).permute({0, 2, 1, 3}).reshape({8, 10, 8});
    Tensor<T> kh = Tensor<T>::randn({8, 10, 8}, gen);
    require_close(bmm(qh, kh.transpose(1, 2)), detail::matmul_reference(qh, kh.transpose(1, 2)), 8);
}

TEMPLATE_TEST_CASE("linear equals x @ w^T + b for 1-D, 2-D, 3-D and strided inputs", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(11);
    Tensor<T> w = Tensor<T>::randn({37, 60}, gen), b = Tensor<T>::randn({37}, gen);
    for (const Shape& sx : {Shape{60}, Shape{5, 60}, Shape{3, 7, 60}, Shape{300, 60}}) {
        Tensor<T> x = Tensor<T>::randn(sx, gen);
        const Tensor<T> ref = detail::matmul_reference(x, w.t());
        require_close(linear(x, w), ref, 60);
        require_close(linear(x, w, b), add(ref, b), 60);
    }
    Tensor<T> xt = Tensor<T>::randn({60, 9}, gen).t();  // transposed 2-D input, used in place
    require_close(linear(xt, w, b), add(detail::matmul_reference(xt, w.t()), b), 60);
    Tensor<T> x4 = Tensor<T>::randn({2, 60, 3}, gen).transpose(1, 2);  // non-contiguous 3-D input
    require_close(linear(x4, w, b), add(detail::matmul_reference(x4, w.t()), b), 60);
}

TEMPLATE_TEST_CASE("detail::gemm computes alpha A B + beta C on strided views", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(12);
    const int64_t M = 23, K = 19, N = 31;
    Tensor<T> a = Tensor<T>::randn({K, M}, gen), b = Tensor<T>::randn({K, N}, gen);  // A = a^T
    Tensor<T> c0 = Tensor<T>::randn({M, N}, gen);
    const Tensor<T> ab = detail::matmul_reference(a.t(), b);
    const Tensor<T> want = add(mul(ab, Tensor<T>::scalar(T(0.5))), mul(c0, Tensor<T>::scalar(T(-2))));
    // row-major C
    Tensor<T> c = c0.clone();
    detail::gemm(T(0.5), detail::mat_ref(a).t(), detail::mat_ref(b), T(-2), detail::mat_mut(c));
    require_close(c, want, K);
    // column-major C (a transposed buffer)
    Tensor<T> ct = detail::contiguous_data(c0.t());
    detail::gemm(T(0.5), detail::mat_ref(a).t(), detail::mat_ref(b), T(-2), detail::mat_mut(ct).t());
    require_close(detail::contiguous_data(ct.t()), want, K);
    // C with no unit stride (every other element of a bigger buffer)
    Tensor<T> big = Tensor<T>::zeros({M, 2 * N});
    Tensor<T> cs = detail::as_strided(big, {M, N}, {2 * N, 2}, 0);
    detail::copy_into(cs, c0);
    detail::gemm(T(0.5), detail::mat_ref(a).t(), detail::mat_ref(b), T(-2), detail::mat_mut(cs));
    require_close(detail::contiguous_data(cs), want, K);
    CHECK(big.at({0, 1}) == T(0));  // the gaps are untouched
    // beta = 0 ignores NaNs already in C
    Tensor<T> cn = Tensor<T>::full({M, N}, std::numeric_limits<T>::quiet_NaN());
    detail::gemm(T(1), detail::mat_ref(a).t(), detail::mat_ref(b), T(0), detail::mat_mut(cn));
    require_close(cn, ab, K);
    CHECK_THROWS_WITH(detail::gemm(T(1), detail::mat_ref(a), detail::mat_ref(b), T(0), detail::mat_mut(cn)),
                      Catch::Contains("gemm: (19, 23) @ (19, 31)"));
}

TEST_CASE("matmul, bmm and linear name the op and both shapes in errors", "[matmul]") {
    using T = float;
    auto z = [](Shape s) { return Tensor<T>::zeros(s); };
    CHECK_THROWS_WITH(matmul(z({2, 3}), z({4, 5})), "matmul: (2, 3) @ (4, 5): inner sizes 3 and 4 differ");
    CHECK_THROWS_WITH(matmul(z({3}), z({4})), "matmul: (3,) @ (4,): inner sizes 3 and 4 differ");
    CHECK_THROWS_WITH(matmul(z({2, 3}), z({})), Catch::Contains("matmul: (2, 3) @ (): both operands need"));
    CHECK_THROWS_WITH(matmul(z({2, 3, 4}), z({5, 4, 2})),
                      "matmul: (2, 3, 4) @ (5, 4, 2): batch dims (2,) and (5,) are not broadcastable");
    CHECK_THROWS_WITH(bmm(z({2, 3, 4}), z({4, 5})), Catch::Contains("bmm: (2, 3, 4) @ (4, 5): both operands must be 3-D"));
    CHECK_THROWS_WITH(bmm(z({2, 3, 4}), z({3, 4, 5})), "bmm: (2, 3, 4) @ (3, 4, 5): batch sizes 2 and 3 differ");
    CHECK_THROWS_WITH(bmm(z({2, 3, 4}), z({2, 5, 5})), "bmm: (2, 3, 4) @ (2, 5, 5): inner sizes 4 and 5 differ");
    CHECK_THROWS_WITH(linear(z({8, 3}), z({5, 4})), Catch::Contains("linear: input (8, 3) and weight (5, 4): in_features 3 vs 4"));
    CHECK_THROWS_WITH(linear(z({8, 4}), z({4})), Catch::Contains("the weight must be 2-D"));
    CHECK_THROWS_WITH(linear(z({8, 4}), z({5, 4}), z({4})), Catch::Contains("linear: bias (4,) for weight (5, 4)"));
    CHECK_THROWS_AS(matmul(z({2, 3}), z({4, 5})), moekd::Error);
}

TEST_CASE("gradients of matmul reach both sides with the hand-derived values", "[matmul]") {
    // L = sum(A @ B): dL/dA[i,k] = sum_j B[k,j], dL/dB[k,j] = sum_i A[i,k]
    auto a = Tensor<double>::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
    auto b = Tensor<double>::from_vector({1, -1, 2, 0, 3, 5}, {3, 2});
    a.requires_grad_();
    b.requires_grad_();
    sum(matmul(a, b)).backward();
    CHECK(a.grad().to_vector() == std::vector<double>{0, 2, 8, 0, 2, 8});
    CHECK(b.grad().to_vector() == std::vector<double>{5, 5, 7, 7, 9, 9});
    // only one side requires grad
    auto c = Tensor<double>::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
    auto d = Tensor<double>::from_vector({1, -1, 2, 0, 3, 5}, {3, 2});
    d.requires_grad_();
    sum(matmul(c, d)).backward();
    CHECK(!c.grad().defined());
    CHECK(d.grad().to_vector() == std::vector<double>{5, 5, 7, 7, 9, 9});
}

TEMPLATE_TEST_CASE("batched and linear gradients match the reference products", "[matmul]", float, double) {
    using T = TestType;
    Generator gen(13);
    // batched with broadcasting: grads are summed over the broadcast batch dims
    Tensor<T> a = Tensor<T>::randn({2, 1, 30, 40}, gen), b = Tensor<T>::randn({3, 40, 20}, gen);
    Tensor<T> g = Tensor<T>::randn({2, 3, 30, 20}, gen);
    a.requires_grad_();
    b.requires_grad_();
    matmul(a, b).backward(g);
    const Tensor<T> ga = sum_to(detail::matmul_reference(g, b.detach().transpose(-1, -2)), a.shape());
    const Tensor<T> gb = sum_to(detail::matmul_reference(a.detach().transpose(-1, -2), g), b.shape());
    require_close(a.grad(), ga, 20 * 3);
    require_close(b.grad(), gb, 30 * 2);
    // linear on a 3-D input: grad_w sums over all leading dims, grad_b too
    Tensor<T> x = Tensor<T>::randn({4, 9, 50}, gen), w = Tensor<T>::randn({70, 50}, gen), bias = Tensor<T>::randn({70}, gen);
    Tensor<T> gy = Tensor<T>::randn({4, 9, 70}, gen);
    x.requires_grad_();
    w.requires_grad_();
    bias.requires_grad_();
    linear(x, w, bias).backward(gy);
    const Tensor<T> g2 = gy.reshape({36, 70}), x2 = x.detach().reshape({36, 50});
    require_close(x.grad(), detail::matmul_reference(gy, w.detach()), 70);
    require_close(w.grad(), detail::matmul_reference(g2.t(), x2), 36);
    require_close(bias.grad(), sum(g2, {0}), 36);
}
