// moe_kernels_gpu_test.cpp — the MoE / distillation kernels of the CUDA backend (kernels/gating.cu,
// dispatch.cu, experts.cu, kl.cu, relation.cu) through the op API: the moe:: ops, the KD loss and
// the relation loss on CUDA tensors, forward and autograd backward, against the same calls on the
// CPU with the same random inputs. Router softmax + top-k with the gates' and the probabilities'
// gradients (moe::softmax_topk), the NaN / inf check of the router logits
// (moe::check_router_logits), the dispatch plan built on the device (moe::make_dispatch_plan, bit for
// bit), permute / combine (moe::permute_tokens / combine_tokens), the grouped expert FFN
// (moe::expert_ffn: ReLU and GELU, with and without biases, an expert with no rows, the
// strided-batched path), the fused symmetric KL (moekd::symmetric_kl, up to a 32000 vocabulary,
// all-padding), the cosine-relation loss (moekd::relation_loss), the whole MoELayer in float and
// double (jitter, capacity dropping, pad tokens, its NaN check), and the same bits twice.
// Compiled by g++, linked with moekd::cuda (or moekd::cuda_emu: moe_kernels_gpu_test_emu).
//
// Needs a GPU. Without one it prints "SKIPPED: no CUDA device: <reason>" and exits 77 (ctest:
// skipped). `moe_kernels_gpu_test --no-device` runs the checks that hold without a GPU: the MoE and
// distillation entries of the device table are installed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <iostream>
#include <string>
#include <vector>

#include <moekd/cuda.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/losses/relation.hpp>
#include <moekd/moe/dispatch.hpp>
#include <moekd/moe/moe_layer.hpp>
#include <moekd/moe/router.hpp>
#include <moekd/tensor.hpp>

#include "gpu_main.hpp"

using namespace moekd;

namespace {

// max |got - want| / max(max |want|, tiny): an error relative to the tensor's scale, so tiny
// gradients are held to the same relative standard as large ones. Either tensor may be on the device.
template <class T>
double scaled_err(const Tensor<T>& got_any, const Tensor<T>& want_any) {
    REQUIRE(got_any.defined());
    REQUIRE(want_any.defined());
    const Tensor<T> got = got_any.detach().to(Device::CPU), want = want_any.detach().to(Device::CPU);
    REQUIRE(got.shape() == want.shape());
    const std::vector<T> g = got.to_vector(), w = want.to_vector();
    double diff = 0, scale = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        diff = std::max(diff, std::abs(double(g[i]) - double(w[i])));
        scale = std::max(scale, std::abs(double(w[i])));
    }
    return diff / std::max(scale, 1e-30);
}

template <class T>
constexpr double tol() {
    return sizeof(T) == 4 ? 1e-4 : 1e-10;
}

std::vector<int64_t> host_ints(const Tensor<int64_t>& t) { return t.to_vector(); }

// A pad mask of `shape`, each byte 1 with probability p.
Tensor<uint8_t> random_pad(const Shape& shape, double p, Generator& gen) {
    std::vector<uint8_t> v(static_cast<size_t>(numel(shape)));
    for (auto& b : v) b = gen.uniform() < p ? 1 : 0;
    return Tensor<uint8_t>::from_vector(v, shape);
}

template <class T>
Tensor<T> leaf(Tensor<T> t) {
    t.requires_grad_();
    return t;
}

