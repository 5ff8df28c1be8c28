// moe_test.cpp — the Mixture-of-Experts layer (moe/*.hpp) against hand-computed values, the
// dense FFN, a naive reference and itself:
//   - E = 1, top-1 is exactly the dense FFN (gate probability 1); for E > 1 every token's output
//     is its chosen expert run on that token alone, times its gate
//   - the layer (top-2, capacity, pad, ReLU / GELU) matches detail::moe_reference
//   - capacity drops exactly the assignments it should, in GShard priority order, train / eval
//   - balance losses and z-loss equal hand-computed values; statistics count what they should
//   - determinism: two runs give the same bits; the direct .grad accumulation equals the engine's
//   - pad tokens get zero output and no weight in losses or statistics
//   - errors name the argument or the layer; jitter is training-only and seeded
//   - the layer works as a Transformer layer's FFN, with fairseq / Tutel parameter names
#include <cmath>
#include <cstring>
#include <set>

#include <catch2/catch.hpp>
#include <moekd/moe.hpp>
#include <moekd/moe/reference.hpp>
#include <moekd/nn/transformer.hpp>
#include <moekd/testing/gradcheck.hpp>

using namespace moekd;
using moe::MoEConfig;
using moe::MoELayer;

namespace {

MoEConfig config(int64_t D, int64_t F, int64_t E, int64_t k) {
    MoEConfig c;
    c.d_model = D;
    c.ffn_dim = F;
    c.router.num_experts = E;
    c.router.top_k = k;
    c.name = "enc.layers.1.moe";
    return c;
}

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
    REQUIRE(a.shape() == b.shape());
    const auto x = a.to_vector(), y = b.to_vector();
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(double(x[i]) - double(y[i])));
    return m;
}
template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
    if (a.defined() != b.defined()) return false;
    if (!a.defined()) return true;
    const auto x = a.to_vector(), y = b.to_vector();
    return a.shape() == b.shape() && std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
}

/// Every parameter's gradient, in named order.
template <class T>
std::vector<Tensor<T>> grads_of(const nn::Module<T>& m) {
    std::vector<Tensor<T>> g;
    for (auto& [n, p] : m.named_parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : Tensor<T>());
    return g;
}

struct ThreadsGuard {
    int saved = moe::num_threads();
    explicit ThreadsGuard(int n) { moe::set_num_threads(n); }
    ~ThreadsGuard() { moe::set_num_threads(saved); }
};

}  // namespace

TEST_CASE("gradcheck through the layer's own parameters: top-2, capacity, pad, aux loss", "[moe]") {
    // gradcheck perturbs its inputs in place and reads their .grad: handing it the layer's own
    // parameter handles checks the gradients the layer really produces (router included)
    Generator gen(10);
    auto cfg = config(4, 5, 3, 2);
    cfg.activation = nn::Activation::GELU;
    cfg.router.capacity_factor_train = 0.7;
    cfg.z_loss_weight = 0.1;
    cfg.balance_weight = 0.5;
    cfg.router.bias = GENERATE(false, true);  // with the bias: gate.bias is one more input
    auto l = std::make_shared<MoELayer<double>>(cfg, gen);
    CHECK(l->named_parameters().size() == (cfg.router.bias ? 14u : 13u));
    const Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 1, 0, 0, 0, 0, 1, 0}, {9});
    std::vector<Tensor<double>> inputs{Tensor<double>::randn({9, 4}, gen)};
    for (auto& [n, p] : l->named_parameters()) inputs.push_back(p);
    auto f = [&](const std::vector<Tensor<double>>& in) {
        auto out = l->forward_with_stats(in[0], pad);
        return add(out.y, out.aux_loss);
    };
    auto out = l->forward_with_stats(inputs[0], pad);
    CHECK(out.stats.dropped > 0);
    auto r = testing::gradcheck(f, inputs);
    INFO(r.report);
    CHECK(r.ok);
}

TEST_CASE("router bias: the logits are W_r x + b_r, and a large b_r takes every token", "[moe]") {
    Generator gen(12);
    auto cfg = config(4, 5, 3, 1);
    cfg.router.bias = true;
    cfg.router.dropless = true;
    auto l = std::make_shared<MoELayer<double>>(cfg, gen);
    REQUIRE(l->gate->bias.defined());
    CHECK(l->gate->bias.shape() == Shape{3});
    const Tensor<double> x = Tensor<double>::randn({6, 4}, gen);
    auto out = l->forward_with_stats(x);
    const Tensor<double> want = add(matmul(x, l->gate->weight.t()), l->gate->bias);
    CHECK(max_abs_diff(out.routing.logits, want) < 1e-12);
    CHECK(max_abs_diff(out.routing.logits, matmul(x, l->gate->weight.t())) > 1e-3);  // the bias is not zero
    l->gate->bias.data()[2] = 100.0;
    out = l->forward_with_stats(x);
    CHECK(out.stats.tokens_per_expert == std::vector<int64_t>{0, 0, 6});
    CHECK_THROWS_WITH(moe::router_logits(x, l->gate->weight, Tensor<double>::zeros({4})),
                      Catch::Contains("gate bias (4,)"));
}

TEST_CASE("E = 1, top-1: the MoE layer is exactly the dense FFN", "[moe]") {
    Generator gen(11);
    auto cfg = config(6, 10, 1, 1);
    cfg.router.dropless = true;
    for (auto act : {nn::Activation::ReLU, nn::Activation::GELU}) {
        cfg.activation = act;
        auto moe_l = std::make_shared<MoELayer<double>>(cfg, gen);
        auto dense = std::make_shared<nn::FeedForward<double>>(6, 10, gen, act);
        // the expert's weights into the dense FFN (same names under experts.0.)
        nn::Module<double>::StateDict sd;
        for (auto& [n, t] : moe_l->experts->ptr(0)->state_dict()) sd[n] = t;
        dense->load_state_dict(sd, false);
        Tensor<double> x = Tensor<double>::randn({3, 4, 6}, gen).requires_grad_();
        Tensor<double> x2 = x.detach().clone().requires_grad_();
        auto out = moe_l->forward_with_stats(x);
        for (double p : out.routing.probs.to_vector()) CHECK(p == 1.0);  // softmax of one logit
        Tensor<double> yd = dense->forward(x2);
        CHECK(same_bits(out.y, yd));  // the same GEMMs with the same bias convention as nn::Linear
        Tensor<double> w = Tensor<double>::randn({3, 4, 6}, gen);
        sum(out.y * w).backward();
        sum(yd * w).backward();
        CHECK(max_abs_diff(x.grad(), x2.grad()) < 1e-12);
        CHECK(max_abs_diff(moe_l->experts->ptr(0)->fc1->weight.grad(), dense->fc1->weight.grad()) < 1e-12);
        CHECK(max_abs_diff(moe_l->experts->ptr(0)->fc2->bias.grad(), dense->fc2->bias.grad()) < 1e-12);
        // the gate gets no gradient through a probability that is always 1
        for (double g : moe_l->gate->weight.grad().to_vector()) CHECK(std::abs(g) < 1e-12);
    }
}

