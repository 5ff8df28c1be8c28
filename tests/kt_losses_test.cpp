// kt_losses_test.cpp — forward values of the knowledge-transfer losses against hand-computed
// numbers and the naive references, the detach semantics, pad masks, the float fast paths
// (exp_approx, large vocabularies) against double, the token-group sampler, and error messages.
// Gradients are finite-differenced in tests/op_cases_kt.cpp.
#include <cmath>
#include <set>

#include <catch2/catch.hpp>

#include <moekd/autograd/engine.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/losses/relation.hpp>

using namespace moekd;
using Catch::Matchers::Contains;

namespace {

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
    const auto va = a.to_vector(), vb = b.to_vector();
    REQUIRE(va.size() == vb.size());
    double m = 0;
    for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(double(va[i]) - double(vb[i])));
    return m;
}

template <class T>
double max_abs(const Tensor<T>& a) {
    double m = 0;
    for (T v : a.to_vector()) m = std::max(m, std::abs(double(v)));
    return m;
}

}  // namespace

// ---- exp_approx ------------------------------------------------------------------------------

TEST_CASE("exp_approx is within a few ulp of exp in float", "[kt]") {
    double worst = 0;
    for (int i = 0; i <= 200000; ++i) {
        const float x = -87.0f + 87.0f * float(i) / 200000.0f;
        const double want = std::exp(double(x));
        worst = std::max(worst, std::abs(double(kern::exp_approx(x)) - want) / want);
    }
    CHECK(worst < 4e-7);
    // around the rounding boundaries of k = round(x log2 e), where a k that disagreed with the
    // scale's exponent would be off by a factor of 2
    double worst_edge = 0;
    for (int k = -125; k <= 0; ++k) {
        float x = float((k + 0.5) * 0.69314718055994530942);
        for (int step = 0; step < 8; ++step) x = std::nextafter(x, -100.0f);
        for (int step = 0; step < 16; ++step, x = std::nextafter(x, 100.0f)) {
            const double want = std::exp(double(x));
            worst_edge = std::max(worst_edge, std::abs(double(kern::exp_approx(x)) - want) / want);
        }
    }
    CHECK(worst_edge < 4e-7);
    CHECK(kern::exp_approx(0.0f) == Approx(1.0f).epsilon(1e-7));
    CHECK(kern::exp_approx(-100.0f) == 0.0f);
    CHECK(kern::exp_approx(-std::numeric_limits<float>::infinity()) == 0.0f);
    CHECK(std::isnan(kern::exp_approx(std::numeric_limits<float>::quiet_NaN())));
    CHECK(kern::exp_approx(1.5) == Approx(std::exp(1.5)).epsilon(1e-15));  // double: the library exp
}

TEST_CASE("kl row helpers: max and logsumexp of a row", "[kt]") {
    std::vector<float> x(37);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 20.0f + 500.0f;  // large offset, odd length
    double m = -INFINITY, s = 0;
    for (float v : x) m = std::max(m, double(v));
    for (float v : x) s += std::exp(double(v) - m);
    CHECK(kern::kl_row_logsumexp(x.data(), int64_t(x.size())) == Approx(m + std::log(s)).epsilon(1e-6));
    float ma, mb;
    std::vector<float> y(x.rbegin(), x.rend());
    y[5] = 1e4f;
    kern::kl_row_max(x.data(), y.data(), int64_t(x.size()), &ma, &mb);
    CHECK(double(ma) == m);
    CHECK(mb == 1e4f);
}

// ---- symmetric KL ----------------------------------------------------------------------------

TEST_CASE("symmetric_kl of identical logits is 0 with zero gradients", "[kt]") {
    Generator gen(1);
    Tensor<float> a = Tensor<float>::randn({3, 50}, gen);
    Tensor<float> b = a.clone().detach();
    a.requires_grad_();
    b.requires_grad_();
    Tensor<float> l = symmetric_kl(a, b);
    CHECK(std::abs(l.item()) < 1e-6);
    l.backward();
    CHECK(max_abs(a.grad()) < 1e-7);
    CHECK(max_abs(b.grad()) < 1e-7);
}

