// index_test.cpp — forward values, gradient bookkeeping and error messages of the index, join
// and select families (ops/index.hpp, ops/join.hpp, ops/select.hpp). The gradients themselves
// are finite-difference checked in tests/op_cases_index.cpp; here: hand-written expectations,
// repeated-index accumulation, padding rows, topk ties, and every bad input we reject.
#include <cmath>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <moekd/autograd/engine.hpp>
#include <moekd/ops/index.hpp>
#include <moekd/ops/join.hpp>
#include <moekd/ops/select.hpp>

using namespace moekd;
using Catch::Contains;
using D = Tensor<double>;
using V = std::vector<double>;
using IV = std::vector<int64_t>;
using MV = std::vector<uint8_t>;

namespace {
IndexTensor ix(IV v, Shape s = {}) { return IndexTensor::from_vector(v, s); }
Tensor<uint8_t> mk(MV v, Shape s = {}) { return Tensor<uint8_t>::from_vector(v, s); }
D dt(V v, Shape s = {}) { return D::from_vector(v, s); }
D leaf(V v, Shape s = {}) {
    D t = dt(v, s);
    t.requires_grad_();
    return t;
}
}  // namespace

// ---- embedding ----------------------------------------------------------------------------------
TEST_CASE("embedding picks rows and scatter-adds their gradients", "[index]") {
    D w = leaf({0, 1, 10, 11, 20, 21, 30, 31}, {4, 2});  // (V=4, D=2)
    IndexTensor ids = ix({2, 0, 2, 3, 2, 1}, {2, 3});
    D y = embedding(w, ids);
    CHECK(y.shape() == Shape{2, 3, 2});
    CHECK(y.to_vector() == V{20, 21, 0, 1, 20, 21, 30, 31, 20, 21, 10, 11});
    sum(y).backward();
    CHECK(w.grad().to_vector() == V{1, 1, 1, 1, 3, 3, 1, 1});  // id 2 appears three times
}

TEST_CASE("embedding: the padding row is read but gets zero gradient", "[index]") {
    D w = leaf({0, 1, 10, 11, 20, 21}, {3, 2});
    D y = embedding(w, ix({1, 0, 1, 2}), 1);
    CHECK(y.to_vector() == V{10, 11, 0, 1, 10, 11, 20, 21});  // forward reads it, as torch
    (y * y).backward(D::ones(y.shape()));
    CHECK(w.grad().to_vector() == V{0, 2, 0, 0, 40, 42});
}

TEST_CASE("embedding of a 0-dim id and float weights", "[index]") {
    Tensor<float> w = Tensor<float>::arange(6.0f).reshape({3, 2});
    Tensor<float> y = embedding(w, IndexTensor::scalar(2));
    CHECK(y.shape() == Shape{2});
    CHECK(y.to_vector() == std::vector<float>{4, 5});
}

TEST_CASE("embedding rejects bad ids and weights", "[index][errors]") {
    D w = D::zeros({5, 2});
    CHECK_THROWS_WITH(embedding(w, ix({0, 1, 5, 2}, {2, 2})),
                      Contains("embedding") && Contains("id 5") && Contains("position (1, 0)") &&
                          Contains("(5, 2)") && Contains("V = 5"));
    CHECK_THROWS_WITH(embedding(w, ix({-1})), Contains("embedding") && Contains("id -1"));
    CHECK_THROWS_WITH(embedding(D::zeros({5}), ix({0})), Contains("embedding") && Contains("2-D"));
    CHECK_THROWS_WITH(embedding(w, ix({0}), 5), Contains("embedding") && Contains("padding_idx 5"));
    CHECK_THROWS_WITH(embedding(w, ix({0}), -2), Contains("padding_idx -2"));
}

