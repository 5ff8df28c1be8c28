// optim_test.cpp — optimizers by hand-computed steps, schedules, clipping, state round trip.
// (Agreement with PyTorch's optimizers is checked by tests/python/optim_parity.py.)
#include <catch2/catch.hpp>

#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>

using namespace moekd;
using namespace moekd::optim;
using Catch::Contains;

namespace {
Tensor<double> param(std::vector<double> v) { return Tensor<double>::from_vector(v).requires_grad_(); }
void set_grad(Tensor<double>& p, std::vector<double> g) { p.set_grad(Tensor<double>::from_vector(g)); }
}  // namespace

TEST_CASE("SGD with momentum follows torch's rule", "[optim]") {
    auto p = param({1.0, -2.0});
    SGD<double> opt({{{p}, 0.1, 0.0}}, 0.9);
    set_grad(p, {1.0, 2.0});
    opt.step();  // buf = g; p -= 0.1 g
    CHECK(p.to_vector() == std::vector<double>{0.9, -2.2});
    set_grad(p, {1.0, 2.0});
    opt.step();  // buf = 0.9 g + g = 1.9 g
    CHECK(p.at({0}) == Approx(0.9 - 0.19));
    CHECK(p.at({1}) == Approx(-2.2 - 0.38));
}

TEST_CASE("Adam's first step moves each weight by lr", "[optim]") {
    // With bias correction, step 1 is p -= lr * g / (|g| + eps) = lr * sign(g).
    auto p = param({1.0, 1.0, 1.0});
    Adam<double> opt({{{p}, 0.01, 0.0}});
    set_grad(p, {3.0, -0.5, 0.0});
    opt.step();
    CHECK(p.at({0}) == Approx(0.99));
    CHECK(p.at({1}) == Approx(1.01));
    CHECK(p.at({2}) == 1.0);
}

TEST_CASE("AdamW decays weights directly, Adam through the gradient", "[optim]") {
    auto a = param({2.0}), b = param({2.0});
    AdamW<double> w({{{a}, 0.1, 0.5}});
    Adam<double> l2({{{b}, 0.1, 0.5}});
    set_grad(a, {0.0});
    set_grad(b, {0.0});
    w.step();
    l2.step();
    CHECK(a.item() == Approx(2.0 * (1 - 0.1 * 0.5)));  // decay only: the Adam part sees g = 0
    CHECK(b.item() == Approx(2.0 - 0.1));               // g = wd p = 1 -> a step of lr
}

TEST_CASE("LAMB scales the step by the trust ratio", "[optim]") {
    auto p = param({3.0, 4.0});  // ||p|| = 5
    LAMB<double> opt({{{p}, 0.1, 0.0}}, 0.9, 0.999, 0.0);
    set_grad(p, {1.0, 1.0});
    opt.step();  // r = sign(g) = (1, 1), ||r|| = sqrt 2, trust = 5 / sqrt 2
    const double s = 0.1 * 5 / std::sqrt(2.0);
    CHECK(p.at({0}) == Approx(3.0 - s));
    CHECK(p.at({1}) == Approx(4.0 - s));
}

// LAMB as it was written before its terms moved to kernels/optim.cuh (shared with the device
// update), one parameter: the moments, r = m^ / (sqrt(v^) + eps) + wd p, both squared norms in
// double in order, trust = ||p|| / ||r|| (1 when either is 0), p -= T(lr trust) r.
template <class T>
void lamb_reference(std::vector<T>& p, const std::vector<T>& grad, std::vector<T>& m, std::vector<T>& v, double lr,
                    double wd, double b1, double b2, double eps, int64_t step) {
    const size_t n = p.size();
    const double t = double(step);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    std::vector<T> r(n);
    double p_sq = 0, r_sq = 0;
    for (size_t i = 0; i < n; ++i) {
        m[i] = T(b1) * m[i] + T(1 - b1) * grad[i];
        v[i] = T(b2) * v[i] + T(1 - b2) * grad[i] * grad[i];
        const T mh = m[i] / T(bc1), vh = v[i] / T(bc2);
        r[i] = mh / (std::sqrt(vh) + T(eps)) + T(wd) * p[i];
        p_sq += double(p[i]) * p[i];
        r_sq += double(r[i]) * r[i];
    }
    const double pn = std::sqrt(p_sq), rn = std::sqrt(r_sq);
    const double trust = (pn > 0 && rn > 0) ? pn / rn : 1.0;
    const T scale = T(lr * trust);
    for (size_t i = 0; i < n; ++i) p[i] = p[i] - scale * r[i];
}

