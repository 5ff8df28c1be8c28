// softmax_norm_test.cpp — forward values of softmax, log_softmax, layer_norm, cross_entropy,
// nll_loss and dropout against hand-computed numbers and the naive references, stability with
// huge logits, dropout determinism and statistics, and the error messages for bad input.
// (Gradients are checked by finite differences in tests/op_cases_softmax_norm.cpp.)
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include <moekd/ops/dropout.hpp>
#include <moekd/ops/loss.hpp>
#include <moekd/ops/norm.hpp>
#include <moekd/ops/softmax.hpp>
#include <moekd/autograd/engine.hpp>
#include <moekd/ops/reduce.hpp>

using namespace moekd;
using Catch::Matchers::Contains;

namespace {

template <class T>
void require_close(const Tensor<T>& a, const Tensor<T>& b, double tol) {
    REQUIRE(a.shape() == b.shape());
    const std::vector<T> va = a.to_vector(), vb = b.to_vector();
    for (size_t i = 0; i < va.size(); ++i) {
        INFO("element " << i << ": " << va[i] << " vs " << vb[i]);
        REQUIRE(std::abs(static_cast<double>(va[i]) - static_cast<double>(vb[i])) <= tol);
    }
}

template <class T>
bool all_finite(const Tensor<T>& a) {
    for (T v : a.to_vector())
        if (!std::isfinite(static_cast<double>(v))) return false;
    return true;
}

Tensor<int64_t> idx(std::vector<int64_t> v, Shape s = {}) { return Tensor<int64_t>::from_vector(v, s); }

}  // namespace

// ---- softmax / log_softmax ----------------------------------------------------------------------
TEST_CASE("softmax and log_softmax match hand-computed values", "[softmax]") {
    // exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3  ->  1/6, 2/6, 3/6
    auto x = Tensor<double>::from_vector({0.0, std::log(2.0), std::log(3.0)});
    require_close(softmax(x), Tensor<double>::from_vector({1 / 6.0, 2 / 6.0, 3 / 6.0}), 1e-15);
    require_close(log_softmax(x), Tensor<double>::from_vector({std::log(1 / 6.0), std::log(2 / 6.0), std::log(0.5)}),
                  1e-15);
    // dim 0 of a (2, 2): columns normalise
    auto m = Tensor<double>::from_vector({0.0, 1.0, 0.0, 3.0}, {2, 2});
    auto y = softmax(m, 0);
    CHECK(y.at({0, 0}) == Approx(0.5));
    CHECK(y.at({1, 1}) == Approx(std::exp(3.0) / (std::exp(1.0) + std::exp(3.0))));
}

TEST_CASE("softmax matches the naive reference on every dim and on views", "[softmax]") {
    Generator gen(11);
    auto x = Tensor<float>::randn({3, 4, 5}, gen, 0, 3);
    for (int64_t d : {0, 1, 2, -1}) {
        INFO("dim " << d);
        require_close(softmax(x, d), detail::softmax_reference(x, d), 1e-6);
        require_close(log_softmax(x, d), detail::softmax_reference(x, d, true), 1e-5);
    }
    auto xt = x.transpose(0, 2);  // (5, 4, 3), non-contiguous
    for (int64_t d : {0, 1, 2}) {
        INFO("transposed, dim " << d);
        require_close(softmax(xt, d), detail::softmax_reference(xt, d), 1e-6);
        require_close(log_softmax(xt, d), detail::softmax_reference(xt, d, true), 1e-5);
    }
    CHECK(softmax(xt, 1).is_contiguous());
    // rows along the softmax dim sum to 1
    auto s = sum(softmax(x, 1), {1});
    require_close(s, Tensor<float>::ones({3, 5}), 1e-6);
}

TEST_CASE("softmax is stable for huge logits", "[softmax]") {
    auto x = Tensor<float>::from_vector({1000.f, 1001.f, 1002.f, -1000.f, -1001.f, -1002.f}, {2, 3});
    auto y = softmax(x);
    auto ly = log_softmax(x);
    REQUIRE(all_finite(y));
    REQUIRE(all_finite(ly));
    auto ref = softmax(Tensor<float>::from_vector({0.f, 1.f, 2.f}));
    for (int j = 0; j < 3; ++j) {
        CHECK(y.at({0, j}) == Approx(ref.data()[j]).epsilon(1e-6));
        CHECK(y.at({1, 2 - j}) == Approx(ref.data()[j]).epsilon(1e-6));
    }
    CHECK(ly.at({0, 0}) == Approx(std::log(ref.data()[0])).epsilon(1e-6));
    // a logit 1e4 above the rest: probability exactly 1, the others 0, log_softmax finite
    auto z = Tensor<float>::from_vector({0.f, 1e4f, 0.f});
    CHECK(softmax(z).data()[1] == 1.f);
    CHECK(log_softmax(z).data()[0] == Approx(-1e4f));
}