// ---- index_select -------------------------------------------------------------------------------
TEST_CASE("index_select along each dim, repeated indices accumulate", "[index]") {
    D x = leaf({0, 1, 2, 3, 4, 5}, {3, 2});
    D y = index_select(x, 0, ix({2, 0, 2}));
    CHECK(y.shape() == Shape{3, 2});
    CHECK(y.to_vector() == V{4, 5, 0, 1, 4, 5});
    sum(y).backward();
    CHECK(x.grad().to_vector() == V{1, 1, 0, 0, 2, 2});

    D z = index_select(x.detach(), -1, ix({1, 1, 0, 1}));
    CHECK(z.shape() == Shape{3, 4});
    CHECK(z.to_vector() == V{1, 1, 0, 1, 3, 3, 2, 3, 5, 5, 4, 5});
    // non-contiguous x and index
    IndexTensor idx = ix({1, 9, 0, 9}).narrow(0, 0, 4);
    IndexTensor strided = detail::as_strided(idx, {2}, {2}, 0);  // values 1, 0
    CHECK(index_select(x.detach().t(), 1, strided).to_vector() == V{2, 0, 3, 1});
    // empty index
    CHECK(index_select(x.detach(), 0, IndexTensor::empty({0})).shape() == Shape{0, 2});
}

TEST_CASE("index_select rejects bad input", "[index][errors]") {
    D x = D::zeros({3, 2});
    CHECK_THROWS_WITH(index_select(x, 0, ix({0, 3})),
                      Contains("index_select") && Contains("index 3") && Contains("position (1,)") &&
                          Contains("(3, 2)"));
    CHECK_THROWS_WITH(index_select(x, 1, ix({-1})), Contains("index_select") && Contains("index -1"));
    CHECK_THROWS_WITH(index_select(x, 0, ix({0, 1}, {1, 2})), Contains("index_select") && Contains("1-D"));
    CHECK_THROWS_WITH(index_select(x, 2, ix({0})), Contains("index_select") && Contains("dim 2"));
    CHECK_THROWS_WITH(index_select(D::scalar(1), 0, ix({0})), Contains("index_select") && Contains("at least 1 dim"));
}

// ---- gather / scatter_add -----------------------------------------------------------------------
TEST_CASE("gather matches torch.gather and scatter-adds its gradient", "[index]") {
    D x = leaf({1, 2, 3, 4}, {2, 2});
    D y = gather(x, 1, ix({0, 0, 1, 0}, {2, 2}));
    CHECK(y.to_vector() == V{1, 1, 4, 3});
    sum(y).backward();
    CHECK(x.grad().to_vector() == V{2, 0, 1, 1});

    // dim 0, index smaller than x in the other dim, larger along dim
    D a = dt({0, 1, 2, 10, 11, 12}, {2, 3});
    D b = gather(a, 0, ix({1, 0, 0, 1, 1, 1}, {3, 2}));
    CHECK(b.shape() == Shape{3, 2});
    CHECK(b.to_vector() == V{10, 1, 0, 11, 10, 11});
    // transposed x and transposed index
    IndexTensor it = ix({0, 1, 2, 0}, {2, 2}).t();  // [[0, 2], [1, 0]]
    CHECK(gather(a.t(), 0, it).to_vector() == V{0, 12, 1, 10});
}

TEST_CASE("gather keeps its own copy of the index for backward", "[index]") {
    D x = leaf({1, 2, 3}, {3});
    IndexTensor idx = ix({2, 2});
    D y = gather(x, 0, idx);
    idx.data()[0] = 1000;  // must not reach the backward
    sum(y).backward();
    CHECK(x.grad().to_vector() == V{0, 0, 2});
}

TEST_CASE("gather rejects bad input", "[index][errors]") {
    D x = D::zeros({3, 2});
    CHECK_THROWS_WITH(gather(x, 1, ix({0, 2}, {2, 1})),
                      Contains("gather") && Contains("index 2") && Contains("position (1, 0)") &&
                          Contains("(3, 2)"));
    CHECK_THROWS_WITH(gather(x, 0, ix({-3}, {1, 1})), Contains("gather") && Contains("index -3"));
    CHECK_THROWS_WITH(gather(x, 1, ix({0, 1})), Contains("gather") && Contains("rank") && Contains("(2,)"));
    CHECK_THROWS_WITH(gather(x, 0, ix({0, 0, 0}, {1, 3})),
                      Contains("gather") && Contains("(1, 3)") && Contains("larger than x") && Contains("(3, 2)"));
    CHECK_THROWS_WITH(gather(x, -3, ix({0}, {1, 1})), Contains("gather") && Contains("dim -3"));
    CHECK_THROWS_WITH(gather(D::zeros({2, 0}), 1, ix({0}, {1, 1})), Contains("gather") && Contains("[0, 0)"));
}