TEST_CASE("E > 1: each token's output is its expert on that token alone, times its gate", "[moe]") {
    Generator gen(12);
    auto cfg = config(5, 7, 4, 1);
    cfg.router.dropless = true;
    auto l = std::make_shared<MoELayer<float>>(cfg, gen);
    Tensor<float> x = Tensor<float>::randn({2, 9, 5}, gen);
    auto out = l->forward_with_stats(x);
    const auto idx = out.routing.experts.to_vector();
    const auto gates = out.routing.gates.to_vector();
    const auto probs = out.routing.probs.to_vector();
    NoGrad ng;
    for (int64_t t = 0; t < 18; ++t) {
        const int64_t e = idx[t];
        CHECK(gates[t] == probs[t * 4 + e]);  // top-1 Switch: the gate is the probability itself
        for (int64_t i = 0; i < 4; ++i) CHECK(probs[t * 4 + i] <= probs[t * 4 + e]);
        auto& ex = l->experts->operator[](e);
        Tensor<float> xt = x.reshape({18, 5}).narrow(0, t, 1);
        Tensor<float> alone = ex.fc2->forward(relu(ex.fc1->forward(xt))) * gates[t];
        CHECK(max_abs_diff(out.y.reshape({18, 5}).narrow(0, t, 1), alone) < 1e-5);
    }
}

TEST_CASE("the layer matches the naive reference: top-2, capacity, padding, ReLU and GELU", "[moe]") {
    for (int threads : {1, 2, 3}) {
        ThreadsGuard tg(threads);
        for (auto act : {nn::Activation::ReLU, nn::Activation::GELU}) {
            Generator gen(13);
            auto cfg = config(6, 8, 5, 2);
            cfg.activation = act;
            cfg.router.capacity_factor_train = 0.8;  // some assignments dropped
            auto l = std::make_shared<MoELayer<double>>(cfg, gen);
            Tensor<double> x = Tensor<double>::randn({4, 10, 6}, gen);
            Tensor<uint8_t> pad = Tensor<uint8_t>::zeros({4, 10});
            for (int64_t i : {7, 8, 9, 19, 35}) pad.data()[i] = 1;
            auto out = l->forward_with_stats(x, pad);
            CHECK(out.stats.dropped > 0);
            auto plan = moe::make_dispatch_plan(out.routing.experts, 5, out.stats.capacity, pad);
            Tensor<double> ref = moe::detail::moe_reference(x.reshape({40, 6}), *plan, out.routing.gates.detach(),
                                                            l->expert_weights(), act);
            CHECK(max_abs_diff(out.y.reshape({40, 6}), ref) < 1e-12);
        }
    }
}

TEST_CASE("capacity drops exactly the assignments it should, in GShard priority order", "[moe]") {
    Generator gen(14);
    auto cfg = config(3, 4, 2, 2);
    auto l = std::make_shared<MoELayer<double>>(cfg, gen);
    // 5 tokens, top-2 over 2 experts. First choices: 1 0 1 1 0; second: 0 1 0 0 1.
    IndexTensor idx = IndexTensor::from_vector({1, 0, 0, 1, 1, 0, 1, 0, 0, 1}, {5, 2});
    Tensor<double> gates = Tensor<double>::full({5, 2}, 0.5);
    Tensor<double> x = Tensor<double>::randn({5, 3}, gen);
    // capacity 3: expert 1 takes first choices of tokens 0, 2, 3 (full), so every second choice
    // to expert 1 (tokens 1, 4) is dropped; expert 0 takes first choices of 1, 4, then the second
    // choice of token 0; tokens 2 and 3 lose their second choice although they come before 4.
    auto plan = moe::make_dispatch_plan(idx, 2, 3);
    CHECK(plan->counts == std::vector<int64_t>{5, 5});
    CHECK(plan->kept == std::vector<int64_t>{3, 3});
    CHECK(plan->slot_token == std::vector<int64_t>{1, 4, 0, 0, 2, 3});
    CHECK(plan->slot_choice == std::vector<int64_t>{0, 0, 1, 0, 0, 0});
    CHECK(plan->slot_of == std::vector<int64_t>{3, 2, 0, -1, 4, -1, 5, -1, 1, -1});
    CHECK(plan->dropped() == 4);
    Tensor<double> y = l->forward_fixed(x, idx, gates, Tensor<uint8_t>(), 3);
    Tensor<double> ref = moe::detail::moe_reference(x, *plan, gates, l->expert_weights(), cfg.activation);
    CHECK(max_abs_diff(y, ref) < 1e-12);
    CHECK(l->last_stats().dropped == 4);
    CHECK(l->last_stats().dropped_fraction == Approx(0.4));
    // capacity 1: one row per expert, the first in priority order: tokens 0 and 1 keep their first
    // choice only; tokens 2, 3 and 4 are dropped entirely and get a zero output
    auto p1 = moe::make_dispatch_plan(idx, 2, 1);
    CHECK(p1->slot_token == std::vector<int64_t>{1, 0});
    Tensor<double> y1 = l->forward_fixed(x, idx, gates, Tensor<uint8_t>(), 1);
    for (int64_t t : {2, 3, 4})
        for (int64_t d = 0; d < 3; ++d) CHECK(y1.at({t, d}) == 0.0);
    CHECK(l->last_stats().tokens_fully_dropped == 3);
    // capacity 0 drops everything; the output is zero and gradients flow nowhere but are defined
    Tensor<double> xg = x.clone().requires_grad_();
    Tensor<double> y0 = l->forward_fixed(xg, idx, gates, Tensor<uint8_t>(), 0);
    CHECK(max_abs_diff(y0, Tensor<double>::zeros({5, 3})) == 0.0);
    sum(y0).backward();
    CHECK(max_abs_diff(xg.grad(), Tensor<double>::zeros({5, 3})) == 0.0);
}