TEST_CASE("softmax backward gives y * (g - sum(g * y))", "[softmax]") {
    Generator gen(5);
    auto x = Tensor<double>::randn({2, 4}, gen);
    x.requires_grad_();
    auto w = Tensor<double>::randn({2, 4}, gen);
    sum(softmax(x) * w).backward();
    auto y = detail::softmax_reference(x.detach(), -1);
    for (int r = 0; r < 2; ++r) {
        double dot = 0;
        for (int c = 0; c < 4; ++c) dot += w.at({r, c}) * y.at({r, c});
        for (int c = 0; c < 4; ++c) CHECK(x.grad().at({r, c}) == Approx(y.at({r, c}) * (w.at({r, c}) - dot)));
    }
    // the sum of a softmax is constant: zero gradient
    auto x2 = Tensor<double>::randn({3, 3}, gen);
    x2.requires_grad_();
    sum(softmax(x2, 0)).backward();
    for (double g : x2.grad().to_vector()) CHECK(std::abs(g) < 1e-15);
}

TEST_CASE("softmax edge shapes and bad dims", "[softmax]") {
    CHECK(softmax(Tensor<float>::scalar(3.f)).item() == 1.f);
    CHECK(softmax(Tensor<float>::empty({0, 4})).numel() == 0);
    auto x = Tensor<float>::zeros({2, 3});
    CHECK_THROWS_AS(softmax(x, 2), Error);
    CHECK_THROWS_WITH(softmax(x, 2), Contains("softmax") && Contains("dim 2") && Contains("rank 2"));
    CHECK_THROWS_WITH(log_softmax(x, -3), Contains("log_softmax") && Contains("dim -3"));
}

// ---- layer_norm --------------------------------------------------------------------------------
TEST_CASE("layer_norm matches hand-computed values", "[layer_norm]") {
    // row 1, 2, 3, 4: mean 2.5, biased var 1.25
    auto x = Tensor<double>::from_vector({1, 2, 3, 4});
    const double rs = 1 / std::sqrt(1.25 + 1e-5);
    require_close(layer_norm(x, {4}), Tensor<double>::from_vector({-1.5 * rs, -0.5 * rs, 0.5 * rs, 1.5 * rs}), 1e-14);
    auto w = Tensor<double>::from_vector({1, 2, 3, 4}), b = Tensor<double>::from_vector({0, 1, 0, -1});
    require_close(layer_norm(x, {4}, w, b, 0.0),
                  Tensor<double>::from_vector({-1.5 / std::sqrt(1.25), 2 * -0.5 / std::sqrt(1.25) + 1,
                                               3 * 0.5 / std::sqrt(1.25), 4 * 1.5 / std::sqrt(1.25) - 1}),
                  1e-14);
}

TEST_CASE("layer_norm matches the naive reference", "[layer_norm]") {
    Generator gen(3);
    auto x = Tensor<float>::randn({2, 3, 4}, gen, 5.0, 2.0);  // mean far from 0
    auto w1 = Tensor<float>::randn({4}, gen), b1 = Tensor<float>::randn({4}, gen);
    auto w2 = Tensor<float>::randn({3, 4}, gen), b2 = Tensor<float>::randn({3, 4}, gen);
    require_close(layer_norm(x, {4}), detail::layer_norm_reference(x, {4}), 1e-5);
    require_close(layer_norm(x, {4}, w1, b1), detail::layer_norm_reference(x, {4}, w1, b1), 1e-5);
    require_close(layer_norm(x, {3, 4}, w2, b2), detail::layer_norm_reference(x, {3, 4}, w2, b2), 1e-5);
    require_close(layer_norm(x, {2, 3, 4}), detail::layer_norm_reference(x, {2, 3, 4}), 1e-5);
    auto xt = x.transpose(0, 2);  // (4, 3, 2)
    require_close(layer_norm(xt, {2}), detail::layer_norm_reference(xt, {2}), 1e-5);
    // normalised rows: mean 0, variance 1 (eps aside)
    auto y = layer_norm(x, {3, 4}, Tensor<float>(), Tensor<float>(), 0.0);
    require_close(mean(y, {1, 2}), Tensor<float>::zeros({2}), 1e-6);
    require_close(var(y, {1, 2}, false), Tensor<float>::ones({2}), 1e-5);
}