TEST_CASE("symmetric_kl matches a 2-class case computed by hand", "[kt]") {
    // a = (0, 0): p = (1/2, 1/2).  b = (log 3, 0): q = (3/4, 1/4).
    // KL(p||q) = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3);  KL(q||p) = 3/4 log(3/2) + 1/4 log(1/2).
    const double want = 0.5 * std::log(4.0 / 3.0) + 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
    Tensor<double> a = Tensor<double>::from_vector({0.0, 0.0}, {1, 2});
    Tensor<double> b = Tensor<double>::from_vector({std::log(3.0), 0.0}, {1, 2});
    CHECK(symmetric_kl(a, b).item() == Approx(want).epsilon(1e-14));
    // gradient by the closed form: ga_k = p_k (la_k - lb_k - KL(p||q)) + p_k - q_k
    a.requires_grad_();
    symmetric_kl(a, b).backward();
    const double klpq = 0.5 * std::log(4.0 / 3.0);
    const double g0 = 0.5 * (std::log(0.5 / 0.75) - klpq) + 0.5 - 0.75;
    const double g1 = 0.5 * (std::log(0.5 / 0.25) - klpq) + 0.5 - 0.25;
    CHECK(a.grad().at({0, 0}) == Approx(g0).epsilon(1e-12));
    CHECK(a.grad().at({0, 1}) == Approx(g1).epsilon(1e-12));
    CHECK(g0 + g1 == Approx(0.0).margin(1e-15));  // softmax gradients sum to zero per row
}

TEST_CASE("symmetric_kl averages over non-pad tokens", "[kt]") {
    Generator gen(2);
    Tensor<double> a = Tensor<double>::randn({2, 3, 8}, gen), b = Tensor<double>::randn({2, 3, 8}, gen);
    Tensor<uint8_t> mask = Tensor<uint8_t>::from_vector({0, 1, 0, 1, 1, 0}, {2, 3});
    double want = 0;
    for (auto [i, j] : {std::pair{0, 0}, {0, 2}, {1, 2}}) {
        Tensor<double> ra = a.select(0, i).select(0, j).unsqueeze(0), rb = b.select(0, i).select(0, j).unsqueeze(0);
        want += symmetric_kl(ra, rb).item();
    }
    CHECK(symmetric_kl(a, b, mask).item() == Approx(want / 3).epsilon(1e-12));
    CHECK(symmetric_kl(a, b, mask).item() == Approx(detail::symmetric_kl_reference(a, b, mask)).epsilon(1e-12));
    // padded rows get exactly zero gradient
    a.requires_grad_();
    symmetric_kl(a, b, mask).backward();
    for (int64_t v = 0; v < 8; ++v) {
        CHECK(a.grad().at({0, 1, v}) == 0.0);
        CHECK(a.grad().at({1, 0, v}) == 0.0);
    }
    CHECK(a.grad().at({0, 0, 0}) != 0.0);
}

TEST_CASE("symmetric_kl over all-padding tokens is 0 with zero gradients", "[kt]") {
    Generator gen(3);
    Tensor<float> a = Tensor<float>::randn({2, 5}, gen), b = Tensor<float>::randn({2, 5}, gen);
    a.requires_grad_();
    Tensor<float> l = symmetric_kl(a, b, Tensor<uint8_t>::ones({2}));
    CHECK(l.item() == 0.0f);
    l.backward();
    CHECK(max_abs(a.grad()) == 0.0);
}