/// A fresh leaf with x's values on `dev`.
template <class T>
Tensor<T> leaf_on(const Tensor<T>& x, Device dev) {
    return leaf(x.detach().clone().to(dev));
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

// ---- router --------------------------------------------------------------------------------------
template <class T>
struct RouterRun {
    moe::Routing<T> r;
    Tensor<T> dprobs_from_gates;  // d gates / d probs applied to dg (the gates' backward alone)
    Tensor<T> dlogits;            // from the gates and from an extra probs gradient (a balance loss's)
};

template <class T>
RouterRun<T> run_router(const Tensor<T>& logits, const Tensor<T>& dg, const Tensor<T>& dpe, int64_t k, bool normalize,
                        Device dev) {
    Tensor<T> l = leaf_on(logits, dev);
    RouterRun<T> out{moe::softmax_topk(l, k, normalize), {}, {}};
    out.r.probs.retain_grad();
    out.r.gates.backward(dg.to(dev), true);
    out.dprobs_from_gates = out.r.probs.grad().detach().clone();
    out.r.probs.backward(dpe.to(dev));
    out.dlogits = l.grad();
    return out;
}

template <class T>
void check_router(int64_t k, bool normalize) {
    INFO(dtype_name<T>() << " k=" << k << " normalize=" << normalize);
    Generator gen(11);
    const int64_t N = 203, E = 8;
    const Tensor<T> logits = Tensor<T>::randn({N, E}, gen, 0.0, 2.0);
    const Tensor<T> dg = Tensor<T>::randn({N, k}, gen), dpe = Tensor<T>::randn({N, E}, gen, 0.0, 0.1);
    const RouterRun<T> c = run_router(logits, dg, dpe, k, normalize, Device::CPU);
    const RouterRun<T> d = run_router(logits, dg, dpe, k, normalize, Device::CUDA);
    REQUIRE(d.r.probs.device() == Device::CUDA);
    CHECK(d.r.experts.device() == Device::CUDA);
    CHECK(host_ints(d.r.experts) == c.r.experts.to_vector());
    CHECK(scaled_err(d.r.probs, c.r.probs) < tol<T>());
    CHECK(scaled_err(d.r.gates, c.r.gates) < tol<T>());
    CHECK(scaled_err(d.dprobs_from_gates, c.dprobs_from_gates) < tol<T>());
    CHECK(d.dlogits.device() == Device::CUDA);
    CHECK(scaled_err(d.dlogits, c.dlogits) < tol<T>());
}

// ---- dispatch ------------------------------------------------------------------------------------
struct Routed {
    Tensor<int64_t> experts;
    Tensor<uint8_t> pad;
    int64_t E;
};

Routed make_routing(int64_t N, int64_t E, int64_t k, uint64_t seed, int64_t empty_expert = -1) {
    Generator gen(seed);
    Tensor<double> logits = Tensor<double>::randn({N, E}, gen);
    if (empty_expert >= 0)
        for (int64_t t = 0; t < N; ++t) logits.data()[t * E + empty_expert] = -30;  // never chosen
    NoGrad ng;
    return {moe::softmax_topk(logits, k, k > 1).experts, random_pad(Shape{N}, 0.1, gen), E};
}

/// The plan of r on the CPU (dev = CPU) or built on the device from device routing.
moe::PlanPtr plan_on(const Routed& r, int64_t capacity, Device dev) {
    return moe::make_dispatch_plan(r.experts.to(dev), r.E, capacity, r.pad.to(dev));
}

template <class T>
void check_permute_combine(const Routed& r, int64_t capacity) {
    INFO(dtype_name<T>() << " capacity " << capacity);
    Generator gen(5);
    const moe::PlanPtr p = plan_on(r, capacity, Device::CPU), pd = plan_on(r, capacity, Device::CUDA);
    const int64_t N = r.experts.size(0), k = r.experts.size(1), S = p->rows(), D = 37;
    REQUIRE(pd->rows() == S);
    // permute: a gather, exact; its backward sums a token's kept rows in order
    const Tensor<T> x = Tensor<T>::randn({N, D}, gen), dxs = Tensor<T>::randn({S, D}, gen);
    Tensor<T> xc = leaf_on(x, Device::CPU), xd = leaf_on(x, Device::CUDA);
    const Tensor<T> xs = moe::permute_tokens(xc, p), xsd = moe::permute_tokens(xd, pd);
    REQUIRE(xsd.device() == Device::CUDA);
    xs.backward(dxs);
    xsd.backward(dxs.to(Device::CUDA));
    CHECK(scaled_err(xsd, xs) == 0.0);
    CHECK(scaled_err(xd.grad(), xc.grad()) < tol<T>());
    // combine
    const Tensor<T> ys = Tensor<T>::randn({S, D}, gen), gates = Tensor<T>::rand({N, k}, gen);
    const Tensor<T> dy = Tensor<T>::randn({N, D}, gen);
    Tensor<T> ysc = leaf_on(ys, Device::CPU), gc = leaf_on(gates, Device::CPU);
    Tensor<T> ysd = leaf_on(ys, Device::CUDA), gd = leaf_on(gates, Device::CUDA);
    const Tensor<T> y = moe::combine_tokens(ysc, gc, p), yd = moe::combine_tokens(ysd, gd, pd);
    y.backward(dy);
    yd.backward(dy.to(Device::CUDA));
    CHECK(scaled_err(yd, y) < tol<T>());
    CHECK(scaled_err(ysd.grad(), ysc.grad()) < tol<T>());
    CHECK(scaled_err(gd.grad(), gc.grad()) < tol<T>());
}

// ---- grouped expert FFN --------------------------------------------------------------------------
template <class T>
void check_expert_ffn(nn::Activation act, bool biases) {
    INFO(dtype_name<T>() << " " << nn::activation_name(act) << (biases ? " with biases" : " no biases"));
    Generator gen(17);
    const int64_t N = 97, E = 6, k = 2, D = 24, F = 40;
    const Routed r = make_routing(N, E, k, 3, /*empty_expert=*/5);  // expert 5 gets no rows
    const moe::PlanPtr p = plan_on(r, -1, Device::CPU), pd = plan_on(r, -1, Device::CUDA);
    REQUIRE(p->kept[5] == 0);
    const int64_t S = p->rows();
    const Tensor<T> W1 = Tensor<T>::randn({E, F, D}, gen, 0.0, 0.3), W2 = Tensor<T>::randn({E, D, F}, gen, 0.0, 0.3);
    const Tensor<T> B1 = Tensor<T>::randn({E, F}, gen, 0.0, 0.3), B2 = Tensor<T>::randn({E, D}, gen, 0.0, 0.3);
    const Tensor<T> x = Tensor<T>::randn({S, D}, gen), dy = Tensor<T>::randn({S, D}, gen);
    moe::ExpertWeights<T> w[2];
    Tensor<T> xs[2], ys[2];
    for (int side = 0; side < 2; ++side) {
        const Device dev = side == 0 ? Device::CPU : Device::CUDA;
        w[side].W1 = leaf_on(W1, dev);
        w[side].W2 = leaf_on(W2, dev);
        if (biases) {
            w[side].B1 = leaf_on(B1, dev);
            w[side].B2 = leaf_on(B2, dev);
        }
        xs[side] = leaf_on(x, dev);
        ys[side] = moe::expert_ffn(xs[side], side == 0 ? p : pd, w[side], act);
        ys[side].backward(dy.to(dev));
    }
    REQUIRE(ys[1].device() == Device::CUDA);
    CHECK(scaled_err(ys[1], ys[0]) < tol<T>());
    CHECK(scaled_err(xs[1].grad(), xs[0].grad()) < tol<T>());
    CHECK(scaled_err(w[1].W1.grad(), w[0].W1.grad()) < tol<T>());
    CHECK(scaled_err(w[1].W2.grad(), w[0].W2.grad()) < tol<T>());
    if (biases) {
        CHECK(scaled_err(w[1].B1.grad(), w[0].B1.grad()) < tol<T>());
        CHECK(scaled_err(w[1].B2.grad(), w[0].B2.grad()) < tol<T>());
    }
}

// ---- symmetric KL --------------------------------------------------------------------------------
template <class T>
void check_symmetric_kl(const Shape& shape, bool masked, bool detach_b, double pad_p = 0.2) {
    INFO(dtype_name<T>() << " shape " << shape << " masked=" << masked << " detach_b=" << detach_b);
    Generator gen(23);
    const Tensor<T> a = Tensor<T>::randn(shape, gen, 0.0, 3.0), b = Tensor<T>::randn(shape, gen, 0.0, 3.0);
    const Shape lead(shape.begin(), shape.end() - 1);
    Tensor<uint8_t> pad;
    if (masked) pad = random_pad(lead, pad_p, gen);
    const Tensor<T> upstream = Tensor<T>::scalar(T(0.7));
    Tensor<T> as[2], bs[2], loss[2];
    for (int side = 0; side < 2; ++side) {
        const Device dev = side == 0 ? Device::CPU : Device::CUDA;
        as[side] = leaf_on(a, dev);
        bs[side] = leaf_on(b, dev);
        loss[side] = symmetric_kl(as[side], bs[side], masked ? pad.to(dev) : Tensor<uint8_t>(), false, detach_b);
        loss[side].backward(upstream.to(dev));
    }
    REQUIRE(loss[1].device() == Device::CUDA);
    const double want = double(loss[0].item());
    CHECK(std::abs(double(loss[1].item()) - want) <= tol<T>() * std::max(1.0, std::abs(want)));
    CHECK(scaled_err(as[1].grad(), as[0].grad()) < tol<T>());
    CHECK(bs[1].grad().defined() == bs[0].grad().defined());
    if (detach_b) CHECK_FALSE(bs[1].grad().defined());
    else CHECK(scaled_err(bs[1].grad(), bs[0].grad()) < tol<T>());
}

// ---- cosine relation -----------------------------------------------------------------------------
template <class T>
void check_relation(const Shape& ss, const Shape& ts, bool zero_row) {
    INFO(dtype_name<T>() << " student " << ss << " teacher " << ts << " zero_row=" << zero_row);
    Generator gen(29);
    Tensor<T> s = Tensor<T>::randn(ss, gen);
    const Tensor<T> t = Tensor<T>::randn(ts, gen);
    if (zero_row) std::fill_n(s.data() + ss[ss.rank() - 1], ss[ss.rank() - 1], T(0));  // norm clamped at eps
    const Tensor<T> upstream = Tensor<T>::scalar(T(1.3));
    Tensor<T> st[2], te[2], loss[2];
    for (int side = 0; side < 2; ++side) {
        const Device dev = side == 0 ? Device::CPU : Device::CUDA;
        st[side] = leaf_on(s, dev);
        te[side] = leaf_on(t, dev);
        loss[side] = relation_loss(st[side], te[side], /*detach_teacher=*/false);
        loss[side].backward(upstream.to(dev));
    }
    REQUIRE(loss[1].device() == Device::CUDA);
    const double want = double(loss[0].item());
    CHECK(std::abs(double(loss[1].item()) - want) <= tol<T>() * std::max(1.0, std::abs(want)));
    CHECK(st[1].grad().shape() == ss);
    CHECK(scaled_err(st[1].grad(), st[0].grad()) < tol<T>());
    CHECK(scaled_err(te[1].grad(), te[0].grad()) < tol<T>());
    // the teacher is detached by default
    Tensor<T> sd = leaf_on(s, Device::CUDA), td = leaf_on(t, Device::CUDA);
    relation_loss(sd, td).backward();
    CHECK(sd.grad().defined());
    CHECK_FALSE(td.grad().defined());
}

}  // namespace