TEST_CASE("capacity = ceil(k * tokens * factor / E), train and eval factors, dropless", "[moe]") {
    CHECK(kern::expert_capacity(8, 1, 1.0, 4) == 2);
    CHECK(kern::expert_capacity(9, 1, 1.0, 4) == 3);
    CHECK(kern::expert_capacity(10, 2, 1.25, 4) == 7);  // 6.25 -> 7
    CHECK(kern::expert_capacity(0, 2, 1.25, 4) == 0);
    Generator gen(15);
    auto cfg = config(4, 4, 2, 1);
    cfg.router.capacity_factor_train = 0.5;
    cfg.router.capacity_factor_eval = 1.5;
    auto l = std::make_shared<MoELayer<float>>(cfg, gen);
    Tensor<float> x = Tensor<float>::randn({12, 4}, gen);
    Tensor<uint8_t> pad = Tensor<uint8_t>::zeros({12});
    pad.data()[11] = pad.data()[10] = 1;  // capacity counts real tokens only: 10
    l->forward(x, pad);
    CHECK(l->last_stats().capacity == 3);  // ceil(1 * 10 * 0.5 / 2)
    l->eval();
    l->forward(x, pad);
    CHECK(l->last_stats().capacity == 8);  // ceil(1 * 10 * 1.5 / 2)
    CHECK(l->last_stats().dropped == 0);
    auto cfg2 = cfg;
    cfg2.router.dropless = true;
    cfg2.router.capacity_factor_train = 0;  // ignored when dropless
    auto l2 = std::make_shared<MoELayer<float>>(cfg2, gen);
    l2->forward(x);
    CHECK(l2->last_stats().capacity == -1);
    CHECK(l2->last_stats().dropped == 0);
}

TEST_CASE("balance losses and z-loss equal hand-computed values", "[moe]") {
    // probs of 4 tokens over 2 experts, given as logits = log(p)
    const std::vector<double> p = {0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7};
    std::vector<double> lp;
    for (double v : p) lp.push_back(std::log(v));
    Tensor<double> probs = softmax(Tensor<double>::from_vector(lp, {4, 2}), -1);
    IndexTensor first = IndexTensor::from_vector({0, 1, 0, 1}, {4, 1});
    // P = (0.5, 0.5), m = (0.5, 0.5): E * sum m P = 2 * 0.5 = 1
    CHECK(moe::switch_balance_loss(probs, first).item() == Approx(1.0).epsilon(1e-12));
    // with token 3 padded: P = (1.7/3, 1.3/3), m = (2/3, 1/3): 2 * (3.4 + 1.3) / 9
    Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 0, 1});
    CHECK(moe::switch_balance_loss(probs, first, pad).item() == Approx(2 * (3.4 + 1.3) / 9).epsilon(1e-12));
    // KL(U || P) = sum_i 0.5 log(0.5 / P_i)
    const double P0 = 1.7 / 3, P1 = 1.3 / 3;
    CHECK(moe::kl_uniform_balance_loss(probs, pad).item() ==
          Approx(0.5 * std::log(0.5 / P0) + 0.5 * std::log(0.5 / P1)).epsilon(1e-12));
    CHECK(std::abs(moe::kl_uniform_balance_loss(probs).item()) < 1e-12);  // P = uniform
    // z-loss: mean of logsumexp^2 over real tokens
    Tensor<double> logits = Tensor<double>::from_vector({1, 2, 0, 0, 3, -1, 5, 5}, {4, 2});
    auto lse = [](double a, double b) { return std::log(std::exp(a) + std::exp(b)); };
    const double z0 = lse(1, 2), z1 = lse(0, 0), z2 = lse(3, -1), z3 = lse(5, 5);
    CHECK(moe::router_z_loss(logits).item() == Approx((z0 * z0 + z1 * z1 + z2 * z2 + z3 * z3) / 4).epsilon(1e-12));
    CHECK(moe::router_z_loss(logits, pad).item() == Approx((z0 * z0 + z1 * z1 + z2 * z2) / 3).epsilon(1e-12));
    // every token padded: the losses are 0
    Tensor<uint8_t> all = Tensor<uint8_t>::ones({4});
    CHECK(moe::switch_balance_loss(probs, first, all).item() == 0.0);
    CHECK(moe::router_z_loss(logits, all).item() == 0.0);
}

TEST_CASE("the layer's aux loss is the weighted balance loss plus z-loss of its router", "[moe]") {
    Generator gen(16);
    auto cfg = config(4, 6, 3, 2);
    cfg.balance_weight = 0.5;
    cfg.z_loss_weight = 0.25;
    for (auto kind : {moe::BalanceLoss::Switch, moe::BalanceLoss::SwitchAllChoices, moe::BalanceLoss::KLUniform}) {
        cfg.balance = kind;
        auto l = std::make_shared<MoELayer<double>>(cfg, gen);
        Tensor<double> x = Tensor<double>::randn({7, 4}, gen);
        auto out = l->forward_with_stats(x);
        const Tensor<double> logits = linear(x, l->gate->weight);
        const Tensor<double> probs = softmax(logits, -1);
        const double b = kind == moe::BalanceLoss::Switch ? moe::switch_balance_loss(probs, out.routing.experts).item()
                         : kind == moe::BalanceLoss::SwitchAllChoices ? moe::topk_balance_loss(probs, out.routing.experts).item()
                                                                      : moe::kl_uniform_balance_loss(probs).item();
        const double z = moe::router_z_loss(logits).item();
        CHECK(out.aux_loss.item() == Approx(0.5 * b + 0.25 * z).epsilon(1e-12));
        const nn::FFNOutput<double> o = l->forward(x, Tensor<uint8_t>());  // what a Transformer layer gets
        CHECK(same_bits(o.y, out.y));
        CHECK(o.aux.item() == out.aux_loss.item());
        CHECK(out.stats.balance_loss == Approx(b));
        CHECK(out.stats.z_loss == Approx(z));
        CHECK(o.aux.requires_grad());
    }
}