TEST_CASE("symmetric_kl detach flags stop the gradient on that side only", "[kt]") {
    Generator gen(4);
    const Tensor<double> a0 = Tensor<double>::randn({3, 10}, gen), b0 = Tensor<double>::randn({3, 10}, gen);
    auto run = [&](bool da, bool db) {
        Tensor<double> a = a0.clone().detach(), b = b0.clone().detach();
        a.requires_grad_();
        b.requires_grad_();
        Tensor<double> l = symmetric_kl(a, b, {}, da, db);
        if (l.requires_grad()) l.backward();
        return std::tuple{l.item(), a.grad(), b.grad(), l.requires_grad()};
    };
    auto [l_ff, ga_ff, gb_ff, r_ff] = run(false, false);
    auto [l_tf, ga_tf, gb_tf, r_tf] = run(true, false);
    auto [l_ft, ga_ft, gb_ft, r_ft] = run(false, true);
    auto [l_tt, ga_tt, gb_tt, r_tt] = run(true, true);
    CHECK(l_ff == l_tf);  // the value never changes
    CHECK(l_ff == l_ft);
    CHECK(l_ff == l_tt);
    CHECK_FALSE(ga_tf.defined());
    CHECK(max_abs_diff(gb_tf, gb_ff) == 0.0);
    CHECK_FALSE(gb_ft.defined());
    CHECK(max_abs_diff(ga_ft, ga_ff) == 0.0);
    CHECK_FALSE(r_tt);  // both sides detached: no history at all
    CHECK_FALSE(ga_tt.defined());
    CHECK_FALSE(gb_tt.defined());
}

TEST_CASE("symmetric_kl in float at a 32k vocabulary agrees with double", "[kt]") {
    Generator gen(5);
    const int64_t V = 32000;
    Tensor<double> ad = Tensor<double>::randn({3, V}, gen, 0.0, 3.0), bd = Tensor<double>::randn({3, V}, gen, 0.0, 3.0);
    Tensor<float> af = cast<float>(ad), bf = cast<float>(bd);
    // a common offset of 50 on one side must not cost precision (softmax is shift invariant)
    Tensor<float> af_shift = cast<float>(ad + 50.0);
    const double ref = detail::symmetric_kl_reference(cast<double>(af), cast<double>(bf));
    CHECK(symmetric_kl(af, bf).item() == Approx(ref).epsilon(1e-5));
    CHECK(symmetric_kl(af_shift, bf).item() == Approx(ref).epsilon(2e-5));
    af.requires_grad_();
    bf.requires_grad_();
    Tensor<double> a2 = cast<double>(af), b2 = cast<double>(bf);
    a2.requires_grad_();
    b2.requires_grad_();
    symmetric_kl(af, bf).backward();
    symmetric_kl(a2, b2).backward();
    const double scale = max_abs(a2.grad());
    CHECK(max_abs_diff(cast<double>(af.grad()), a2.grad()) < 1e-4 * scale);
    CHECK(max_abs_diff(cast<double>(bf.grad()), b2.grad()) < 1e-4 * max_abs(b2.grad()));
}

TEST_CASE("symmetric_kl takes many rows on several threads with the same result", "[kt]") {
    Generator gen(6);
    Tensor<float> a = Tensor<float>::randn({40, 10000}, gen), b = Tensor<float>::randn({40, 10000}, gen);
    // rows one at a time (too small to thread) against the whole batch (threaded)
    double sum_rows = 0;
    for (int64_t r = 0; r < 40; ++r) sum_rows += symmetric_kl(a.narrow(0, r, 1), b.narrow(0, r, 1)).item();
    CHECK(symmetric_kl(a, b).item() == Approx(sum_rows / 40).epsilon(1e-6));
}

TEST_CASE("symmetric_kl errors name the shapes", "[kt]") {
    Tensor<float> a = Tensor<float>::zeros({2, 5}), b = Tensor<float>::zeros({2, 6});
    CHECK_THROWS_WITH(symmetric_kl(a, b), Contains("symmetric_kl") && Contains("(2, 5)") && Contains("(2, 6)"));
    CHECK_THROWS_WITH(symmetric_kl(Tensor<float>::zeros({5}), Tensor<float>::zeros({5})),
                      Contains("(N, V) or (B, T, V)"));
    CHECK_THROWS_WITH(symmetric_kl(a, a, Tensor<uint8_t>::zeros({3})), Contains("pad_mask") && Contains("(3,)"));
    CHECK_THROWS_AS(symmetric_kl(Tensor<float>::zeros({2, 0}), Tensor<float>::zeros({2, 0})), Error);
}