// ---- with a GPU (the default mode) ---------------------------------------------------------------

TEST_CASE("moe::softmax_topk on the device matches the CPU, forward and backward", "[cuda]") {
    for (auto [k, norm] : {std::pair<int64_t, bool>{1, false}, {2, true}, {2, false}, {8, true}}) {
        check_router<float>(k, norm);
        check_router<double>(k, norm);
    }
}

TEST_CASE("moe::check_router_logits on the device reports NaN / inf as on the CPU", "[cuda]") {
    Generator gen(41);
    Tensor<float> logits = Tensor<float>::randn({300, 8}, gen);
    const Tensor<uint8_t> pad = random_pad(Shape{300}, 0.3, gen);
    CHECK_FALSE(moe::check_router_logits(logits.to(Device::CUDA), "moe.layer3", pad.to(Device::CUDA)));
    logits.data()[200 * 8 + 5] = INFINITY;
    logits.data()[57 * 8 + 3] = NAN;  // the first offending token is the one reported
    const std::string want = error_of([&] { moe::check_router_logits(logits, "moe.layer3", pad); });
    const std::string got =
        error_of([&] { moe::check_router_logits(logits.to(Device::CUDA), "moe.layer3", pad.to(Device::CUDA)); });
    CHECK_THAT(got, Catch::Contains("moe.layer3") && Catch::Contains("token 57 of 300") && Catch::Contains("expert 3"));
    CHECK(got == want);
}