TEST_CASE("layer_norm weight and bias gradients are sums over rows", "[layer_norm]") {
    Generator gen(9);
    auto x = Tensor<double>::randn({5, 3}, gen);
    auto w = Tensor<double>::randn({3}, gen), b = Tensor<double>::randn({3}, gen);
    w.requires_grad_();
    b.requires_grad_();
    auto g = Tensor<double>::randn({5, 3}, gen);
    sum(layer_norm(x, {3}, w, b) * g).backward();
    auto xh = detail::layer_norm_reference(x, {3});
    for (int j = 0; j < 3; ++j) {
        double gw = 0, gb = 0;
        for (int r = 0; r < 5; ++r) gw += g.at({r, j}) * xh.at({r, j}), gb += g.at({r, j});
        CHECK(w.grad().at({j}) == Approx(gw));
        CHECK(b.grad().at({j}) == Approx(gb));
    }
}

TEST_CASE("layer_norm rejects bad shapes", "[layer_norm]") {
    auto x = Tensor<float>::zeros({2, 3, 4});
    CHECK_THROWS_WITH(layer_norm(x, {3}), Contains("layer_norm") && Contains("(3,)") && Contains("(2, 3, 4)"));
    CHECK_THROWS_WITH(layer_norm(x, {}), Contains("normalized_shape"));
    CHECK_THROWS_WITH(layer_norm(x, {1, 2, 3, 4}), Contains("trailing dims"));
    CHECK_THROWS_WITH(layer_norm(x, {4}, Tensor<float>::ones({3})), Contains("weight of shape (3,)"));
    CHECK_THROWS_WITH(layer_norm(x, {3, 4}, Tensor<float>(), Tensor<float>::ones({4})),
                      Contains("bias of shape (4,)") && Contains("(3, 4)"));
    CHECK_THROWS_AS(layer_norm(x, {4}, Tensor<float>(), Tensor<float>(), -1.0), Error);
}

// ---- cross_entropy / nll_loss ------------------------------------------------------------------------
TEST_CASE("cross_entropy with label smoothing and ignore_index matches a hand computation", "[cross_entropy]") {
    // row 0: logits (0, ln 3) -> p = (1/4, 3/4), target 1
    // row 1: ignored
    // row 2: logits (0, 0)    -> p = (1/2, 1/2), target 0
    auto logits = Tensor<double>::from_vector({0.0, std::log(3.0), 5.0, -2.0, 0.0, 0.0}, {3, 2});
    auto t = idx({1, -100, 0});
    const double e = 0.1;
    // torch: (1 - e) * nll + e * mean over classes of -log p, averaged over the 2 kept rows
    const double row0 = (1 - e) * std::log(4.0 / 3.0) + e * (std::log(4.0) + std::log(4.0 / 3.0)) / 2;
    const double row2 = (1 - e) * std::log(2.0) + e * std::log(2.0);
    logits.requires_grad_();
    auto loss = cross_entropy(logits, t, -100, e);
    CHECK(loss.dim() == 0);
    CHECK(loss.item() == Approx((row0 + row2) / 2).epsilon(1e-14));
    CHECK(cross_entropy(logits.detach(), t, -100, e, Reduction::Sum).item() == Approx(row0 + row2));
    auto none = cross_entropy(logits.detach(), t, -100, e, Reduction::None);
    require_close(none, Tensor<double>::from_vector({row0, 0.0, row2}), 1e-14);
    // gradient: (softmax - (1 - e) onehot - e / C) / count; 0 on the ignored row
    loss.backward();
    require_close(logits.grad(),
                  Tensor<double>::from_vector({(0.25 - e / 2) / 2, (0.75 - (1 - e) - e / 2) / 2, 0.0, 0.0,
                                               (0.5 - (1 - e) - e / 2) / 2, (0.5 - e / 2) / 2},
                                              {3, 2}),
                  1e-15);
}