TEST_CASE("topk_balance_loss counts every top-k choice (OneS eq. 3), by hand", "[moe]") {
    // 4 tokens, E = 3, k = 2; token 3 is padded. Choices of the real ones: {0,1}, {1,2}, {1,0}
    IndexTensor idx = IndexTensor::from_vector({0, 1, 1, 2, 1, 0, 2, 0}, {4, 2});
    Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 0, 1});
    Tensor<double> probs = Tensor<double>::from_vector({0.5, 0.3, 0.2, 0.1, 0.6, 0.3, 0.4, 0.4, 0.2, 0.9, 0.05, 0.05}, {4, 3});
    const auto m = moe::choice_fraction<double>(idx, 3, pad).to_vector();
    CHECK(m == std::vector<double>{2.0 / 6, 3.0 / 6, 1.0 / 6});
    const double P0 = (0.5 + 0.1 + 0.4) / 3, P1 = (0.3 + 0.6 + 0.4) / 3, P2 = (0.2 + 0.3 + 0.2) / 3;
    CHECK(moe::topk_balance_loss(probs, idx, pad).item() == Approx(3 * (m[0] * P0 + m[1] * P1 + m[2] * P2)).epsilon(1e-12));
    // first choices only (Switch) differ here: {0, 1, 1}
    CHECK(moe::switch_balance_loss(probs, idx, pad).item() == Approx(3 * (P0 / 3 + 2 * P1 / 3)).epsilon(1e-12));
    // k = 1: the two are the same loss
    IndexTensor first = IndexTensor::from_vector({0, 1, 1, 2}, {4, 1});
    CHECK(moe::topk_balance_loss(probs, first, pad).item() == moe::switch_balance_loss(probs, first, pad).item());
}

TEST_CASE("load statistics count tokens per expert, drops and pads", "[moe]") {
    IndexTensor idx = IndexTensor::from_vector({1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0}, {6, 2});
    Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 0, 0, 0, 1});
    auto plan = moe::make_dispatch_plan(idx, 2, 3, pad);
    auto s = moe::load_stats(*plan);
    CHECK(s.num_tokens == 5);
    CHECK(s.num_pad == 1);
    CHECK(s.tokens_per_expert == std::vector<int64_t>{5, 5});  // the pad token is not counted
    CHECK(s.first_choice_per_expert == std::vector<int64_t>{2, 3});
    CHECK(s.kept_per_expert == std::vector<int64_t>{3, 3});
    CHECK(s.dropped == 4);
    CHECK(s.dropped_fraction == Approx(0.4));
    CHECK(plan->slot_of[10] == -1);
    CHECK(plan->slot_of[11] == -1);
    CHECK_FALSE(s.str().empty());
}

TEST_CASE("pad tokens get zero output and leave losses, statistics and other tokens alone", "[moe]") {
    Generator gen(17);
    auto cfg = config(5, 6, 4, 2);
    cfg.z_loss_weight = 0.1;
    auto l = std::make_shared<MoELayer<double>>(cfg, gen);
    Tensor<double> x = Tensor<double>::randn({2, 6, 5}, gen);
    Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1}, {2, 6});
    auto a = l->forward_with_stats(x, pad);
    // change what sits at the pad positions: nothing else may move
    Tensor<double> x2 = x.clone();
    for (int64_t i : {4, 5, 9, 10, 11})
        for (int64_t d = 0; d < 5; ++d) x2.data()[i * 5 + d] = 100.0 * (d + 1);
    auto b = l->forward_with_stats(x2, pad);
    CHECK(same_bits(a.y, b.y));
    CHECK(a.aux_loss.item() == b.aux_loss.item());
    CHECK(a.stats.tokens_per_expert == b.stats.tokens_per_expert);
    int64_t routed = 0;
    for (int64_t c : a.stats.tokens_per_expert) routed += c;
    CHECK(routed == 7 * 2);
    CHECK(a.stats.num_pad == 5);
    for (int64_t i : {4, 5, 9, 10, 11})
        for (int64_t d = 0; d < 5; ++d) CHECK(a.y.reshape({12, 5}).at({i, d}) == 0.0);
    // the pad rows get no gradient
    Tensor<double> xg = x.clone().requires_grad_();
    auto c = l->forward_with_stats(xg, pad);
    (sum(c.y * c.y) + c.aux_loss).backward();
    for (int64_t i : {4, 5, 9, 10, 11})
        for (int64_t d = 0; d < 5; ++d) CHECK(xg.grad().reshape({12, 5}).at({i, d}) == 0.0);
    // through forward(x, pad), as inside a Transformer layer
    const nn::FFNOutput<double> f = l->forward(x, pad);
    CHECK(same_bits(f.y, a.y));
    CHECK(f.aux.item() == a.aux_loss.item());
    // and through a Transformer layer: its padding mask reaches the MoE FFN, its aux comes back
    nn::LayerConfig lc;
    lc.d_model = 5, lc.num_heads = 1, lc.ffn_dim = 6, lc.dropout = 0.0;
    nn::TransformerEncoderLayer<double> tl(lc, gen, l);
    Tensor<double> seen;
    const int hook = l->add_forward_hook([&](const std::string& tag, const Tensor<double>& v) {
        if (tag == "output") seen = v;
    });
    const nn::AuxOutput<double> lo = tl.forward_with_aux(x, pad);
    l->remove_forward_hook(hook);
    REQUIRE(seen.defined());
    for (int64_t i : {4, 5, 9, 10, 11})
        for (int64_t d = 0; d < 5; ++d) CHECK(seen.reshape({12, 5}).at({i, d}) == 0.0);  // pads not routed
    CHECK(l->last_stats().num_pad == 5);
    REQUIRE(lo.aux.defined());
    CHECK(lo.aux.requires_grad());
    CHECK(same_bits(tl.forward(x, pad), lo.y));
}