TEST_CASE("moe::permute_tokens / combine_tokens on the device match the CPU, forward and backward", "[cuda]") {
    const Routed r = make_routing(203, 8, 2, 4);
    for (int64_t cap : {int64_t(-1), int64_t(20)}) {  // dropless, and dropping tokens
        check_permute_combine<float>(r, cap);
        check_permute_combine<double>(r, cap);
    }
}

TEST_CASE("moe::expert_ffn on the device (cuBLAS per expert) matches the CPU: activations, biases, an empty expert",
          "[cuda]") {
    for (auto act : {nn::Activation::ReLU, nn::Activation::GELU}) {
        check_expert_ffn<float>(act, true);
        check_expert_ffn<double>(act, true);
    }
    check_expert_ffn<double>(nn::Activation::GELU, false);
    check_expert_ffn<float>(nn::Activation::ReLU, false);
}

TEST_CASE("symmetric_kl on the device (the fused kernel) matches the CPU, forward and backward", "[cuda]") {
    check_symmetric_kl<float>({3, 37, 1003}, true, false);
    check_symmetric_kl<double>({3, 37, 1003}, true, false);
    check_symmetric_kl<float>({19, 257}, false, true);
    check_symmetric_kl<double>({19, 257}, true, true);
    check_symmetric_kl<float>({4, 32000}, false, false);  // a large vocabulary, one block per row
    check_symmetric_kl<double>({5, 300}, true, false, 1.0);  // every token padding: loss 0, zero gradients
}

TEST_CASE("relation_loss on the device matches the CPU, forward and backward", "[cuda]") {
    check_relation<float>({4, 33, 48}, {4, 33, 80}, false);
    check_relation<double>({4, 33, 48}, {4, 33, 80}, true);
    check_relation<float>({50, 16}, {50, 24}, true);
    check_relation<double>({50, 16}, {50, 24}, false);
}