TEST_CASE("cross_entropy matches the naive reference", "[cross_entropy]") {
    Generator gen(21);
    auto logits = Tensor<float>::randn({6, 7}, gen, 0, 3);
    auto t = idx({0, 6, -100, 3, 3, 1});
    for (double e : {0.0, 0.1, 0.5}) {
        for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
            INFO("smoothing " << e << " reduction " << int(r));
            require_close(cross_entropy(logits, t, -100, e, r), detail::cross_entropy_reference(logits, t, -100, e, r),
                          1e-5);
        }
    }
    // nll_loss over log_softmax is cross_entropy without smoothing
    require_close(nll_loss(log_softmax(logits), t), cross_entropy(logits, t), 1e-6);
    require_close(nll_loss(log_softmax(logits), t, -100, Reduction::None),
                  cross_entropy(logits, t, -100, 0.0, Reduction::None), 1e-6);
}

TEST_CASE("cross_entropy on (B, T, C) logits equals the flattened (N, C) case", "[cross_entropy]") {
    Generator gen(8);
    auto logits = Tensor<double>::randn({2, 3, 4}, gen);
    auto t = idx({0, 3, -100, 2, 1, 1}, {2, 3});
    CHECK(cross_entropy(logits, t, -100, 0.1).item() ==
          Approx(cross_entropy(logits.reshape({6, 4}), t.reshape({6}), -100, 0.1).item()));
    auto none = cross_entropy(logits, t, -100, 0.0, Reduction::None);
    CHECK(none.shape() == Shape{2, 3});
    CHECK(none.at({1, 0}) == Approx(-detail::softmax_reference(logits, -1, true).at({1, 0, 2})));
    CHECK(none.at({0, 2}) == 0.0);
    // unbatched: logits (C), scalar target
    auto one = cross_entropy(Tensor<double>::from_vector({0.0, 0.0}), Tensor<int64_t>::scalar(1));
    CHECK(one.item() == Approx(std::log(2.0)));
}

TEST_CASE("cross_entropy is stable for huge logits", "[cross_entropy]") {
    auto logits = Tensor<float>::from_vector({1000.f, 0.f, -1000.f, 1000.f, 1000.f, 1000.f}, {2, 3});
    logits.requires_grad_();
    auto loss = cross_entropy(logits, idx({2, 0}), -100, 0.0, Reduction::None);
    REQUIRE(all_finite(loss));
    CHECK(loss.at({0}) == Approx(2000.f));
    CHECK(loss.at({1}) == Approx(std::log(3.f)));
    sum(loss).backward();
    REQUIRE(all_finite(logits.grad()));
    CHECK(logits.grad().at({0, 0}) == Approx(1.f));
    CHECK(logits.grad().at({0, 2}) == Approx(-1.f));
    auto s = cross_entropy(logits.detach(), idx({2, 0}), -100, 0.1);
    REQUIRE(all_finite(s));
}

TEST_CASE("cross_entropy with every target ignored returns 0 (torch: NaN)", "[cross_entropy]") {
    auto logits = Tensor<double>::ones({2, 3});
    logits.requires_grad_();
    auto loss = cross_entropy(logits, idx({-100, -100}), -100, 0.1);
    CHECK(loss.item() == 0.0);
    loss.backward();
    for (double g : logits.grad().to_vector()) CHECK(g == 0.0);
    CHECK(nll_loss(logits.detach(), idx({5, 5}), 5).item() == 0.0);
    CHECK(cross_entropy(Tensor<double>::empty({0, 3}), Tensor<int64_t>::empty({0})).item() == 0.0);
}

TEST_CASE("cross_entropy and nll_loss report bad targets and shapes", "[cross_entropy]") {
    auto logits = Tensor<float>::zeros({2, 3, 5});
    auto t = idx({0, 1, 2, 3, 4, 7}, {2, 3});
    CHECK_THROWS_AS(cross_entropy(logits, t), Error);
    CHECK_THROWS_WITH(cross_entropy(logits, t),
                      Contains("cross_entropy") && Contains("target 7") && Contains("position (1, 2)") &&
                          Contains("5 classes"));
    CHECK_THROWS_WITH(cross_entropy(Tensor<float>::zeros({3, 4}), idx({0, -1, 2})),
                      Contains("target -1") && Contains("position (1,)") && Contains("4 classes"));
    CHECK_THROWS_WITH(cross_entropy(Tensor<float>::zeros({3, 4}), idx({0, 1})),
                      Contains("targets of shape (2,)") && Contains("(3, 4)") && Contains("(3,)"));
    CHECK_THROWS_WITH(cross_entropy(Tensor<float>::zeros({3, 4}), idx({0, 1, 2}), -100, 1.5),
                      Contains("label_smoothing"));
    CHECK_THROWS_WITH(cross_entropy(Tensor<float>::scalar(1.f), Tensor<int64_t>::scalar(0)), Contains("scalar"));
    CHECK_THROWS_WITH(nll_loss(Tensor<float>::zeros({2, 3}), idx({3, 0})),
                      Contains("nll_loss") && Contains("target 3") && Contains("position (0,)"));
}