TEST_CASE("determinism: the same input gives the same bits, direct .grad equals the engine's", "[moe]") {
    ThreadsGuard tg(2);
    auto run = [](bool direct) {
        moe::set_direct_leaf_grads(direct);
        Generator gen(18);
        auto cfg = config(16, 32, 6, 2);
        cfg.z_loss_weight = 0.01;
        auto l = std::make_shared<MoELayer<float>>(cfg, gen);
        Tensor<float> x = Tensor<float>::randn({3, 50, 16}, gen).requires_grad_();
        auto out = l->forward_with_stats(x);
        (sum(out.y * out.y) + out.aux_loss).backward();
        auto g = grads_of(*l);
        g.push_back(x.grad());
        g.push_back(out.y);
        moe::set_direct_leaf_grads(true);
        return g;
    };
    const auto a = run(true), b = run(true), c = run(false);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        CHECK(same_bits(a[i], b[i]));
        CHECK(same_bits(a[i], c[i]));
    }
}

TEST_CASE("gradients accumulate across backward calls, directly into .grad", "[moe]") {
    Generator gen(19);
    auto l = std::make_shared<MoELayer<double>>(config(4, 5, 3, 1), gen);
    Tensor<double> x = Tensor<double>::randn({9, 4}, gen);
    sum(l->forward(x)).backward();
    const auto once = grads_of(*l);
    sum(l->forward(x)).backward();
    const auto twice = grads_of(*l);
    for (size_t i = 0; i < once.size(); ++i) {
        if (!once[i].defined()) continue;
        CHECK(max_abs_diff(twice[i], once[i] * 2.0) < 1e-12);
    }
}

TEST_CASE("thread counts agree, an expert cut into several tasks sums its parts", "[moe]") {
    Generator gen(20);
    auto cfg = config(8, 12, 2, 1);  // ~500 rows per expert: one task with 1 thread, two with 2 or 3
    cfg.router.dropless = true;
    auto l = std::make_shared<MoELayer<double>>(cfg, gen);
    Tensor<double> x = Tensor<double>::randn({1000, 8}, gen);
    std::vector<std::vector<Tensor<double>>> all;
    for (int th : {1, 2, 3}) {
        ThreadsGuard tg(th);
        l->zero_grad();
        Tensor<double> xg = x.clone().requires_grad_();
        Tensor<double> y = l->forward(xg);
        sum(y * y).backward();
        auto g = grads_of(*l);
        g.push_back(xg.grad());
        all.push_back(g);
    }
    for (size_t i = 0; i < all[0].size(); ++i) {
        CHECK(max_abs_diff(all[1][i], all[0][i]) < 1e-10);
        CHECK(max_abs_diff(all[2][i], all[0][i]) < 1e-10);
    }
    // a second backward accumulates (beta = 1) into .grad, the cut experts' parts included
    ThreadsGuard tg(3);
    Tensor<double> xg = x.clone().requires_grad_();
    Tensor<double> y = l->forward(xg);
    sum(y * y).backward();
    const auto twice = grads_of(*l);
    for (size_t i = 0; i + 1 < all[0].size(); ++i) CHECK(max_abs_diff(twice[i], all[2][i] * 2.0) < 1e-10);
}

TEST_CASE("stacked expert weights give what per-expert weights give", "[moe]") {
    Generator gen(21);
    const int64_t E = 3, D = 4, F = 5;
    IndexTensor idx = IndexTensor::from_vector({2, 0, 0, 2, 1, 2, 0, 1}, {4, 2});
    auto plan = moe::make_dispatch_plan(idx, E, -1);
    Tensor<double> W1 = Tensor<double>::randn({E, F, D}, gen), B1 = Tensor<double>::randn({E, F}, gen);
    Tensor<double> W2 = Tensor<double>::randn({E, D, F}, gen), B2 = Tensor<double>::randn({E, D}, gen);
    for (auto* t : {&W1, &B1, &W2, &B2}) t->requires_grad_();
    moe::ExpertWeights<double> st;
    st.W1 = W1, st.B1 = B1, st.W2 = W2, st.B2 = B2;
    moe::ExpertWeights<double> pe;
    std::vector<Tensor<double>> leaves;
    for (int64_t e = 0; e < E; ++e) {
        const std::vector<std::pair<Tensor<double>*, std::vector<Tensor<double>>*>> parts = {
            {&W1, &pe.w1}, {&B1, &pe.b1}, {&W2, &pe.w2}, {&B2, &pe.b2}};
        for (auto [src, dst] : parts) {
            dst->push_back(src->detach().select(0, e).contiguous().requires_grad_());
            leaves.push_back(dst->back());
        }
    }
    Tensor<double> xs = Tensor<double>::randn({plan->rows(), D}, gen);
    Tensor<double> a = moe::expert_ffn(xs, plan, st), b = moe::expert_ffn(xs, plan, pe);
    CHECK(max_abs_diff(a, b) < 1e-12);
    sum(a * a).backward();
    sum(b * b).backward();
    for (int64_t e = 0; e < E; ++e) {
        CHECK(max_abs_diff(W1.grad().select(0, e), pe.w1[e].grad()) < 1e-12);
        CHECK(max_abs_diff(B2.grad().select(0, e), pe.b2[e].grad()) < 1e-12);
    }
    // an expert with no rows: zero slice in the stacked gradient, no gradient per expert
    auto plan2 = moe::make_dispatch_plan(IndexTensor::from_vector({0, 0, 2}, {3, 1}), E, -1);
    W1.zero_grad();
    pe.w1[1].zero_grad();
    Tensor<double> xs2 = Tensor<double>::randn({3, D}, gen);
    sum(moe::expert_ffn(xs2, plan2, st)).backward();
    sum(moe::expert_ffn(xs2, plan2, pe)).backward();
    for (double v : W1.grad().select(0, 1).to_vector()) CHECK(v == 0.0);
    CHECK_FALSE(pe.w1[1].grad().defined());
}