// ---- distillation ----------------------------------------------------------------------------

TEST_CASE("soft_distill matches the naive reference and scales by T^2", "[kt]") {
    Generator gen(7);
    Tensor<double> s = Tensor<double>::randn({2, 3, 11}, gen), t = Tensor<double>::randn({2, 3, 11}, gen);
    for (double T : {0.5, 1.0, 4.0})
        CHECK(soft_distill(s, t, T).item() == Approx(detail::soft_distill_reference(s, t, T)).epsilon(1e-12));
    // T = 1: KL(softmax(t) || softmax(s)), i.e. the a = t, b = s half of the symmetric KL
    CHECK(soft_distill(s, s.clone(), 3.0).item() == Approx(0.0).margin(1e-14));
    // hand-computed: t = (0, 0) -> p = (1/2, 1/2); s = (log 3, 0) -> q = (3/4, 1/4); T = 1
    Tensor<double> s2 = Tensor<double>::from_vector({std::log(3.0), 0.0}, {1, 2});
    Tensor<double> t2 = Tensor<double>::zeros({1, 2});
    CHECK(soft_distill(s2, t2).item() == Approx(0.5 * std::log(4.0 / 3.0)).epsilon(1e-14));
    // gradient of T^2 KL(p_t || p_s) in s is T (q - p) / rows
    s2.requires_grad_();
    soft_distill(s2, t2, 2.0).backward();
    const double q0 = 1.0 / (1.0 + 1.0 / std::sqrt(3.0));  // softmax(log(3)/2, 0)[0]
    CHECK(s2.grad().at({0, 0}) == Approx(2.0 * (q0 - 0.5)).epsilon(1e-12));
}

TEST_CASE("soft_distill and hard_distill never give the teacher a gradient", "[kt]") {
    Generator gen(8);
    Tensor<float> s = Tensor<float>::randn({4, 9}, gen), t = Tensor<float>::randn({4, 9}, gen);
    s.requires_grad_();
    t.requires_grad_();
    (soft_distill(s, t, 2.0) + hard_distill(s, t)).backward();
    CHECK(s.grad().defined());
    CHECK_FALSE(t.grad().defined());
}

TEST_CASE("hard_distill is cross-entropy against the teacher's argmax", "[kt]") {
    Tensor<double> s = Tensor<double>::from_vector({0.1, 0.2, 0.3, 1.0, -1.0, 0.5}, {2, 3});
    Tensor<double> t = Tensor<double>::from_vector({0.0, 5.0, 1.0, 2.0, 2.0, -3.0}, {2, 3});  // argmax 1, 0 (tie)
    auto ce = [](const double* row, int tgt) {
        double m = std::max({row[0], row[1], row[2]}), z = 0;
        for (int i = 0; i < 3; ++i) z += std::exp(row[i] - m);
        return -(row[tgt] - m - std::log(z));
    };
    const auto v = s.to_vector();
    CHECK(hard_distill(s, t).item() == Approx((ce(v.data(), 1) + ce(v.data() + 3, 0)) / 2).epsilon(1e-14));
}

TEST_CASE("distillation errors name the problem", "[kt]") {
    Tensor<float> s = Tensor<float>::zeros({2, 5});
    CHECK_THROWS_WITH(soft_distill(s, s, 0.0), Contains("temperature"));
    CHECK_THROWS_WITH(soft_distill(s, s, -1.0), Contains("temperature"));
    CHECK_THROWS_WITH(soft_distill(s, Tensor<float>::zeros({2, 4})), Contains("(2, 5)") && Contains("(2, 4)"));
    CHECK_THROWS_WITH(hard_distill(s, Tensor<float>::zeros({3, 5})), Contains("hard_distill") && Contains("(3, 5)"));
}