TEST_CASE("scatter_add matches torch.scatter_add and leaves x alone", "[index]") {
    D src = D::ones({2, 5});
    D z = D::zeros({3, 5});
    CHECK(scatter_add(z, 0, ix({0, 1, 2, 0, 0}, {1, 5}), src).to_vector() ==
          V{1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0});
    CHECK(scatter_add(z, 0, ix({0, 1, 2, 0, 0, 0, 1, 2, 2, 2}, {2, 5}), src).to_vector() ==
          V{2, 0, 0, 1, 1, 0, 2, 0, 0, 0, 0, 0, 2, 1, 1});
    CHECK(z.to_vector() == V(15, 0.0));

    D x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
    D s = leaf({10, 20, 30, 40, 50, 60}, {2, 3});
    D y = scatter_add(x, 1, ix({2, 2, 0, 1}, {2, 2}), s);  // src bigger than index
    CHECK(y.to_vector() == V{1, 2, 33, 44, 55, 6});
    (y * dt({1, 2, 3, 4, 5, 6}, {2, 3})).backward(D::ones({2, 3}));
    CHECK(x.grad().to_vector() == V{1, 2, 3, 4, 5, 6});
    CHECK(s.grad().to_vector() == V{3, 3, 0, 4, 5, 0});  // uncovered src positions get zero
}

TEST_CASE("scatter_add rejects bad input", "[index][errors]") {
    D x = D::zeros({3, 2}), s = D::ones({3, 2});
    CHECK_THROWS_WITH(scatter_add(x, 0, ix({0, 3}, {1, 2}), s),
                      Contains("scatter_add") && Contains("index 3") && Contains("position (0, 1)") &&
                          Contains("(3, 2)"));
    CHECK_THROWS_WITH(scatter_add(x, 0, ix({0, 1}), s), Contains("scatter_add") && Contains("rank"));
    CHECK_THROWS_WITH(scatter_add(x, 0, ix({0, 0}, {1, 2}), D::ones({2})), Contains("scatter_add") && Contains("src"));
    CHECK_THROWS_WITH(scatter_add(x, 0, ix({0, 0, 0}, {1, 3}), D::ones({3, 3})),
                      Contains("scatter_add") && Contains("larger than x"));
    CHECK_THROWS_WITH(scatter_add(x, 1, ix({0, 0, 0, 0}, {4, 1}), s),
                      Contains("scatter_add") && Contains("(4, 1)") && Contains("larger than"));
    CHECK_THROWS_WITH(scatter_add(x, 0, ix({0, 0, 0, 0, 0, 0}, {2, 3}), D::ones({2, 2})),
                      Contains("scatter_add"));
}

// ---- argmax / topk ------------------------------------------------------------------------------
TEST_CASE("argmax takes the first maximum, NaN counts as largest", "[index]") {
    D x = dt({1, 5, 5, 2, 7, 7, 0, 1}, {2, 4});
    CHECK(argmax(x, 1).to_vector() == IV{1, 0});
    CHECK(argmax(x, 1, true).shape() == Shape{2, 1});
    CHECK(argmax(x, 0).to_vector() == IV{1, 1, 0, 0});
    CHECK(argmax(x, -2).shape() == Shape{4});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK(argmax(dt({1, nan, 3, nan}), 0).item() == 1);
    CHECK(argmax(ix({3, 9, 9}), 0).item() == 1);
    CHECK_THROWS_WITH(argmax(D::zeros({2, 0}), 1), Contains("argmax") && Contains("empty"));
    CHECK_THROWS_WITH(argmax(D::scalar(1), 0), Contains("argmax"));
}