// Six steps over two groups (decay on / off) holding a random weight, a zero weight (trust 1), a
// zero weight with zero gradients (stays 0) and a zero gradient without decay (u = 0: unchanged):
// the same bits as the reference above, and the zero-norm rules by hand.
template <class T>
void check_lamb_bits() {
    Generator gen(41);
    const double lr_a = 0.05, lr_b = 0.02, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-6;
    const std::vector<Tensor<T>> init = {Tensor<T>::randn({3, 50}, gen), Tensor<T>::zeros({2, 3}), Tensor<T>::zeros({7}),
                                         Tensor<T>::randn({5}, gen), Tensor<T>::randn({9}, gen)};
    const std::vector<int> group = {0, 0, 1, 1, 1};
    const std::vector<bool> zero_grad = {false, true, false, true, false};
    std::vector<Tensor<T>> ps;
    std::vector<std::vector<T>> rp, rm, rv;
    for (const auto& t : init) {
        ps.push_back(t.clone().detach().requires_grad_());
        rp.push_back(t.to_vector());
        rm.emplace_back(size_t(t.numel()), T(0));
        rv.emplace_back(size_t(t.numel()), T(0));
    }
    LAMB<T> opt({{{ps[0], ps[1]}, lr_a, wd}, {{ps[2], ps[3], ps[4]}, lr_b, 0.0}}, b1, b2, eps);
    for (int s = 1; s <= 6; ++s) {
        for (size_t i = 0; i < ps.size(); ++i) {
            const Tensor<T> g = zero_grad[i] ? Tensor<T>::zeros(init[i].shape()) : Tensor<T>::randn(init[i].shape(), gen, 0.1 * s);
            ps[i].set_grad(g);
            lamb_reference(rp[i], g.to_vector(), rm[i], rv[i], group[i] ? lr_b : lr_a, group[i] ? 0.0 : wd, b1, b2, eps, s);
        }
        opt.step();
        for (size_t i = 0; i < ps.size(); ++i) {
            INFO("step " << s << ", parameter " << i);
            CHECK(ps[i].to_vector() == rp[i]);
        }
    }
    CHECK(ps[1].to_vector() == std::vector<T>(6, T(0)));  // both norms 0
    CHECK(ps[3].to_vector() == init[3].to_vector());      // u = 0
    // a zero weight's first step is a plain lr step: trust 1, and u = sign(g) on step 1 (eps aside)
    Tensor<T> z = Tensor<T>::zeros({2}).requires_grad_();
    LAMB<T> one({{{z}, 0.1, 0.0}}, b1, b2, 0.0);
    z.set_grad(Tensor<T>::from_vector({T(2), T(-0.5)}));
    one.step();
    CHECK(z.to_vector() == std::vector<T>{T(-0.1), T(0.1)});
}

TEST_CASE("LAMB keeps the reference's bits and its zero-norm rules", "[optim]") {
    check_lamb_bits<double>();
    check_lamb_bits<float>();
}

TEST_CASE("decay_groups keeps biases and norms out of weight decay", "[optim]") {
    auto w = Tensor<float>::ones({2, 2}).requires_grad_();
    auto b = Tensor<float>::ones({2}).requires_grad_();
    auto groups = decay_groups<float>({w, b}, 1e-3, 0.01);
    REQUIRE(groups.size() == 2);
    CHECK(groups[0].weight_decay == 0.01);
    CHECK(groups[0].params[0].is_same(w));
    CHECK(groups[1].weight_decay == 0.0);
}

TEST_CASE("optimizer state round-trips and resumes identically", "[optim]") {
    Generator gen(5);
    auto run = [&](bool reload) {
        auto p = Tensor<double>::from_vector({0.5, -1.0, 2.0}).requires_grad_();
        auto opt = std::make_unique<Adam<double>>(std::vector<ParamGroup<double>>{{{p}, 0.05, 0.01}});
        for (int s = 0; s < 6; ++s) {
            if (reload && s == 3) {
                auto st = opt->state_dict();
                opt = std::make_unique<Adam<double>>(std::vector<ParamGroup<double>>{{{p}, 0.05, 0.01}});
                opt->load_state_dict(st);
            }
            p.zero_grad();
            sum(p * p * p).backward();
            opt->step();
        }
        return p.to_vector();
    };
    CHECK(run(false) == run(true));  // bit for bit
    auto p = param({1.0});
    Adam<double> opt({{{p}, 0.1, 0.0}});
    CHECK_THROWS_WITH(opt.load_state_dict({}), Contains("no 'step'"));
    CHECK_THROWS_WITH(opt.load_state_dict({{"step", Tensor<double>::scalar(1)}, {"state.0.exp_avg", Tensor<double>::zeros({3})}}),
                      Contains("'state.0.exp_avg' has shape (3,) but parameter 0 has shape (1,)"));
}

TEST_CASE("clip_grad_norm scales to the max norm and reports NaN", "[optim]") {
    auto a = param({0.0, 0.0}), b = param({0.0});
    set_grad(a, {3.0, 0.0});
    set_grad(b, {4.0});
    CHECK(clip_grad_norm<double>({a, b}, 1.0) == Approx(5.0));
    CHECK(a.grad().at({0}) == Approx(0.6).epsilon(1e-5));
    CHECK(b.grad().at({0}) == Approx(0.8).epsilon(1e-5));
    CHECK(clip_grad_norm<double>({a, b}, 10.0) == Approx(1.0).epsilon(1e-5));  // under the cap: unchanged
    set_grad(b, {std::nan("")});
    CHECK_THROWS_WITH(clip_grad_norm<double>({a, b}, 1.0), Contains("gradient norm is nan"));
}

TEST_CASE("schedules match their formulas", "[optim]") {
    CHECK(inverse_sqrt_lr(0, 1e-3, 100) == 0.0);
    CHECK(inverse_sqrt_lr(50, 1e-3, 100) == Approx(5e-4));
    CHECK(inverse_sqrt_lr(100, 1e-3, 100) == Approx(1e-3));
    CHECK(inverse_sqrt_lr(400, 1e-3, 100) == Approx(5e-4));
    CHECK(linear_warmup_decay_lr(5, 1.0, 10, 110) == Approx(0.5));
    CHECK(linear_warmup_decay_lr(60, 1.0, 10, 110) == Approx(0.5));
    CHECK(linear_warmup_decay_lr(200, 1.0, 10, 110) == 0.0);
    CHECK(cosine_lr(10, 1.0, 10, 110) == Approx(1.0));
    CHECK(cosine_lr(60, 1.0, 10, 110) == Approx(0.5));
    CHECK(cosine_lr(110, 1.0, 10, 110, 0.1) == Approx(0.1));
    CHECK_THROWS_WITH(inverse_sqrt_lr(1, 1.0, 0), Contains("warmup 0"));
}