// ---- relation losses -------------------------------------------------------------------------

TEST_CASE("relation_loss matches a case computed by hand", "[kt]") {
    // student rows orthogonal (cos matrix = I), teacher rows parallel (all ones): the two
    // off-diagonal entries differ by 1 -> mean over 4 entries = 2 / 4.
    Tensor<double> s = Tensor<double>::from_vector({1, 0, 0, 2}, {2, 2});
    Tensor<double> t = Tensor<double>::from_vector({1, 1, 1, 3, 3, 3}, {2, 3});
    CHECK(relation_loss(s, t).item() == Approx(0.5).epsilon(1e-14));
    // cosine relations ignore row scales: scaling student rows changes nothing
    Tensor<double> s2 = Tensor<double>::from_vector({5, 0, 0, 0.1}, {2, 2});
    CHECK(relation_loss(s2, t).item() == Approx(0.5).epsilon(1e-14));
    CHECK(relation_loss(t, t * 7.0).item() == Approx(0.0).margin(1e-14));
}

TEST_CASE("relation_loss and qk_relation_loss match the naive references", "[kt]") {
    Generator gen(9);
    Tensor<float> s = Tensor<float>::randn({3, 16, 24}, gen), t = Tensor<float>::randn({3, 16, 40}, gen);
    CHECK(relation_loss(s, t).item() == Approx(detail::relation_loss_reference(s, t)).epsilon(1e-5));
    Tensor<float> s2 = s.select(0, 1), t2 = t.select(0, 1);
    CHECK(relation_loss(s2, t2).item() == Approx(detail::relation_loss_reference(s2, t2)).epsilon(1e-5));
    Tensor<float> qs = Tensor<float>::randn({2, 4, 8, 6}, gen), ks = Tensor<float>::randn({2, 4, 8, 6}, gen);
    Tensor<float> qt = Tensor<float>::randn({2, 4, 8, 10}, gen), kt = Tensor<float>::randn({2, 4, 8, 10}, gen);
    CHECK(qk_relation_loss(qs, ks, qt, kt).item() ==
          Approx(detail::qk_relation_loss_reference(qs, ks, qt, kt)).epsilon(1e-5));
}

TEST_CASE("relation losses detach the teacher by default", "[kt]") {
    Generator gen(10);
    Tensor<double> s = Tensor<double>::randn({5, 4}, gen), t = Tensor<double>::randn({5, 6}, gen);
    s.requires_grad_();
    t.requires_grad_();
    relation_loss(s, t).backward();
    CHECK(s.grad().defined());
    CHECK_FALSE(t.grad().defined());
    relation_loss(s, t, false).backward();
    CHECK(t.grad().defined());
    Tensor<double> q = Tensor<double>::randn({1, 2, 3, 4}, gen), k = Tensor<double>::randn({1, 2, 3, 4}, gen);
    q.requires_grad_();
    k.requires_grad_();
    Tensor<double> s2 = Tensor<double>::randn({1, 2, 3, 4}, gen);
    s2.requires_grad_();
    qk_relation_loss(s2, s2 * 2.0, q, k).backward();
    CHECK(s2.grad().defined());
    CHECK_FALSE(q.grad().defined());
    CHECK_FALSE(k.grad().defined());
}