TEST_CASE("topk: descending, ties to the lower index, gradient through the values", "[index]") {
    D x = leaf({1, 3, 3, 2, 3}, {5});
    auto [v, i] = topk(x, 4);
    CHECK(v.to_vector() == V{3, 3, 3, 2});
    CHECK(i.to_vector() == IV{1, 2, 4, 3});
    sum(v * dt({1, 2, 3, 4})).backward();
    CHECK(x.grad().to_vector() == V{0, 1, 2, 4, 3});

    D m = dt({0, 9, 4, 8, 2, 6, 5, 1, 7, 3, 9, 0}, {3, 4});
    auto [v1, i1] = topk(m, 2);
    CHECK(i1.to_vector() == IV{1, 3, 1, 2, 2, 0});
    CHECK(v1.to_vector() == V{9, 8, 6, 5, 9, 7});
    auto [v0, i0] = topk(m, 2, 0);
    CHECK(i0.shape() == Shape{2, 4});
    CHECK(i0.to_vector() == IV{2, 0, 2, 0, 1, 1, 1, 1});
    CHECK(v0.to_vector() == V{7, 9, 9, 8, 2, 6, 5, 1});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK(topk(dt({1, nan, 2}), 2).second.to_vector() == IV{1, 2});
    CHECK(topk(m, 0).first.shape() == Shape{3, 0});
    CHECK(topk(m, 4).second.to_vector() == IV{1, 3, 2, 0, 1, 2, 0, 3, 2, 0, 1, 3});
}

TEST_CASE("topk rejects bad k and dims", "[index][errors]") {
    D m = D::zeros({3, 4});
    CHECK_THROWS_WITH(topk(m, 5), Contains("topk") && Contains("k = 5") && Contains("(3, 4)"));
    CHECK_THROWS_WITH(topk(m, -1), Contains("topk") && Contains("k = -1"));
    CHECK_THROWS_WITH(topk(m, 1, 2), Contains("topk") && Contains("dim 2"));
    CHECK_THROWS_WITH(topk(D::scalar(1), 1), Contains("topk"));
}

// ---- concat / stack / split / chunk -------------------------------------------------------------
TEST_CASE("concat joins along a dim and hands each input its gradient slice", "[join]") {
    D a = leaf({1, 2, 3, 4}, {2, 2});
    D b = leaf({5, 6}, {2, 1});
    D y = concat<double>({a, b}, 1);
    CHECK(y.shape() == Shape{2, 3});
    CHECK(y.to_vector() == V{1, 2, 5, 3, 4, 6});
    (y * dt({1, 2, 3, 4, 5, 6}, {2, 3})).backward(D::ones({2, 3}));
    CHECK(a.grad().to_vector() == V{1, 2, 4, 5});
    CHECK(b.grad().to_vector() == V{3, 6});

    CHECK(concat<double>({dt({1, 2}), dt({3})}, -1).to_vector() == V{1, 2, 3});
    CHECK(concat<double>({a.detach().t(), b.detach().t()}, 0).to_vector() == V{1, 3, 2, 4, 5, 6});
    CHECK(concat<double>({dt({1}), D::empty({0}), dt({2})}).to_vector() == V{1, 2});
    CHECK(concat(std::vector<IndexTensor>{ix({1}), ix({2, 3})}).to_vector() == IV{1, 2, 3});
}

TEST_CASE("concat rejects mismatched shapes", "[join][errors]") {
    CHECK_THROWS_WITH(concat<double>({D::zeros({2, 3}), D::zeros({2, 3}), D::zeros({3, 3})}, 1),
                      Contains("concat") && Contains("tensor 2") && Contains("(3, 3)") && Contains("(2, 3)"));
    CHECK_THROWS_WITH(concat<double>({D::zeros({2, 3}), D::zeros({6})}), Contains("concat") && Contains("tensor 1"));
    CHECK_THROWS_WITH(concat(std::vector<D>{}), Contains("concat") && Contains("empty"));
    CHECK_THROWS_WITH(concat<double>({D::zeros({2}), D::zeros({2})}, 1), Contains("concat") && Contains("dim 1"));
    CHECK_THROWS_WITH(concat<double>({D::scalar(1)}), Contains("concat") && Contains("at least 1 dim"));
}