// ---- dropout -----------------------------------------------------------------------------------------
TEST_CASE("Philox4x32-10 gives the known-answer vectors of Random123", "[dropout]") {
    using kern::Philox4;
    const auto run = [](Philox4 c, uint32_t k0, uint32_t k1) {
        const Philox4 r = kern::philox4x32_10(c, k0, k1);
        return std::vector<uint32_t>(r.v, r.v + 4);
    };
    // kat_vectors of Random123 1.09 (philox4x32 10): zeros, all ones, and the digits of pi
    CHECK(run(Philox4{{0, 0, 0, 0}}, 0, 0) == std::vector<uint32_t>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    CHECK(run(Philox4{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff) ==
          std::vector<uint32_t>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    CHECK(run(Philox4{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0) ==
          std::vector<uint32_t>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
    // element i is word i % 4 of counter i / 4
    CHECK(kern::philox_word(0, 2) == 0xbc57ac4c);
}

TEST_CASE("dropout is deterministic given the generator", "[dropout]") {
    auto x = Tensor<float>::ones({64, 32});
    Generator a(123), b(123), c(124);
    auto ya = dropout(x, 0.4, true, a), yb = dropout(x, 0.4, true, b), yc = dropout(x, 0.4, true, c);
    CHECK(ya.to_vector() == yb.to_vector());
    CHECK(ya.to_vector() != yc.to_vector());
    // the generator advances: a second draw from the same one gives another mask
    CHECK(dropout(x, 0.4, true, a).to_vector() != ya.to_vector());
    // and restoring its state replays it
    Generator d(77);
    const auto st = d.state();
    auto y1 = dropout(x, 0.4, true, d);
    d.set_state(st);
    CHECK(dropout(x, 0.4, true, d).to_vector() == y1.to_vector());
}

TEST_CASE("dropout keeps about 1 - p of the elements, scaled by 1 / (1 - p)", "[dropout]") {
    Generator gen(2024);
    for (double p : {0.1, 0.3, 0.7}) {
        auto x = Tensor<float>::full({200, 500}, 2.f);
        auto y = dropout(x, p, true, gen);
        int64_t kept = 0, wrong_scale = 0;
        const float want = static_cast<float>(2.0 / (1.0 - p));
        for (float v : y.to_vector()) {
            kept += v != 0.f;
            wrong_scale += v != 0.f && std::abs(v - want) > 1e-6f * want;
        }
        CHECK(wrong_scale == 0);
        const double frac = double(kept) / double(x.numel());
        INFO("p " << p << " kept fraction " << frac);
        CHECK(std::abs(frac - (1 - p)) < 0.01);  // ~5 standard deviations at n = 1e5
    }
}

TEST_CASE("dropout backward uses the saved mask, eval, p = 0 and p = 1", "[dropout]") {
    Generator gen(5);
    auto x = Tensor<double>::randn({10, 10}, gen);
    x.requires_grad_();
    auto y = dropout(x, 0.5, true, gen);
    sum(y).backward();
    for (int64_t i = 0; i < 100; ++i) {
        const double yi = y.data()[i], gi = x.grad().data()[i];
        CHECK(gi == (yi != 0.0 ? 2.0 : 0.0));
    }
    CHECK(dropout(x, 0.5, false, gen).is_same(x));
    CHECK(dropout(x, 0.0, true, gen).is_same(x));
    auto z = dropout(x, 1.0, true, gen);
    for (double v : z.to_vector()) CHECK(v == 0.0);
    x.zero_grad();
    sum(z).backward();
    for (double g : x.grad().to_vector()) CHECK(g == 0.0);
}

TEST_CASE("dropout rejects p outside [0, 1]", "[dropout]") {
    auto x = Tensor<float>::ones({2, 3});
    Generator gen(1);
    CHECK_THROWS_AS(dropout(x, 1.5, true, gen), Error);
    CHECK_THROWS_WITH(dropout(x, -0.1, true, gen), Contains("dropout") && Contains("-0.1") && Contains("[0, 1]"));
    CHECK_THROWS_WITH(dropout(x, std::nan(""), false, gen), Contains("dropout"));
}