TEST_CASE("the MoE and distillation ops give the same bits when run twice on the device", "[cuda]") {
    // every device reduction has a fixed order (no atomics), so repeating a call repeats its bits
    Generator gen(37);
    const Routed r = make_routing(301, 8, 2, 6);
    const moe::PlanPtr d1 = plan_on(r, 50, Device::CUDA), d2 = plan_on(r, 50, Device::CUDA);
    CHECK(d1->slot_of == d2->slot_of);
    CHECK(d1->slot_token == d2->slot_token);
    CHECK(d1->position == d2->position);
    const int64_t S = d1->rows(), D = 33;
    const Tensor<float> ys = Tensor<float>::randn({S, D}, gen), gates = Tensor<float>::rand({301, 2}, gen);
    const Tensor<float> dy = Tensor<float>::randn({301, D}, gen).to(Device::CUDA);
    std::vector<std::vector<float>> runs[2];
    for (int run = 0; run < 2; ++run) {
        const moe::PlanPtr& p = run == 0 ? d1 : d2;
        Tensor<float> y = leaf_on(ys, Device::CUDA), g = leaf_on(gates, Device::CUDA);
        moe::combine_tokens(y, g, p).backward(dy);
        runs[run].push_back(y.grad().to_vector());
        runs[run].push_back(g.grad().to_vector());
        Tensor<float> x = leaf(Tensor<float>::zeros({301, D}, Device::CUDA));
        moe::permute_tokens(x, p).backward(ys.to(Device::CUDA));
        runs[run].push_back(x.grad().to_vector());
    }
    const Tensor<float> a = Tensor<float>::randn({64, 5000}, gen, 0.0, 3.0);
    const Tensor<float> b = Tensor<float>::randn({64, 5000}, gen, 0.0, 3.0);
    const Tensor<float> s = Tensor<float>::randn({8, 64, 48}, gen), t = Tensor<float>::randn({8, 64, 96}, gen);
    for (int run = 0; run < 2; ++run) {
        Tensor<float> ad = leaf_on(a, Device::CUDA), bd = leaf_on(b, Device::CUDA);
        const Tensor<float> kl = symmetric_kl(ad, bd);
        kl.backward();
        runs[run].push_back(kl.to_vector());
        runs[run].push_back(ad.grad().to_vector());
        runs[run].push_back(bd.grad().to_vector());
        Tensor<float> sd = leaf_on(s, Device::CUDA);
        const Tensor<float> rl = relation_loss(sd, t.to(Device::CUDA));
        rl.backward();
        runs[run].push_back(rl.to_vector());
        runs[run].push_back(sd.grad().to_vector());
    }
    REQUIRE(runs[0].size() == runs[1].size());
    for (size_t i = 0; i < runs[0].size(); ++i) {
        INFO("result " << i);
        CHECK(runs[0][i] == runs[1][i]);
    }
}

TEST_CASE("the moe:: ops on CUDA tensors check their inputs as on the CPU", "[cuda]") {
    const Tensor<float> logits = Tensor<float>::ones(Shape{4, 3}, Device::CUDA);
    CHECK_THROWS_WITH(moe::softmax_topk(logits, 4, true), Catch::Contains("top_k = 4") && Catch::Contains("E = 3"));
    // a transposed device view is routed as the CPU routes the same values
    Generator gen(43);
    const Tensor<float> l = Tensor<float>::randn({6, 4}, gen);
    CHECK(host_ints(moe::softmax_topk(l.to(Device::CUDA).t(), 2, true).experts) ==
          moe::softmax_topk(l.t(), 2, true).experts.to_vector());
    const moe::PlanPtr plan = moe::make_dispatch_plan(Tensor<int64_t>::zeros(Shape{4, 1}, Device::CUDA), 6, -1);
    CHECK_THROWS_WITH(moe::permute_tokens(Tensor<float>::ones(Shape{5, 3}, Device::CUDA), plan),
                      Catch::Contains("permute_tokens") && Catch::Contains("(5, 3)"));
    CHECK_THROWS_WITH(moe::combine_tokens(Tensor<float>::ones(Shape{4, 3}, Device::CUDA),
                                          Tensor<float>::ones(Shape{4, 2}, Device::CUDA), plan),
                      Catch::Contains("combine_tokens") && Catch::Contains("(4, 2)"));
    CHECK_THROWS_WITH(symmetric_kl(Tensor<float>::ones(Shape{4, 10}, Device::CUDA), Tensor<float>::ones(Shape{4, 10})),
                      Catch::Contains("symmetric_kl"));
}