TEST_CASE("router: top-k ties go to the lower expert, gates renormalise for top-2", "[moe]") {
    Tensor<double> logits = Tensor<double>::from_vector({1, 3, 3, 0, 2, 2, 2, 2, 0, 1, 5, 1}, {3, 4});
    auto r = moe::softmax_topk(logits, 2, true);
    CHECK(r.experts.to_vector() == std::vector<int64_t>{1, 2, 0, 1, 2, 1});
    const auto g = r.gates.to_vector();
    CHECK(g[0] == Approx(0.5));
    CHECK(g[2] == Approx(0.5));
    const auto p = r.probs.to_vector();
    CHECK(g[4] == Approx(p[10] / (p[10] + p[9])));
    auto r1 = moe::softmax_topk(logits, 1, false);
    CHECK(r1.gates.to_vector()[0] == r1.probs.to_vector()[1]);
    CHECK(r1.experts.to_vector() == std::vector<int64_t>{1, 0, 2});
}

TEST_CASE("errors name the argument or the layer", "[moe]") {
    Generator gen(22);
    auto bad = config(4, 4, 3, 4);
    CHECK_THROWS_WITH(MoELayer<float>(bad, gen), Catch::Contains("top_k = 4") && Catch::Contains("num_experts = 3") &&
                                                     Catch::Contains("enc.layers.1.moe"));
    auto cf = config(4, 4, 3, 1);
    cf.router.capacity_factor_train = 0;
    CHECK_THROWS_WITH(MoELayer<float>(cf, gen), Catch::Contains("capacity_factor_train = 0") && Catch::Contains("dropless"));
    cf = config(4, 4, 3, 1);
    cf.router.capacity_factor_eval = -1;
    CHECK_THROWS_WITH(MoELayer<float>(cf, gen), Catch::Contains("capacity_factor_eval = -1"));
    cf = config(4, 4, 3, 1);
    cf.router.input_jitter = 1.5;
    CHECK_THROWS_WITH(MoELayer<float>(cf, gen), Catch::Contains("input_jitter"));
    // NaN / inf router logits: the layer names itself and the token
    auto l = std::make_shared<MoELayer<float>>(config(4, 4, 3, 1), gen);
    Tensor<float> x = Tensor<float>::randn({2, 3, 4}, gen);
    x.data()[5 * 4 + 1] = NAN;
    CHECK_THROWS_WITH(l->forward(x), Catch::Contains("enc.layers.1.moe") && Catch::Contains("not finite") &&
                                         Catch::Contains("token 5"));
    x.data()[5 * 4 + 1] = INFINITY;
    CHECK_THROWS_AS(l->forward(x), Error);
    Tensor<float> ok = Tensor<float>::randn({2, 3, 4}, gen);
    CHECK_THROWS_WITH(l->forward(ok, Tensor<uint8_t>::zeros({3, 2})), Catch::Contains("pad mask (3, 2)"));
    CHECK_THROWS_WITH(l->forward(Tensor<float>::randn({2, 5}, gen)), Catch::Contains("must be (B, T, 4)"));
    // fixed routing: bad shapes, indices out of range, an expert chosen twice
    CHECK_THROWS_WITH(l->forward_fixed(ok, IndexTensor::zeros({5, 1}), Tensor<float>::ones({5, 1})),
                      Catch::Contains("forward_fixed"));
    CHECK_THROWS_WITH(l->forward_fixed(ok, IndexTensor::full({6, 1}, 3), Tensor<float>::ones({6, 1})),
                      Catch::Contains("expert index 3") && Catch::Contains("[0, 3)"));
    CHECK_THROWS_WITH(moe::make_dispatch_plan(IndexTensor::from_vector({1, 1}, {1, 2}), 3, -1),
                      Catch::Contains("twice"));
    CHECK_THROWS_WITH(moe::softmax_topk(Tensor<float>::zeros({2, 3}), 4, true), Catch::Contains("top_k = 4"));
    // expert weights of the wrong shape
    auto plan = moe::make_dispatch_plan(IndexTensor::zeros({2, 1}), 1, -1);
    moe::ExpertWeights<float> w;
    w.w1 = {Tensor<float>::zeros({5, 4})};
    w.b1 = {Tensor<float>()};
    w.w2 = {Tensor<float>::zeros({4, 6})};
    w.b2 = {Tensor<float>()};
    CHECK_THROWS_WITH(moe::expert_ffn(Tensor<float>::zeros({2, 4}), plan, w), Catch::Contains("fc2 weight of expert 0"));
}

TEST_CASE("jitter: training only, from the layer's own generator", "[moe]") {
    auto make = [](bool noise, double jitter) {
        Generator gen(23);
        auto cfg = config(6, 8, 4, 2);
        cfg.router.dropless = true;
        cfg.router.logit_noise = noise;
        cfg.router.input_jitter = jitter;
        return std::make_shared<MoELayer<float>>(cfg, gen);
    };
    Generator gx(24);
    Tensor<float> x = Tensor<float>::randn({40, 6}, gx);
    auto plain = make(false, 0.0);
    auto noisy = make(true, 0.3);
    auto noisy2 = make(true, 0.3);
    const auto a = plain->forward_with_stats(x), b = noisy->forward_with_stats(x), c = noisy2->forward_with_stats(x);
    CHECK_FALSE(same_bits(a.routing.probs, b.routing.probs));
    CHECK(same_bits(b.y, c.y));  // same seed, same noise
    const auto b2 = noisy->forward_with_stats(x);
    CHECK_FALSE(same_bits(b.routing.probs, b2.routing.probs));  // the generator moved on
    plain->eval();
    noisy->eval();
    CHECK(same_bits(plain->forward(x), noisy->forward(x)));  // no noise in eval
}

TEST_CASE("hooks see router_probs and output", "[moe]") {
    Generator gen(25);
    auto l = std::make_shared<MoELayer<float>>(config(4, 4, 3, 1), gen);
    std::set<std::string> tags;
    Shape probs_shape;
    l->add_forward_hook([&](const std::string& tag, const Tensor<float>& v) {
        tags.insert(tag);
        if (tag == "router_probs") probs_shape = v.shape();
    });
    l->forward(Tensor<float>::randn({2, 5, 4}, gen).requires_grad_());
    CHECK(tags == std::set<std::string>{"router_probs", "output"});
    CHECK(probs_shape == Shape{10, 3});
}