TEST_CASE("stack adds a new dim", "[join]") {
    D a = dt({1, 2, 3}), b = dt({4, 5, 6});
    D s0 = stack<double>({a, b});
    CHECK(s0.shape() == Shape{2, 3});
    CHECK(s0.to_vector() == V{1, 2, 3, 4, 5, 6});
    D s1 = stack<double>({a, b}, -1);
    CHECK(s1.shape() == Shape{3, 2});
    CHECK(s1.to_vector() == V{1, 4, 2, 5, 3, 6});
    CHECK_THROWS_WITH(stack<double>({a, dt({1, 2})}),
                      Contains("stack") && Contains("tensor 1") && Contains("(2,)") && Contains("(3,)"));
    CHECK_THROWS_WITH(stack<double>({a, b}, 2), Contains("stack") && Contains("dim 2"));
    CHECK_THROWS_WITH(stack(std::vector<D>{}), Contains("stack"));
}

TEST_CASE("split and chunk follow torch, and return views", "[join]") {
    D x = D::arange(10.0).reshape({5, 2});
    auto p = split(x, 2);
    REQUIRE(p.size() == 3);
    CHECK(p[0].shape() == Shape{2, 2});
    CHECK(p[2].shape() == Shape{1, 2});
    CHECK(p[2].to_vector() == V{8, 9});
    CHECK(p[1].shares_storage(x));
    CHECK(split(x, 7).size() == 1);  // larger than the dim: one piece

    auto q = split(x, std::vector<int64_t>{1, 0, 1}, -1);
    REQUIRE(q.size() == 3);
    CHECK(q[0].to_vector() == V{0, 2, 4, 6, 8});
    CHECK(q[1].shape() == Shape{5, 0});

    auto sizes = [](const std::vector<D>& v) {
        IV s;
        for (auto& t : v) s.push_back(t.shape()[0]);
        return s;
    };
    CHECK(sizes(chunk(D::zeros({6}), 4)) == IV{2, 2, 2});  // fewer pieces than asked, as torch
    CHECK(sizes(chunk(D::zeros({7}), 3)) == IV{3, 3, 1});
    CHECK(sizes(chunk(D::zeros({5}), 5)) == IV{1, 1, 1, 1, 1});
    CHECK(sizes(chunk(D::zeros({2}), 5)) == IV{1, 1});
    CHECK(sizes(chunk(D::zeros({0}), 3)) == IV{0, 0, 0});
    auto c = chunk(x, 2, 1);
    REQUIRE(c.size() == 2);
    CHECK(c[1].to_vector() == V{1, 3, 5, 7, 9});

    D w = leaf({1, 2, 3, 4, 5});
    auto r = chunk(w, 2);
    sum(r[1] * 2.0).backward();
    CHECK(w.grad().to_vector() == V{0, 0, 0, 2, 2});
}

TEST_CASE("split and chunk reject bad sizes", "[join][errors]") {
    D x = D::zeros({5, 2});
    CHECK_THROWS_WITH(chunk(x, 0), Contains("chunk") && Contains("got 0") && Contains("(5, 2)"));
    CHECK_THROWS_WITH(chunk(x, -2), Contains("chunk") && Contains("got -2"));
    CHECK_THROWS_WITH(chunk(D::scalar(1), 2), Contains("chunk") && Contains("at least 1 dim"));
    CHECK_THROWS_WITH(split(x, 0), Contains("split") && Contains("split_size 0"));
    CHECK_THROWS_WITH(split(x, -1), Contains("split") && Contains("split_size -1"));
    CHECK_THROWS_WITH(split(x, std::vector<int64_t>{2, 2}),
                      Contains("split") && Contains("sum to 4") && Contains("(5, 2)"));
    CHECK_THROWS_WITH(split(x, std::vector<int64_t>{6, -1}), Contains("split") && Contains("negative size -1"));
    CHECK_THROWS_WITH(split(x, 1, 2), Contains("split") && Contains("dim 2"));
}