// ---- the moe:: ops on device tensors (the op API's device half) ----------------------------------
namespace {

template <class T>
moe::MoEConfig layer_config(int64_t k, bool dropless, bool before_dropping, nn::Activation act, moe::BalanceLoss b,
                            bool bias = false) {
    moe::MoEConfig c;
    c.d_model = 16;
    c.ffn_dim = 24;
    c.activation = act;
    c.router.num_experts = 8;
    c.router.top_k = k;
    c.router.dropless = dropless;
    c.router.capacity_factor_train = 0.9;  // drops some assignments
    c.router.normalize_gate_prob_before_dropping = before_dropping;
    c.router.logit_noise = true;     // host-drawn noise, the same on both devices
    c.router.input_jitter = 0.05;
    c.router.bias = bias;
    c.balance = b;
    c.z_loss_weight = 0.01;
    c.name = "moe.enc.2";
    return c;
}

template <class T>
void check_layer(int64_t k, bool dropless, bool before_dropping, nn::Activation act, moe::BalanceLoss b,
                 bool bias = false) {
    INFO(dtype_name<T>() << " k=" << k << " dropless=" << dropless << " before=" << before_dropping
                         << " gelu=" << (act == nn::Activation::GELU) << " balance=" << int(b) << " bias=" << bias);
    const moe::MoEConfig c = layer_config<T>(k, dropless, before_dropping, act, b, bias);
    Generator g1(5), g2(5), gen(9);
    moe::MoELayer<T> cpu(c, g1), dev(c, g2);
    dev.to(Device::CUDA);
    const Tensor<T> x = Tensor<T>::randn({3, 100, 16}, gen);  // 300 tokens: two tiles of the capacity scan
    const Tensor<uint8_t> pad = random_pad(Shape{3, 100}, 0.1, gen);
    const Tensor<T> w = Tensor<T>::randn({3, 100, 16}, gen);
    Tensor<T> xc = leaf(x.clone().detach()), xd = leaf(x.to(Device::CUDA));
    for (int step = 0; step < 2; ++step) {  // two steps: the jitter generators advance alike
        const auto oc = cpu.forward_with_stats(xc, pad);
        const auto od = dev.forward_with_stats(xd, pad.to(Device::CUDA));
        REQUIRE(od.y.device() == Device::CUDA);
        CHECK(od.aux_loss.device() == Device::CUDA);
        CHECK(host_ints(od.routing.experts) == oc.routing.experts.to_vector());
        CHECK(scaled_err(od.y, oc.y.detach()) < tol<T>());
        CHECK(scaled_err(od.aux_loss, oc.aux_loss.detach()) < tol<T>());
        CHECK(od.stats.tokens_per_expert == oc.stats.tokens_per_expert);
        CHECK(od.stats.kept_per_expert == oc.stats.kept_per_expert);
        CHECK(od.stats.first_choice_per_expert == oc.stats.first_choice_per_expert);
        CHECK(od.stats.dropped == oc.stats.dropped);
        CHECK(od.stats.tokens_fully_dropped == oc.stats.tokens_fully_dropped);
        CHECK(std::abs(od.stats.balance_loss - oc.stats.balance_loss) <= tol<T>() * std::max(1.0, std::abs(oc.stats.balance_loss)));
        CHECK(std::abs(od.stats.z_loss - oc.stats.z_loss) <= tol<T>() * std::max(1.0, std::abs(oc.stats.z_loss)));
        CHECK((dropless || oc.stats.dropped > 0));
        for (auto* m : {&cpu, &dev})
            for (auto& p : m->parameters()) p.zero_grad();
        xc.zero_grad();
        xd.zero_grad();
        (sum(oc.y * w) + oc.aux_loss).backward();
        (sum(od.y * w.to(Device::CUDA)) + od.aux_loss).backward();
        CHECK(scaled_err(xd.grad(), xc.grad()) < tol<T>());
        const auto pc = cpu.named_parameters(), pd = dev.named_parameters();
        REQUIRE(pc.size() == pd.size());
        for (size_t i = 0; i < pc.size(); ++i) {
            INFO(pc[i].first);
            REQUIRE(pc[i].second.grad().defined() == pd[i].second.grad().defined());
            if (pc[i].second.grad().defined()) {
                CHECK(pd[i].second.grad().device() == Device::CUDA);
                CHECK(scaled_err(pd[i].second.grad(), pc[i].second.grad()) < tol<T>());
            }
        }
    }
}

}  // namespace