TEST_CASE("an MoE layer is a Transformer layer's FFN, with fairseq / Tutel names", "[moe]") {
    Generator gen(26);
    nn::LayerConfig lc;
    lc.d_model = 8;
    lc.num_heads = 2;
    lc.ffn_dim = 16;
    lc.dropout = 0.0;
    auto moe_l = std::make_shared<MoELayer<float>>(config(8, 16, 4, 2), gen);
    nn::TransformerEncoderLayer<float> layer(lc, gen, moe_l);
    auto sd = layer.state_dict();
    for (const char* n : {"moe.gate.weight", "moe.experts.0.fc1.weight", "moe.experts.3.fc1.bias",
                          "moe.experts.2.fc2.weight", "moe.experts.1.fc2.bias"})
        CHECK(sd.count(n) == 1);
    CHECK(sd.at("moe.gate.weight").shape() == Shape{4, 8});
    CHECK(sd.at("moe.experts.0.fc1.weight").shape() == Shape{16, 8});
    CHECK(sd.at("moe.experts.0.fc2.weight").shape() == Shape{8, 16});
    CHECK(sd.count("moe.gate.bias") == 0);
    Tensor<float> x = Tensor<float>::randn({2, 5, 8}, gen).requires_grad_();
    const nn::AuxOutput<float> o = layer.forward_with_aux(x);
    const Tensor<float>& y = o.y;
    (sum(y) + o.aux).backward();
    CHECK(y.shape() == x.shape());
    CHECK(moe_l->gate->weight.grad().defined());
    CHECK(moe_l->last_stats().num_tokens == 10);
}

TEST_CASE("NaN / inf in a pad token's router logits is not an error, in a routed token it is", "[moe]") {
    // moe::check_router_logits alone: pad rows are not checked (it reports that one was bad)
    Tensor<float> logits = Tensor<float>::zeros({3, 4});
    logits.data()[1 * 4 + 2] = NAN;  // token 1 is a pad token
    Tensor<uint8_t> pad3 = Tensor<uint8_t>::from_vector({0, 1, 0});
    CHECK(moe::check_router_logits(logits, "L", pad3));
    CHECK_FALSE(moe::check_router_logits(Tensor<float>::zeros({3, 4}), "L", pad3));
    CHECK_THROWS_WITH(moe::check_router_logits(logits, "L"), Catch::Contains("token 1 of 3") && Catch::Contains("nan"));
    logits.data()[2 * 4 + 3] = -INFINITY;  // token 2 is routed
    CHECK_THROWS_WITH(moe::check_router_logits(logits, "L", pad3),
                      Catch::Contains("L: router logits are not finite: token 2 of 3") && Catch::Contains("-inf") &&
                          Catch::Contains("expert 3"));

    // the layer: a NaN input row of a pad token changes nothing for the routed tokens, and reaches
    // neither the aux loss nor any gradient
    for (int64_t k : {1, 2}) {
        Generator gen(40);
        auto cfg = config(4, 6, 3, k);
        cfg.z_loss_weight = 0.01;
        cfg.router.capacity_factor_train = 0.7;  // capacity counts only the routed tokens
        auto l = std::make_shared<MoELayer<double>>(cfg, gen);
        Tensor<double> x = Tensor<double>::randn({2, 4, 4}, gen);
        Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector({0, 0, 0, 1, 0, 0, 1, 1}, {2, 4});
        auto run = [&](const Tensor<double>& xin) {
            l->zero_grad();
            Tensor<double> xi = xin.clone().requires_grad_();
            auto out = l->forward_with_stats(xi, pad);
            (sum(out.y * out.y) + out.aux_loss).backward();
            return std::make_tuple(out, grads_of<double>(*l), xi.grad());
        };
        const auto [clean, clean_g, clean_dx] = run(x);
        Tensor<double> xn = x.clone();
        for (int64_t d = 0; d < 4; ++d) xn.data()[3 * 4 + d] = NAN;  // token 3: pad
        xn.data()[6 * 4 + 1] = INFINITY;                              // token 6: pad
        moe::MoEOutput<double> dirty;
        std::vector<Tensor<double>> dirty_g;
        Tensor<double> dirty_dx;
        REQUIRE_NOTHROW(std::tie(dirty, dirty_g, dirty_dx) = run(xn));
        for (int64_t t : {0, 1, 2, 4, 5})
            CHECK(same_bits(dirty.y.reshape({8, 4}).narrow(0, t, 1), clean.y.reshape({8, 4}).narrow(0, t, 1)));
        for (double v : dirty.y.reshape({8, 4}).narrow(0, 3, 1).to_vector()) CHECK(v == 0.0);
        CHECK(std::isfinite(dirty.aux_loss.item()));
        CHECK(dirty.aux_loss.item() == Approx(clean.aux_loss.item()).epsilon(1e-12));
        REQUIRE(dirty_g.size() == clean_g.size());
        for (size_t i = 0; i < dirty_g.size(); ++i) {
            if (!clean_g[i].defined()) continue;
            for (double v : dirty_g[i].to_vector()) CHECK(std::isfinite(v));
            CHECK(max_abs_diff(dirty_g[i], clean_g[i]) < 1e-12);
        }
        for (double v : dirty_dx.to_vector()) CHECK(std::isfinite(v));
        // a NaN in a routed token is still an error naming the layer, the token and the value
        xn.data()[5 * 4 + 2] = NAN;
        CHECK_THROWS_WITH(l->forward(xn, pad), Catch::Contains("enc.layers.1.moe") && Catch::Contains("token 5 of 8") &&
                                                   Catch::Contains("nan"));
    }
}

