// autograd_test.cpp — the engine: accumulation, NoGrad, detach, retain_graph, retain_grad,
// non-scalar backward, shared subexpressions, and reading an intermediate to put a loss on it.
#include <catch2/catch.hpp>

#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

TEST_CASE("gradients accumulate across backward calls until zeroed", "[autograd]") {
    auto x = Tensor<double>::from_vector({1, 2, 3}).requires_grad_();
    sum(x * x).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{2, 4, 6});
    sum(x * 3.0).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{5, 7, 9});
    x.zero_grad();
    CHECK(!x.grad().defined());
    sum(x).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{1, 1, 1});
}

TEST_CASE("a tensor used twice gets both contributions", "[autograd]") {
    auto x = Tensor<double>::from_vector({2.0}).requires_grad_();
    auto y = x * x + exp(x) * x;  // dy/dx = 2x + e^x (1 + x)
    y.backward(Tensor<double>::ones({1}));
    CHECK(x.grad().item() == Approx(4 + std::exp(2.0) * 3));
}

TEST_CASE("NoGrad and detach stop history", "[autograd]") {
    auto x = Tensor<float>::ones({2}).requires_grad_();
    {
        NoGrad ng;
        auto y = x * 2.0f;
        CHECK(!y.requires_grad());
        CHECK(y.is_leaf());
    }
    CHECK(GradMode::enabled());
    auto d = x.detach();
    CHECK(!d.requires_grad());
    CHECK(d.shares_storage(x));
    auto z = sum(x * d);
    z.backward();
    CHECK(x.grad().to_vector() == std::vector<float>{1, 1});  // d is a constant
    CHECK_THROWS_WITH(sum(d).backward(), Contains("does not require grad"));
}

TEST_CASE("backward frees the graph unless retained", "[autograd]") {
    auto x = Tensor<double>::from_vector({1, 2}).requires_grad_();
    auto y = sum(exp(x));
    y.backward(true);  // retain_graph
    y.backward();
    CHECK(x.grad().at({0}) == Approx(2 * std::exp(1.0)));
    CHECK_THROWS_WITH(y.backward(), Contains("already freed"));
}

TEST_CASE("backward on a non-scalar needs a gradient of its shape", "[autograd]") {
    auto x = Tensor<double>::from_vector({1, 2, 3}).requires_grad_();
    auto y = x * 2.0;
    CHECK_THROWS_WITH(y.backward(), Contains("non-scalar tensor of shape (3,)"));
    CHECK_THROWS_WITH(y.backward(Tensor<double>::ones({2})), Contains("gradient of shape (2,)"));
    y.backward(Tensor<double>::from_vector({1, 0, -1}));
    CHECK(x.grad().to_vector() == std::vector<double>{2, 0, -2});
}

TEST_CASE("an intermediate can be read, kept and given its own loss", "[autograd]") {
    // What TCD needs: read a hidden activation mid-model and put an extra loss on it.
    auto w = Tensor<double>::from_vector({0.5, -1.0}).requires_grad_();
    auto x = Tensor<double>::from_vector({1.0, 2.0});
    auto hidden = tanh(x * w);
    hidden.retain_grad();
    auto out = sum(hidden * 3.0);
    auto aux = sum(hidden * hidden);  // a loss on the intermediate
    (out + aux).backward();
    std::vector<double> h = hidden.detach().to_vector();
    for (int i = 0; i < 2; ++i) {
        const double dh = 3.0 + 2 * h[i];
        CHECK(hidden.grad().at({i}) == Approx(dh));
        CHECK(w.grad().at({i}) == Approx(dh * (1 - h[i] * h[i]) * x.at({i})));
    }
}

TEST_CASE("a leaf's gradient never aliases another tensor", "[autograd]") {
    auto a = Tensor<double>::from_vector({1, 2}).requires_grad_();
    auto b = Tensor<double>::from_vector({3, 4}).requires_grad_();
    sum(a + b).backward();
    CHECK(!a.grad().shares_storage(b.grad()));
    a.grad().at({0}) = 100;
    CHECK(b.grad().at({0}) == 1);
}