TEST_CASE("moe::make_dispatch_plan from device routing: the device scan gives the CPU plan", "[cuda]") {
    for (auto [N, E, k] : {std::tuple<int64_t, int64_t, int64_t>{1000, 16, 2}, {203, 8, 1}, {40, 3, 3}, {0, 4, 2}}) {
        const Routed r = N > 0 ? make_routing(N, E, k, 17) : Routed{Tensor<int64_t>::empty({0, k}), Tensor<uint8_t>::empty({0}), E};
        for (int64_t cap : {int64_t(-1), int64_t(0), int64_t(5), int64_t(100)}) {
            INFO("N=" << N << " E=" << E << " k=" << k << " capacity " << cap);
            for (bool with_pad : {false, true}) {
                const Tensor<uint8_t> pad = with_pad ? r.pad : Tensor<uint8_t>();
                const moe::PlanPtr p = moe::make_dispatch_plan(r.experts, E, cap, pad);
                const moe::PlanPtr d = moe::make_dispatch_plan(r.experts.to(Device::CUDA), E, cap,
                                                               with_pad ? pad.to(Device::CUDA) : pad);
                CHECK(d->device == Device::CUDA);
                CHECK(d->num_pad == p->num_pad);
                CHECK(d->counts == p->counts);
                CHECK(d->kept == p->kept);
                CHECK(d->offsets == p->offsets);
                CHECK(d->position == p->position);
                CHECK(d->slot_of == p->slot_of);
                CHECK(d->slot_token == p->slot_token);
                CHECK(d->slot_choice == p->slot_choice);
                CHECK(d->expert_idx == p->expert_idx);
                // the device arrays are what the host mirrors
                const std::vector<int64_t> buf = d->dev_buf.to_vector();
                const int64_t A = N * k;
                CHECK(std::vector<int64_t>(buf.begin() + d->dev_slot_of, buf.begin() + d->dev_slot_of + A) == p->slot_of);
                CHECK(std::vector<int64_t>(buf.begin() + d->dev_position, buf.begin() + d->dev_position + A) == p->position);
            }
        }
    }
    // bad routing is reported as on the CPU (the kernels leave it out, the host check names it)
    const Tensor<int64_t> bad = Tensor<int64_t>::from_vector({0, 1, 2, 9, 1, 0}, {3, 2});
    const Tensor<int64_t> twice = Tensor<int64_t>::from_vector({0, 1, 2, 2, 1, 0}, {3, 2});
    for (const auto& t : {bad, twice}) {
        const std::string want = error_of([&] { moe::make_dispatch_plan(t, 4, -1); });
        CHECK(error_of([&] { moe::make_dispatch_plan(t.to(Device::CUDA), 4, -1); }) == want);
        CHECK(want != "no error");
    }
    // a plan of host routing meets device tokens: an error with a hint, not a host read of device memory
    const moe::PlanPtr host_plan = moe::make_dispatch_plan(bad.narrow(0, 0, 1), 4, -1);
    CHECK_THAT(error_of([&] { moe::permute_tokens(Tensor<float>::ones({1, 3}, Device::CUDA), host_plan); }),
               Catch::Contains("permute_tokens") && Catch::Contains("built from routing on cpu"));
}

TEST_CASE("moe::expert_ffn with stacked weights on the device (strided-batched and per expert) matches the CPU", "[cuda]") {
    const auto run = [](auto tag, bool uniform) {
        using T = decltype(tag);
        INFO(dtype_name<T>() << (uniform ? " uniform rows (strided-batched)" : " uneven rows (per expert)"));
        Generator gen(23);
        const int64_t E = 4, N = 200, D = 16, F = 24;
        std::vector<int64_t> route(N);
        for (int64_t t = 0; t < N; ++t) route[t] = uniform ? t % E : (t * t) % E;
        const Tensor<int64_t> r = Tensor<int64_t>::from_vector(route, {N, 1});
        const moe::PlanPtr pc = moe::make_dispatch_plan(r, E, -1), pd = moe::make_dispatch_plan(r.to(Device::CUDA), E, -1);
        const int64_t S = pc->rows();
        const std::vector<Tensor<T>> w0 = {Tensor<T>::randn({S, D}, gen), Tensor<T>::randn({E, F, D}, gen, 0, 0.3),
                                           Tensor<T>::randn({E, F}, gen), Tensor<T>::randn({E, D, F}, gen, 0, 0.3),
                                           Tensor<T>::randn({E, D}, gen)};
        const Tensor<T> dy = Tensor<T>::randn({S, D}, gen);
        std::vector<Tensor<T>> grads[2];
        Tensor<T> ys[2];
        for (int side = 0; side < 2; ++side) {
            const Device dev = side == 0 ? Device::CPU : Device::CUDA;
            std::vector<Tensor<T>> in;
            for (const auto& t : w0) in.push_back(leaf(t.clone().detach().to(dev)));
            moe::ExpertWeights<T> w;
            w.W1 = in[1], w.B1 = in[2], w.W2 = in[3], w.B2 = in[4];
            ys[side] = moe::expert_ffn(in[0], side == 0 ? pc : pd, w, nn::Activation::GELU);
            sum(ys[side] * dy.to(dev)).backward();
            for (auto& t : in) grads[side].push_back(t.grad());
        }
        CHECK(ys[1].device() == Device::CUDA);
        CHECK(scaled_err(ys[1], ys[0].detach()) < tol<T>());
        for (size_t i = 0; i < w0.size(); ++i) {
            INFO("gradient of input " << i);
            CHECK(scaled_err(grads[1][i], grads[0][i]) < tol<T>());
        }
    };
    for (bool uniform : {true, false}) {
        run(float(), uniform);
        run(double(), uniform);
    }
    // the uniform case does take the strided-batched entry (without it, it says so)
    auto& entry = DeviceOps<float>::cuda().moe_gemm_strided_batched;
    const auto saved = entry;
    entry = nullptr;
    const std::string err = error_of([&] { run(float(), true); });
    entry = saved;
    CHECK_THAT(err, Catch::Contains("expert_ffn") && Catch::Contains("no CUDA implementation"));
    CHECK_NOTHROW(run(float(), false));
}