namespace {
/// fairseq's top-2 combine weights (normalize_gate_prob_before_dropping = false / true), by plain
/// loops: g_j = p[e_j] * kept_j, then divided by max(g_1 + g_2, eps) after (false) or
/// p[e_j] / (p[e_1] + p[e_2]) * kept_j (true). A pad token (never queued) counts as kept.
std::vector<double> fairseq_gates(const std::vector<double>& probs, const std::vector<int64_t>& idx,
                                  const moe::DispatchPlan& plan, bool before) {
    const int64_t N = plan.num_tokens, k = plan.top_k, E = plan.num_experts;
    std::vector<double> g(N * k);
    for (int64_t t = 0; t < N; ++t) {
        double raw = 0, kept = 0;
        for (int64_t j = 0; j < k; ++j) {
            const bool keep = plan.position[t * k + j] < 0 || plan.slot_of[t * k + j] >= 0;
            raw += probs[t * E + idx[t * k + j]];
            kept += keep ? probs[t * E + idx[t * k + j]] : 0.0;
        }
        for (int64_t j = 0; j < k; ++j) {
            const bool keep = plan.position[t * k + j] < 0 || plan.slot_of[t * k + j] >= 0;
            const double p = probs[t * E + idx[t * k + j]];
            g[t * k + j] = before ? p / raw : (keep ? p : 0.0) / std::max(kept, 1.1920929e-07);
        }
    }
    return g;
}
}  // namespace

TEST_CASE("top-2 gates renormalise after capacity dropping (fairseq's default) or before (GShard)", "[moe]") {
    // hand case: 5 tokens, top-2 over 3 experts, capacity 2. First choices 0 0 0 1 0, second 1 1 2 0 1:
    // expert 0 keeps the first choices of tokens 0, 1; expert 1 the first of 3 and the second of 0;
    // expert 2 the second of 2. So token 0 keeps both, 1 and 3 lose their second, 2 its first, 4 both.
    IndexTensor idx = IndexTensor::from_vector({0, 1, 0, 1, 0, 2, 1, 0, 0, 1}, {5, 2});
    auto plan = moe::make_dispatch_plan(idx, 3, 2);
    REQUIRE(plan->dropped() == 5);
    Tensor<double> probs =
        Tensor<double>::from_vector({0.5, 0.3, 0.2, 0.6, 0.3, 0.1, 0.7, 0.1, 0.2, 0.3, 0.6, 0.1, 0.4, 0.4, 0.2}, {5, 3});
    const std::vector<double> after = moe::kept_gates(probs, idx, plan).to_vector();
    const std::vector<double> want = {0.5 / 0.8, 0.3 / 0.8, 1, 0, 0, 1, 1, 0, 0, 0};
    REQUIRE(after.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(after[i] == Approx(want[i]).epsilon(1e-15));
    CHECK(after == fairseq_gates(probs.to_vector(), idx.to_vector(), *plan, false));
    // GShard: the gates as routed (token 1 keeps 0.6 / 0.9 on its only kept choice)
    const std::vector<double> before = moe::topk_gates(probs, idx, true).to_vector();
    CHECK(before[2] == Approx(0.6 / 0.9));
    const auto fb = fairseq_gates(probs.to_vector(), idx.to_vector(), *plan, true);
    for (size_t i = 0; i < fb.size(); ++i) CHECK(before[i] == Approx(fb[i]).epsilon(1e-15));
    // with a pad token: it is never queued, so it keeps its gates (nothing of it is combined)
    auto padded = moe::make_dispatch_plan(idx, 3, 2, Tensor<uint8_t>::from_vector({0, 0, 0, 0, 1}));
    const auto ap = moe::kept_gates(probs, idx, padded).to_vector();
    CHECK(ap[8] == Approx(0.4 / 0.8));
    // with nothing dropped the two orders are the same bits
    auto dropless = moe::make_dispatch_plan(idx, 3, -1);
    CHECK(same_bits(moe::kept_gates(probs, idx, dropless), moe::topk_gates(probs, idx, true)));
    CHECK_THROWS_WITH(moe::kept_gates(probs, IndexTensor::zeros({5, 2}), plan), Catch::Contains("kept_gates"));

    // the layer, both orders, against the plain-loop reference on a batch where dropping happens
    moe::RouterConfig rc;
    CHECK_FALSE(rc.normalize_gate_prob_before_dropping);  // fairseq's default
    for (bool before_dropping : {false, true}) {
        Generator gen(41);
        auto cfg = config(6, 8, 4, 2);
        cfg.router.capacity_factor_train = 0.6;
        cfg.router.normalize_gate_prob_before_dropping = before_dropping;
        auto l = std::make_shared<MoELayer<double>>(cfg, gen);
        Tensor<double> x = Tensor<double>::randn({3, 10, 6}, gen);
        Tensor<uint8_t> pad = Tensor<uint8_t>::zeros({3, 10});
        for (int64_t i : {8, 9, 29}) pad.data()[i] = 1;
        auto out = l->forward_with_stats(x, pad);
        REQUIRE(out.stats.dropped > 0);
        auto p = moe::make_dispatch_plan(out.routing.experts, 4, out.stats.capacity, pad);
        const auto g = fairseq_gates(out.routing.probs.to_vector(), out.routing.experts.to_vector(), *p, before_dropping);
        const auto other = fairseq_gates(out.routing.probs.to_vector(), out.routing.experts.to_vector(), *p, !before_dropping);
        Tensor<double> ref = moe::detail::moe_reference(x.reshape({30, 6}), *p, Tensor<double>::from_vector(g, {30, 2}),
                                                        l->expert_weights(), cfg.activation);
        Tensor<double> wrong = moe::detail::moe_reference(x.reshape({30, 6}), *p,
                                                          Tensor<double>::from_vector(other, {30, 2}),
                                                          l->expert_weights(), cfg.activation);
        INFO("normalize_gate_prob_before_dropping = " << before_dropping);
        CHECK(max_abs_diff(out.y.reshape({30, 6}), ref) < 1e-12);
        CHECK(max_abs_diff(out.y.reshape({30, 6}), wrong) > 1e-3);  // the case tells the orders apart
        // eval without drops: both orders agree with the renormalised routed gates
        l->eval();
        auto dl = l->forward_with_stats(x, pad);
        if (dl.stats.dropped == 0) CHECK(same_bits(dl.routing.gates, moe::topk_gates(dl.routing.probs, dl.routing.experts, true)));
        l->train();
    }
}