TEST_CASE("views propagate gradients back to their base", "[autograd][view]") {
    auto x = Tensor<double>::arange(0.0, 6.0, 1.0).reshape({2, 3}).detach().requires_grad_();
    auto y = x.t().narrow(0, 1, 2).unsqueeze(0).expand({4, 2, 2});
    sum(y).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{0, 4, 4, 0, 4, 4});
    CHECK_THROWS_WITH(y.requires_grad_(), Contains("only a leaf"));
}

TEST_CASE("integer tensors carry no gradients", "[autograd]") {
    auto i = Tensor<int64_t>::arange(3);
    CHECK_THROWS_WITH(i.requires_grad_(), Contains("int64 tensors carry no gradients"));
    CHECK((i + i).to_vector() == std::vector<int64_t>{0, 2, 4});
}

TEST_CASE("errors name the op and the shapes", "[autograd][errors]") {
    auto a = Tensor<float>::ones({2, 3});
    auto b = Tensor<float>::ones({4, 3});
    CHECK_THROWS_WITH(a + b, Contains("add: shapes (2, 3) and (4, 3) are not broadcastable"));
    CHECK_THROWS_WITH(a * Tensor<float>::ones({3, 2}), Contains("mul: shapes"));
    CHECK_THROWS_WITH(sum(a, {2}), Contains("sum: dim 2 out of range"));
    CHECK_THROWS_WITH(sum(a, {1, -1}), Contains("repeated"));
    CHECK_THROWS_WITH(var(Tensor<float>::ones({1})), Contains("unbiased needs at least 2"));
}

TEST_CASE("reductions give the right values", "[reduce]") {
    auto x = Tensor<double>::from_vector({1, 5, 3, 4, 2, 6}, {2, 3});
    CHECK(sum(x).item() == 21);
    CHECK(sum(x, {0}).to_vector() == std::vector<double>{5, 7, 9});
    CHECK(sum(x, {1}, true).shape() == Shape{2, 1});
    CHECK(mean(x, {1}).to_vector() == std::vector<double>{3, 4});
    CHECK(max(x, {1}).to_vector() == std::vector<double>{5, 6});
    CHECK(min(x, {0}).to_vector() == std::vector<double>{1, 2, 3});
    CHECK(var(x, {1}).to_vector() == std::vector<double>{4, 4});
    CHECK(var(x, {1}, false).at({0}) == Approx(8.0 / 3));
    CHECK(sum(x.t(), {1}).to_vector() == std::vector<double>{5, 7, 9});
    // ties share the gradient, like torch.amax
    auto t = Tensor<double>::from_vector({2, 2, 1}).requires_grad_();
    max(t).backward();
    CHECK(t.grad().to_vector() == std::vector<double>{0.5, 0.5, 0});
    // float sums accumulate in double: 1e7 ones plus small terms stay exact
    auto big = Tensor<float>::ones({1 << 24});
    CHECK(sum(big).item() == float(1 << 24));
}

TEST_CASE("broadcasting forward values", "[elementwise]") {
    auto a = Tensor<float>::from_vector({1, 2, 3}, {3, 1});
    auto b = Tensor<float>::from_vector({10, 20}, {2});
    auto c = a + b;
    CHECK(c.shape() == Shape{3, 2});
    CHECK(c.to_vector() == std::vector<float>{11, 21, 12, 22, 13, 23});
    CHECK((Tensor<float>::scalar(1) - a).to_vector() == std::vector<float>{0, -1, -2});
    CHECK((a.t() * a).shape() == Shape{3, 3});
    CHECK((2.0f / Tensor<float>::from_vector({4, 8})).to_vector() == std::vector<float>{0.5f, 0.25f});
    CHECK(gelu(Tensor<double>::from_vector({1.0})).item() == Approx(0.8413447460685429));
    CHECK(sigmoid(Tensor<double>::from_vector({-1000.0, 1000.0})).to_vector() == std::vector<double>{0.0, 1.0});
}