TEST_CASE("moe::MoELayer on the device matches the CPU: forward, aux loss, statistics, gradients", "[cuda]") {
    using A = nn::Activation;
    using B = moe::BalanceLoss;
    check_layer<float>(2, false, false, A::GELU, B::Switch);
    check_layer<double>(2, false, false, A::GELU, B::Switch);
    check_layer<double>(2, false, true, A::ReLU, B::KLUniform);
    check_layer<double>(2, false, false, A::GELU, B::SwitchAllChoices);  // m from the plan's counts on the device
    check_layer<float>(1, false, false, A::ReLU, B::Switch);
    check_layer<double>(1, true, false, A::GELU, B::None);
    check_layer<double>(1, true, false, A::GELU, B::KLUniform, true);  // tcd_bert's router: bias b_r, dropless
}

TEST_CASE("moe::MoELayer on the device: NaN logits name the layer and the token, the same bits twice", "[cuda]") {
    const moe::MoEConfig c = layer_config<float>(2, false, false, nn::Activation::GELU, moe::BalanceLoss::Switch);
    Generator g1(5), g2(5), gen(3);
    moe::MoELayer<float> cpu(c, g1), dev(c, g2);
    dev.to(Device::CUDA);
    cpu.eval();
    dev.eval();
    Tensor<float> x = Tensor<float>::randn({2, 50, 16}, gen);
    std::vector<uint8_t> pv(100, 0);
    pv[57] = 1;
    const Tensor<uint8_t> pad = Tensor<uint8_t>::from_vector(pv, {2, 50});
    x.data()[(1 * 50 + 7) * 16 + 4] = NAN;  // token 57: padding, not an error
    CHECK_NOTHROW(dev.forward(x.to(Device::CUDA), pad.to(Device::CUDA)));
    const Tensor<float> yp = dev.forward(x.to(Device::CUDA), pad.to(Device::CUDA)).y;
    for (float v : yp.to_vector()) CHECK(std::isfinite(v));
    x.data()[(0 * 50 + 31) * 16 + 2] = INFINITY;  // token 31: routed
    const std::string want = error_of([&] { cpu.forward(x, pad); });
    const std::string got = error_of([&] { dev.forward(x.to(Device::CUDA), pad.to(Device::CUDA)); });
    CHECK_THAT(got, Catch::Contains("moe.enc.2") && Catch::Contains("token 31 of 100"));
    CHECK(got == want);

    // determinism: forward and backward twice on the device give the same bits
    dev.train();
    const Tensor<float> xs = Tensor<float>::randn({2, 150, 16}, gen);
    std::vector<std::vector<float>> runs[2];
    for (int run = 0; run < 2; ++run) {
        dev.generator().manual_seed(77);
        for (auto& p : dev.parameters()) p.zero_grad();
        Tensor<float> xd = leaf(xs.to(Device::CUDA));
        const auto o = dev.forward_with_stats(xd);
        (sum(o.y * o.y) + o.aux_loss).backward();
        runs[run].push_back(o.y.to_vector());
        runs[run].push_back(xd.grad().to_vector());
        for (auto& p : dev.parameters())
            if (p.grad().defined()) runs[run].push_back(p.grad().to_vector());
    }
    REQUIRE(runs[0].size() == runs[1].size());
    for (size_t i = 0; i < runs[0].size(); ++i) CHECK(runs[0][i] == runs[1][i]);
}

// ---- without a GPU (moe_kernels_gpu_test --no-device) --------------------------------------------

TEST_CASE("no device: the MoE and distillation entries of the device table are installed", "[nodevice]") {
    const auto check = [](const auto& o) {
        CHECK((o.moe_softmax_topk && o.moe_topk_gates && o.moe_topk_gates_backward && o.moe_kept_gates &&
               o.moe_kept_gates_backward && o.moe_rows_finite && o.moe_row_logsumexp && o.moe_masked_column_mean));
        CHECK((o.moe_capacity_positions && o.moe_dispatch_offsets && o.moe_scatter_slots && o.moe_permute &&
               o.moe_permute_backward && o.moe_combine && o.moe_combine_backward));
        CHECK((o.moe_bias_act && o.moe_add_bias && o.moe_act_backward && o.moe_column_sum &&
               o.moe_gemm_strided_batched));
        CHECK((o.symmetric_kl && o.symmetric_kl_backward && o.soft_distill && o.soft_distill_backward));
        CHECK((o.l2_normalize_rows && o.l2_normalize_rows_backward && o.relation_diff));
    };
    check(DeviceOps<float>::cuda());
    check(DeviceOps<double>::cuda());
    // the CPU ops are unchanged
    const Routed r = make_routing(20, 4, 2, 1);
    CHECK(moe::make_dispatch_plan(r.experts, 4, -1)->rows() == 40);
}

int main(int argc, char** argv) { return moekd::test::gpu_test_main(argc, argv); }