// ---- comparisons, masks, where, masked_fill -----------------------------------------------------
TEST_CASE("comparisons broadcast and return uint8 masks", "[select]") {
    D a = dt({1, 2, 3, 4, 5, 6}, {2, 3});
    D b = dt({2, 2, 2});
    CHECK(eq(a, b).to_vector() == MV{0, 1, 0, 0, 0, 0});
    CHECK(ne(a, b).to_vector() == MV{1, 0, 1, 1, 1, 1});
    CHECK(lt(a, b).to_vector() == MV{1, 0, 0, 0, 0, 0});
    CHECK(le(a, b).to_vector() == MV{1, 1, 0, 0, 0, 0});
    CHECK(gt(a, 3.0).to_vector() == MV{0, 0, 0, 1, 1, 1});
    CHECK(ge(a, 3.0).to_vector() == MV{0, 0, 1, 1, 1, 1});
    CHECK(eq(a.t(), dt({1, 5}, {1, 2})).to_vector() == MV{1, 0, 0, 1, 0, 0});
    CHECK(lt(dt({1, 4}, {2, 1}), b).shape() == Shape{2, 3});
    CHECK(eq(ix({1, 2, 3}), int64_t(2)).to_vector() == MV{0, 1, 0});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK(eq(dt({nan}), dt({nan})).item() == 0);
    CHECK(ne(dt({nan}), dt({nan})).item() == 1);
    CHECK_THROWS_WITH(eq(a, dt({1, 2})), Contains("eq") && Contains("(2, 3)") && Contains("(2,)"));

    Tensor<uint8_t> m = mk({1, 0, 2, 0}, {2, 2});
    CHECK(logical_not(m).to_vector() == MV{0, 1, 0, 1});
    CHECK(logical_not(m.t()).to_vector() == MV{0, 0, 1, 1});
    CHECK(logical_and(m, mk({1, 1}, {1, 2})).to_vector() == MV{1, 0, 1, 0});
    CHECK(logical_or(m, mk({0, 1}, {2, 1})).to_vector() == MV{1, 0, 1, 1});
}

TEST_CASE("where broadcasts cond, a and b and routes gradients by cond", "[select]") {
    Tensor<uint8_t> c = mk({1, 0, 1}, {3, 1});
    D a = leaf({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4});
    D b = leaf({-1, -2, -3, -4}, {4});
    D y = where(c, a, b);
    CHECK(y.shape() == Shape{3, 4});
    CHECK(y.to_vector() == V{1, 2, 3, 4, -1, -2, -3, -4, 9, 10, 11, 12});
    sum(y).backward();
    CHECK(a.grad().to_vector() == V{1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1});
    CHECK(b.grad().to_vector() == V{1, 1, 1, 1});

    D z = where(mk({0, 1}), dt({1, 2}), 0.0);
    CHECK(z.to_vector() == V{0, 2});
    CHECK(where(mk({0, 1}), 5.0, dt({1, 2})).to_vector() == V{1, 5});
    CHECK(where(mk({1, 0}, {2, 1}), dt({1}), dt({7, 8}, {1, 2})).shape() == Shape{2, 2});
    CHECK_THROWS_WITH(where(mk({1, 0, 1}), D::zeros({2, 2}), D::zeros({2})),
                      Contains("where") && Contains("(3,)") && Contains("(2, 2)"));
}

TEST_CASE("masked_fill fills where the mask is set and blocks gradient there", "[select]") {
    D x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
    D y = masked_fill(x, mk({0, 1, 0, 1, 1, 0}, {2, 3}), -std::numeric_limits<double>::infinity());
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(y.to_vector() == V{1, -inf, 3, -inf, -inf, 6});
    CHECK(x.to_vector() == V{1, 2, 3, 4, 5, 6});  // out of place
    masked_fill(x, mk({1, 0, 0}), 9.0).backward(D::ones({2, 3}));
    CHECK(x.grad().to_vector() == V{0, 1, 1, 0, 1, 1});
    CHECK(masked_fill(x.detach(), mk({1, 0}, {2, 1}), 0.0).to_vector() == V{0, 0, 0, 4, 5, 6});

    CHECK_THROWS_WITH(masked_fill(x, mk({1, 0}), 0.0),
                      Contains("masked_fill") && Contains("(2,)") && Contains("(2, 3)"));
    CHECK_THROWS_WITH(masked_fill(dt({1, 2, 3}), mk({1, 0, 1, 0, 1, 0}, {2, 3}), 0.0),
                      Contains("masked_fill") && Contains("(2, 3)") && Contains("(3,)"));
}