TEST_CASE("relation losses reject mismatched shapes naming both", "[kt]") {
    Tensor<float> s = Tensor<float>::zeros({8, 4}), t = Tensor<float>::zeros({6, 4});
    CHECK_THROWS_WITH(relation_loss(s, t), Contains("relation_loss") && Contains("(8, 4)") && Contains("(6, 4)") &&
                                               Contains("token counts"));
    CHECK_THROWS_WITH(relation_loss(Tensor<float>::zeros({2, 8, 4}), Tensor<float>::zeros({3, 8, 4})),
                      Contains("(2, 8, 4)") && Contains("(3, 8, 4)"));
    CHECK_THROWS_WITH(relation_loss(Tensor<float>::zeros({2, 8, 4}), Tensor<float>::zeros({8, 4})),
                      Contains("(2, 8, 4)") && Contains("(8, 4)"));
    Tensor<float> q4 = Tensor<float>::zeros({2, 4, 8, 6}), q3 = Tensor<float>::zeros({2, 3, 8, 6});
    CHECK_THROWS_WITH(qk_relation_loss(q4, q4, q3, q3), Contains("heads") && Contains("(2, 4, 8, 6)") &&
                                                            Contains("(2, 3, 8, 6)"));
    Tensor<float> n7 = Tensor<float>::zeros({2, 4, 7, 6});
    CHECK_THROWS_WITH(qk_relation_loss(q4, q4, n7, n7), Contains("(2, 4, 8, 6)") && Contains("(2, 4, 7, 6)"));
    CHECK_THROWS_WITH(qk_relation_loss(q4, n7, q4, q4), Contains("keys"));
}

TEST_CASE("relation_loss of a zero row stays finite", "[kt]") {
    Tensor<double> s = Tensor<double>::from_vector({0, 0, 1, 2, 3, 1}, {3, 2});
    Tensor<double> t = Tensor<double>::from_vector({1, 0, 0, 1, 1, 1}, {3, 2});
    s.requires_grad_();
    Tensor<double> l = relation_loss(s, t);
    CHECK(std::isfinite(l.item()));
    l.backward();
    for (double g : s.grad().to_vector()) CHECK(std::isfinite(g));
}

// ---- sampling --------------------------------------------------------------------------------

TEST_CASE("sample_token_groups draws distinct tokens per group, reproducibly", "[kt]") {
    Generator g1(11), g2(11);
    Tensor<int64_t> idx = sample_token_groups(300, 32, 128, g1);
    REQUIRE(idx.shape() == Shape{32, 128});
    std::set<int64_t> all;
    for (int64_t g = 0; g < 32; ++g) {
        std::set<int64_t> seen;
        for (int64_t i = 0; i < 128; ++i) {
            const int64_t v = idx.at({g, i});
            CHECK((v >= 0 && v < 300));
            seen.insert(v);
            all.insert(v);
        }
        CHECK(seen.size() == 128);
    }
    CHECK(all.size() > 250);  // groups are independent draws, not one fixed subset
    CHECK(sample_token_groups(300, 32, 128, g2).to_vector() == idx.to_vector());
    Generator g3(12);
    Tensor<int64_t> full = sample_token_groups(5, 2, 5, g3);  // N == num_tokens: permutations
    for (int64_t g = 0; g < 2; ++g) {
        std::set<int64_t> s;
        for (int64_t i = 0; i < 5; ++i) s.insert(full.at({g, i}));
        CHECK(s.size() == 5);
    }
    CHECK_THROWS_WITH(sample_token_groups(100, 2, 128, g3), Contains("128") && Contains("100"));
    CHECK_THROWS_AS(sample_token_groups(100, 0, 8, g3), Error);
}

TEST_CASE("gather_token_groups picks rows into (G, N, D) with gradient", "[kt]") {
    Tensor<double> x = Tensor<double>::arange(12.0).reshape({4, 3}).detach();
    x.requires_grad_();
    Tensor<int64_t> idx = Tensor<int64_t>::from_vector({3, 0, 1, 3}, {2, 2});
    Tensor<double> y = gather_token_groups(x, idx);
    REQUIRE(y.shape() == Shape{2, 2, 3});
    CHECK(y.at({0, 0, 2}) == 11.0);
    CHECK(y.at({1, 1, 0}) == 9.0);
    sum(y).backward();
    CHECK(x.grad().at({3, 0}) == 2.0);  // picked twice
    CHECK(x.grad().at({2, 0}) == 0.0);
}
