// moe_kernels_gpu_test.cpp — the MoE / distillation device kernels against their CPU twins on the
// same random inputs, forward and backward: router softmax + top-k (moe::softmax_topk), capacity
// positions and the dispatch plan (moe::make_dispatch_plan), the NaN/inf check of the router logits
// (moe::check_router_logits), permute / combine
// (moe::permute_tokens / combine_tokens), the cuBLAS grouped expert FFN (moe::expert_ffn), the
// fused symmetric KL (moekd::symmetric_kl), the cosine-relation loss (moekd::relation_loss), and
// the cuSOLVER SVD (linalg::svd); and the moe:: ops themselves on device tensors (the dispatch plan
// built on the device, the whole MoELayer in float and double with jitter, capacity dropping and
// pad tokens, its NaN check, the same bits twice). Compiled by g++, linked with moekd::cuda.
//
// Needs a GPU. Without one it prints "SKIPPED: no CUDA device: <reason>" and exits 77 (ctest:
// skipped). `moe_kernels_gpu_test --no-device` runs the checks that hold without a GPU: every
// device entry rejects bad arguments with a moekd::Error naming them before any CUDA call.
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
#include <moekd/linalg/knowledge_gathering.hpp>
#include <moekd/linalg/svd.hpp>
#include <moekd/linalg/svd_cuda.hpp>
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
// gradients are held to the same relative standard as large ones.
template <class T>
double scaled_err(const Tensor<T>& got_any, const Tensor<T>& want_any) {
    const Tensor<T> got = cuda::to_cpu(got_any), want = cuda::to_cpu(want_any);
    REQUIRE(got.defined());
    REQUIRE(want.defined());
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

std::vector<int64_t> host_ints(const Tensor<int64_t>& t) { return cuda::to_cpu(t).to_vector(); }

template <class T>
T host_scalar(const Tensor<T>& t) {
    return cuda::to_cpu(t).item();
}

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

// ---- router --------------------------------------------------------------------------------------
template <class T>
void check_router(int64_t k, bool normalize) {
    INFO(dtype_name<T>() << " k=" << k << " normalize=" << normalize);
    Generator gen(11);
    const int64_t N = 203, E = 8;
    Tensor<T> logits = leaf(Tensor<T>::randn({N, E}, gen, 0.0, 2.0));
    const Tensor<T> dg = Tensor<T>::randn({N, k}, gen), dpe = Tensor<T>::randn({N, E}, gen, 0.0, 0.1);
    moe::Routing<T> r = moe::softmax_topk(logits, k, normalize);
    r.probs.retain_grad();
    r.gates.backward(dg, true);
    const Tensor<T> dprobs_cpu = r.probs.grad().detach();
    const Tensor<T> dprobs_copy = Tensor<T>::from_vector(dprobs_cpu.to_vector(), dprobs_cpu.shape());
    r.probs.backward(dpe);  // logits.grad = from the gates + from a balance-loss-like extra

    const auto rd = cuda::softmax_topk(cuda::to_device(logits.detach()), k, normalize);
    CHECK(host_ints(rd.experts) == r.experts.to_vector());
    CHECK(scaled_err(rd.probs, r.probs.detach()) < tol<T>());
    CHECK(scaled_err(rd.gates, r.gates.detach()) < tol<T>());
    const Tensor<T> dgd = cuda::to_device(dg);
    const Tensor<T> dp = cuda::topk_gates_backward(rd.probs, rd.experts, rd.gates, dgd, normalize);
    CHECK(scaled_err(dp, dprobs_copy) < tol<T>());
    const Tensor<T> dl = cuda::router_backward(rd, dgd, normalize, cuda::to_device(dpe));
    CHECK(scaled_err(dl, logits.grad()) < tol<T>());

    // capacity positions of the same routing, with pad tokens: the histogram of the counting sort
    const Tensor<uint8_t> pad = random_pad(Shape{N}, 0.15, gen);
    const moe::PlanPtr plan = moe::make_dispatch_plan(r.experts, E, -1, pad);
    const auto cp = cuda::capacity_positions(cuda::to_device(r.experts), E, cuda::to_device(pad));
    CHECK(host_ints(cp.counts) == plan->counts);
    CHECK(host_ints(cp.position) == plan->position);
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

void check_plan(const Routed& r, int64_t capacity) {
    INFO("capacity " << capacity);
    const moe::PlanPtr p = moe::make_dispatch_plan(r.experts, r.E, capacity, r.pad);
    const cuda::DeviceDispatchPlan d =
        cuda::make_dispatch_plan(cuda::to_device(r.experts), r.E, capacity, cuda::to_device(r.pad));
    CHECK(d.rows() == p->rows());
    CHECK(d.host_offsets == p->offsets);
    CHECK(host_ints(d.counts) == p->counts);
    CHECK(host_ints(d.kept) == p->kept);
    CHECK(host_ints(d.offsets) == p->offsets);
    CHECK(host_ints(d.position) == p->position);
    CHECK(host_ints(d.slot_of) == p->slot_of);
    CHECK(host_ints(d.slot_token) == p->slot_token);
    CHECK(host_ints(d.slot_choice) == p->slot_choice);
}

template <class T>
void check_permute_combine(const Routed& r, int64_t capacity) {
    INFO(dtype_name<T>() << " capacity " << capacity);
    Generator gen(5);
    const moe::PlanPtr p = moe::make_dispatch_plan(r.experts, r.E, capacity, r.pad);
    const auto d = cuda::make_dispatch_plan(cuda::to_device(r.experts), r.E, capacity, cuda::to_device(r.pad));
    const int64_t N = r.experts.size(0), k = r.experts.size(1), S = p->rows(), D = 37;
    // permute
    Tensor<T> x = leaf(Tensor<T>::randn({N, D}, gen));
    const Tensor<T> dxs = Tensor<T>::randn({S, D}, gen);
    Tensor<T> xs = moe::permute_tokens(x, p);
    xs.backward(dxs);
    CHECK(scaled_err(cuda::permute_tokens(cuda::to_device(x.detach()), d), xs.detach()) == 0.0);  // a gather
    CHECK(scaled_err(cuda::permute_tokens_backward(cuda::to_device(dxs), d), x.grad()) < tol<T>());
    // combine
    Tensor<T> ys = leaf(Tensor<T>::randn({S, D}, gen)), gates = leaf(Tensor<T>::rand({N, k}, gen));
    const Tensor<T> dy = Tensor<T>::randn({N, D}, gen);
    Tensor<T> y = moe::combine_tokens(ys, gates, p);
    y.backward(dy);
    const Tensor<T> ysd = cuda::to_device(ys.detach()), gd = cuda::to_device(gates.detach());
    CHECK(scaled_err(cuda::combine_tokens(ysd, gd, d), y.detach()) < tol<T>());
    const auto g = cuda::combine_tokens_backward(cuda::to_device(dy), ysd, gd, d);
    CHECK(scaled_err(g.dys, ys.grad()) < tol<T>());
    CHECK(scaled_err(g.dgates, gates.grad()) < tol<T>());
}

// ---- grouped expert FFN --------------------------------------------------------------------------
template <class T>
void check_expert_ffn(nn::Activation act, bool biases) {
    INFO(dtype_name<T>() << " " << nn::activation_name(act) << (biases ? " with biases" : " no biases"));
    Generator gen(17);
    const int64_t N = 97, E = 6, k = 2, D = 24, F = 40;
    const Routed r = make_routing(N, E, k, 3, /*empty_expert=*/5);  // expert 5 gets no rows
    const moe::PlanPtr p = moe::make_dispatch_plan(r.experts, E, -1, r.pad);
    const auto d = cuda::make_dispatch_plan(cuda::to_device(r.experts), E, -1, cuda::to_device(r.pad));
    REQUIRE(p->kept[5] == 0);
    const int64_t S = p->rows();
    moe::ExpertWeights<T> w;
    w.W1 = leaf(Tensor<T>::randn({E, F, D}, gen, 0.0, 0.3));
    w.W2 = leaf(Tensor<T>::randn({E, D, F}, gen, 0.0, 0.3));
    if (biases) {
        w.B1 = leaf(Tensor<T>::randn({E, F}, gen, 0.0, 0.3));
        w.B2 = leaf(Tensor<T>::randn({E, D}, gen, 0.0, 0.3));
    }
    Tensor<T> xs = leaf(Tensor<T>::randn({S, D}, gen));
    const Tensor<T> dy = Tensor<T>::randn({S, D}, gen);
    Tensor<T> ys = moe::expert_ffn(xs, p, w, act);
    ys.backward(dy);

    cuda::DeviceExpertWeights<T> wd{cuda::to_device(w.W1.detach()),
                                    biases ? cuda::to_device(w.B1.detach()) : Tensor<T>(),
                                    cuda::to_device(w.W2.detach()),
                                    biases ? cuda::to_device(w.B2.detach()) : Tensor<T>()};
    const Tensor<T> xsd = cuda::to_device(xs.detach());
    const auto f = cuda::expert_ffn(xsd, d, wd, act);
    CHECK(scaled_err(f.ys, ys.detach()) < tol<T>());
    const auto g = cuda::expert_ffn_backward(cuda::to_device(dy), xsd, f, d, wd, act);
    CHECK(scaled_err(g.dxs, xs.grad()) < tol<T>());
    CHECK(scaled_err(g.dW1, w.W1.grad()) < tol<T>());
    CHECK(scaled_err(g.dW2, w.W2.grad()) < tol<T>());
    if (biases) {
        CHECK(scaled_err(g.dB1, w.B1.grad()) < tol<T>());
        CHECK(scaled_err(g.dB2, w.B2.grad()) < tol<T>());
    } else {
        CHECK_FALSE(g.dB1.defined());
        CHECK_FALSE(g.dB2.defined());
    }
}

// ---- symmetric KL --------------------------------------------------------------------------------
template <class T>
void check_symmetric_kl(const Shape& shape, bool masked, bool detach_b, double pad_p = 0.2) {
    INFO(dtype_name<T>() << " shape " << shape << " masked=" << masked << " detach_b=" << detach_b);
    Generator gen(23);
    Tensor<T> a = leaf(Tensor<T>::randn(shape, gen, 0.0, 3.0)), b = leaf(Tensor<T>::randn(shape, gen, 0.0, 3.0));
    const Shape lead(shape.begin(), shape.end() - 1);
    Tensor<uint8_t> pad;
    if (masked) pad = random_pad(lead, pad_p, gen);
    const T upstream = T(0.7);
    Tensor<T> loss = symmetric_kl(a, b, pad, false, detach_b);
    loss.backward(Tensor<T>::scalar(upstream));

    const Tensor<T> ad = cuda::to_device(a.detach()), bd = cuda::to_device(b.detach());
    const Tensor<uint8_t> pd = masked ? cuda::to_device(pad) : Tensor<uint8_t>();
    const auto f = cuda::symmetric_kl_forward(ad, bd, pd);
    const double want = double(loss.detach().item());
    CHECK(std::abs(double(host_scalar(f.loss)) - want) <= tol<T>() * std::max(1.0, std::abs(want)));
    const auto g = cuda::symmetric_kl_backward(ad, bd, pd, f, upstream, true, !detach_b);
    CHECK(scaled_err(g.da, a.grad()) < tol<T>());
    if (detach_b) CHECK_FALSE(g.db.defined());
    else CHECK(scaled_err(g.db, b.grad()) < tol<T>());
}

// ---- cosine relation -----------------------------------------------------------------------------
template <class T>
void check_relation(const Shape& ss, const Shape& ts, bool zero_row) {
    INFO(dtype_name<T>() << " student " << ss << " teacher " << ts << " zero_row=" << zero_row);
    Generator gen(29);
    Tensor<T> s = Tensor<T>::randn(ss, gen), t = Tensor<T>::randn(ts, gen);
    if (zero_row) std::fill_n(s.data() + ss[ss.rank() - 1], ss[ss.rank() - 1], T(0));  // norm clamped at eps
    s.requires_grad_();
    t.requires_grad_();
    const T upstream = T(1.3);
    Tensor<T> loss = relation_loss(s, t, /*detach_teacher=*/false);
    loss.backward(Tensor<T>::scalar(upstream));

    const auto f = cuda::relation_loss_forward(cuda::to_device(s.detach()), cuda::to_device(t.detach()));
    const double want = double(loss.detach().item());
    CHECK(std::abs(double(host_scalar(f.loss)) - want) <= tol<T>() * std::max(1.0, std::abs(want)));
    const auto g = cuda::relation_loss_backward(f, upstream, true, true);
    CHECK(g.dstudent.shape() == ss);
    CHECK(scaled_err(g.dstudent, s.grad()) < tol<T>());
    CHECK(scaled_err(g.dteacher, t.grad()) < tol<T>());
    CHECK_FALSE(cuda::relation_loss_backward(f, upstream).dteacher.defined());  // teacher detached by default
}

// ---- SVD -----------------------------------------------------------------------------------------
template <class T>
void check_svd(int64_t M, int64_t N) {
    INFO(dtype_name<T>() << " (" << M << ", " << N << ")");
    Generator gen(31);
    const Tensor<T> A = Tensor<T>::randn({M, N}, gen);
    const linalg::SVD<T> c = linalg::svd(A);
    const linalg::SVD<T> d = linalg::cuda::svd(cuda::to_device(A));
    const int64_t K = std::min(M, N);
    REQUIRE(d.U.shape() == Shape{M, K});
    REQUIRE(d.Vt.shape() == Shape{K, N});
    CHECK(scaled_err(d.S, c.S) < tol<T>());
    // reconstruction U diag(S) Vt vs A, and each singular vector equal to the CPU one up to sign
    const std::vector<T> u = cuda::to_cpu(d.U).to_vector(), s = cuda::to_cpu(d.S).to_vector(),
                         vt = cuda::to_cpu(d.Vt).to_vector(), uc = c.U.to_vector(), a = A.to_vector();
    double worst = 0, amax = 0;
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double r = 0;
            for (int64_t q = 0; q < K; ++q) r += double(u[i * K + q]) * double(s[q]) * double(vt[q * N + j]);
            worst = std::max(worst, std::abs(r - double(a[i * N + j])));
            amax = std::max(amax, std::abs(double(a[i * N + j])));
        }
    CHECK(worst / amax < 10 * tol<T>());
    for (int64_t q = 0; q < K; ++q) {
        double dot = 0;
        for (int64_t i = 0; i < M; ++i) dot += double(u[i * K + q]) * double(uc[i * K + q]);
        CHECK(std::abs(std::abs(dot) - 1.0) < 10 * tol<T>());  // random A: distinct singular values
    }
}

}  // namespace

// ---- with a GPU (the default mode) ---------------------------------------------------------------

TEST_CASE("device router softmax + top-k matches moe::softmax_topk, forward and backward", "[cuda]") {
    for (auto [k, norm] : {std::pair<int64_t, bool>{1, false}, {2, true}, {2, false}, {8, true}}) {
        check_router<float>(k, norm);
        check_router<double>(k, norm);
    }
}

TEST_CASE("device router logit check reports NaN / inf as moe::check_router_logits does", "[cuda]") {
    Generator gen(41);
    Tensor<float> logits = Tensor<float>::randn({300, 8}, gen);
    const Tensor<uint8_t> pad = random_pad(Shape{300}, 0.3, gen);
    CHECK_NOTHROW(cuda::check_router_logits(cuda::to_device(logits), "moe.layer3", cuda::to_device(pad)));
    logits.data()[200 * 8 + 5] = INFINITY;
    logits.data()[57 * 8 + 3] = NAN;  // the first offending token is the one reported
    const auto message = [](auto&& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string want = message([&] { moe::check_router_logits(logits, "moe.layer3", pad); });
    const std::string got = message([&] { cuda::check_router_logits(cuda::to_device(logits), "moe.layer3", cuda::to_device(pad)); });
    CHECK_THAT(got, Catch::Contains("moe.layer3") && Catch::Contains("token 57 of 300") && Catch::Contains("expert 3"));
    CHECK(got == want);
}

TEST_CASE("device dispatch plan matches moe::make_dispatch_plan bit for bit", "[cuda]") {
    const Routed r2 = make_routing(203, 8, 2, 1), r1 = make_routing(150, 5, 1, 2);
    for (int64_t cap : {int64_t(-1), int64_t(0), int64_t(7), int64_t(40), int64_t(1000)}) {
        check_plan(r2, cap);
        check_plan(r1, cap);
    }
}

TEST_CASE("device permute / combine match moe::permute_tokens / combine_tokens, forward and backward", "[cuda]") {
    const Routed r = make_routing(203, 8, 2, 4);
    for (int64_t cap : {int64_t(-1), int64_t(20)}) {  // dropless, and dropping tokens
        check_permute_combine<float>(r, cap);
        check_permute_combine<double>(r, cap);
    }
}

TEST_CASE("device grouped expert FFN (cuBLAS per expert) matches moe::expert_ffn, forward and backward", "[cuda]") {
    for (auto act : {nn::Activation::ReLU, nn::Activation::GELU}) {
        check_expert_ffn<float>(act, true);
        check_expert_ffn<double>(act, true);
    }
    check_expert_ffn<double>(nn::Activation::GELU, false);
}

TEST_CASE("device fused symmetric KL matches moekd::symmetric_kl, forward and backward", "[cuda]") {
    check_symmetric_kl<float>({3, 37, 1003}, true, false);
    check_symmetric_kl<double>({3, 37, 1003}, true, false);
    check_symmetric_kl<float>({19, 257}, false, true);
    check_symmetric_kl<double>({19, 257}, true, true);
    check_symmetric_kl<float>({4, 32000}, false, false);  // a large vocabulary, one block per row
    check_symmetric_kl<double>({5, 300}, true, false, 1.0);  // every token padding: loss 0, zero gradients
}

TEST_CASE("device cosine-relation loss matches moekd::relation_loss, forward and backward", "[cuda]") {
    check_relation<float>({4, 33, 48}, {4, 33, 80}, false);
    check_relation<double>({4, 33, 48}, {4, 33, 80}, true);
    check_relation<float>({50, 16}, {50, 24}, true);
    check_relation<double>({50, 16}, {50, 24}, false);
}

TEST_CASE("cuSOLVER SVD matches linalg::svd", "[cuda]") {
    check_svd<float>(40, 24);
    check_svd<double>(40, 24);
    check_svd<float>(24, 40);
    check_svd<double>(17, 17);
}

TEST_CASE("SVD knowledge gathering of device experts (cuSOLVER) matches the CPU gathering", "[cuda]") {
    Generator gen(32);
    std::vector<Tensor<double>> cpu, dev;
    for (int e = 0; e < 3; ++e) {
        cpu.push_back(Tensor<double>::randn({24, 16}, gen));
        dev.push_back(cuda::to_device(cpu.back()));
    }
    for (double lambda : {0.5, 0.9, 1.0}) {
        INFO("lambda " << lambda);
        const auto c = linalg::gather_weights(cpu, lambda, {0.5, 0.25, 0.25});
        const auto d = linalg::gather_weights(dev, lambda, {0.5, 0.25, 0.25});
        CHECK(d.weight.device() == Device::CUDA);
        CHECK(d.ranks == c.ranks);
        CHECK(scaled_err(d.weight, c.weight) < 1e-10);  // scaled_err brings device tensors back itself
    }
    std::vector<Tensor<double>> mixed{cpu[0], dev[1]};
    CHECK_THROWS_WITH(linalg::gather_weights(mixed, 0.9), Catch::Contains("expert 1 is on cuda"));
}

TEST_CASE("device MoE kernels give the same bits when run twice", "[cuda]") {
    // every device reduction has a fixed order (no atomics), so repeating a call repeats its bits
    Generator gen(37);
    const Routed r = make_routing(301, 8, 2, 6);
    const auto bits = [](const Tensor<float>& t) { return cuda::to_cpu(t).to_vector(); };
    const auto d1 = cuda::make_dispatch_plan(cuda::to_device(r.experts), 8, 50, cuda::to_device(r.pad));
    const auto d2 = cuda::make_dispatch_plan(cuda::to_device(r.experts), 8, 50, cuda::to_device(r.pad));
    CHECK(host_ints(d1.slot_of) == host_ints(d2.slot_of));
    const int64_t S = d1.rows(), D = 33;
    const Tensor<float> ys = cuda::to_device(Tensor<float>::randn({S, D}, gen));
    const Tensor<float> gates = cuda::to_device(Tensor<float>::rand({301, 2}, gen));
    const Tensor<float> dy = cuda::to_device(Tensor<float>::randn({301, D}, gen));
    const auto c1 = cuda::combine_tokens_backward(dy, ys, gates, d1), c2 = cuda::combine_tokens_backward(dy, ys, gates, d2);
    CHECK(bits(c1.dgates) == bits(c2.dgates));
    CHECK(bits(cuda::permute_tokens_backward(ys, d1)) == bits(cuda::permute_tokens_backward(ys, d2)));
    const Tensor<float> a = cuda::to_device(Tensor<float>::randn({64, 5000}, gen, 0.0, 3.0));
    const Tensor<float> b = cuda::to_device(Tensor<float>::randn({64, 5000}, gen, 0.0, 3.0));
    const auto k1 = cuda::symmetric_kl_forward(a, b), k2 = cuda::symmetric_kl_forward(a, b);
    CHECK(bits(k1.loss) == bits(k2.loss));
    CHECK(bits(cuda::symmetric_kl_backward(a, b, {}, k1).da) == bits(cuda::symmetric_kl_backward(a, b, {}, k2).da));
    const Tensor<float> s = cuda::to_device(Tensor<float>::randn({8, 64, 48}, gen));
    const Tensor<float> t = cuda::to_device(Tensor<float>::randn({8, 64, 96}, gen));
    const auto r1 = cuda::relation_loss_forward(s, t), r2 = cuda::relation_loss_forward(s, t);
    CHECK(bits(r1.loss) == bits(r2.loss));
    CHECK(bits(cuda::relation_loss_backward(r1).dstudent) == bits(cuda::relation_loss_backward(r2).dstudent));
}

TEST_CASE("device MoE kernels check their device inputs", "[cuda]") {
    const Tensor<float> logits = cuda::to_device(Tensor<float>::ones(Shape{4, 6}));
    CHECK_THROWS_WITH(cuda::softmax_topk(logits.t(), 2, true), Catch::Contains("logits") && Catch::Contains("not contiguous"));
    const Tensor<int64_t> bad = cuda::to_device(Tensor<int64_t>::full(Shape{4, 1}, 9));
    CHECK_THROWS_WITH(cuda::make_dispatch_plan(bad, 6, -1), Catch::Contains("expert index 9"));
    const Tensor<int64_t> twice = cuda::to_device(Tensor<int64_t>::zeros(Shape{4, 2}));
    CHECK_THROWS_WITH(cuda::make_dispatch_plan(twice, 6, -1), Catch::Contains("twice"));
    const auto plan = cuda::make_dispatch_plan(cuda::to_device(Tensor<int64_t>::zeros(Shape{4, 1})), 6, -1);
    CHECK_THROWS_WITH(cuda::permute_tokens(cuda::to_device(Tensor<float>::ones(Shape{5, 3})), plan),
                      Catch::Contains("x has 5 rows") && Catch::Contains("4 tokens"));
}

// ---- the moe:: ops on device tensors (the op API's device half) ----------------------------------
namespace {

template <class T>
moe::MoEConfig layer_config(int64_t k, bool dropless, bool before_dropping, nn::Activation act, moe::BalanceLoss b) {
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
    c.balance = b;
    c.z_loss_weight = 0.01;
    c.name = "moe.enc.2";
    return c;
}

template <class T>
void check_layer(int64_t k, bool dropless, bool before_dropping, nn::Activation act, moe::BalanceLoss b) {
    INFO(dtype_name<T>() << " k=" << k << " dropless=" << dropless << " before=" << before_dropping
                         << " gelu=" << (act == nn::Activation::GELU) << " balance=" << int(b));
    const moe::MoEConfig c = layer_config<T>(k, dropless, before_dropping, act, b);
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

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
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
    check_layer<float>(1, false, false, A::ReLU, B::Switch);
    check_layer<double>(1, true, false, A::GELU, B::None);
}

TEST_CASE("moe::MoELayer on the device: NaN logits name the layer and the token; the same bits twice", "[cuda]") {
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
    const Tensor<float> yp = dev.forward(x.to(Device::CUDA), pad.to(Device::CUDA));
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

TEST_CASE("no device: router and dispatch entries name bad arguments before touching CUDA", "[nodevice]") {
    const Tensor<float> logits = Tensor<float>::ones(Shape{4, 3});
    CHECK_THROWS_WITH(cuda::softmax_topk(logits, 4, true), Catch::Contains("top_k = 4") && Catch::Contains("E = 3"));
    CHECK_THROWS_WITH(cuda::softmax_topk(logits, 2, true), Catch::Contains("logits") && Catch::Contains("is on cpu"));
    const Tensor<int64_t> experts = Tensor<int64_t>::zeros(Shape{4, 2});
    CHECK_THROWS_WITH(cuda::topk_gates_backward(logits, experts, Tensor<float>::ones(Shape{4, 2}),
                                                Tensor<float>::ones(Shape{4, 3}), true),
                      Catch::Contains("dgates has shape (4, 3)"));
    CHECK_THROWS_WITH(cuda::make_dispatch_plan(experts, 3, -2), Catch::Contains("capacity -2"));
    CHECK_THROWS_WITH(cuda::make_dispatch_plan(experts, 3, -1, Tensor<uint8_t>::zeros(Shape{5})),
                      Catch::Contains("pad mask") && Catch::Contains("4 tokens"));
    CHECK_THROWS_WITH(cuda::make_dispatch_plan(experts, 3, -1), Catch::Contains("experts") && Catch::Contains("is on cpu"));
    CHECK_THROWS_WITH(cuda::capacity_positions(experts, 0), Catch::Contains("num_experts"));
    CHECK_THROWS_WITH(cuda::check_router_logits(logits, "moe.layer0"), Catch::Contains("logits") && Catch::Contains("is on cpu"));
    CHECK_THROWS_WITH(cuda::check_router_logits(logits, "moe.layer0", Tensor<uint8_t>::zeros(Shape{3})),
                      Catch::Contains("pad mask"));
    cuda::DeviceDispatchPlan plan;
    plan.num_tokens = 4;
    plan.top_k = 2;
    plan.host_offsets = {0, 3, 5};
    CHECK_THROWS_WITH(cuda::permute_tokens(Tensor<float>::ones(Shape{5, 3}), plan), Catch::Contains("x has 5 rows"));
    CHECK_THROWS_WITH(cuda::combine_tokens(Tensor<float>::ones(Shape{5, 3}), Tensor<float>::ones(Shape{4, 1}), plan),
                      Catch::Contains("gates has shape (4, 1)") && Catch::Contains("(4, 2)"));
    CHECK_THROWS_WITH(cuda::permute_tokens_backward(Tensor<float>::ones(Shape{6, 3}), plan), Catch::Contains("S = 5"));
}

TEST_CASE("no device: expert FFN, KL, relation and SVD entries name bad arguments", "[nodevice]") {
    cuda::DeviceExpertWeights<float> w{Tensor<float>::ones(Shape{2, 8, 4}), {}, Tensor<float>::ones(Shape{2, 8, 4}), {}};
    const Tensor<float> xs = Tensor<float>::ones(Shape{5, 4});
    CHECK_THROWS_WITH(cuda::expert_ffn(xs, std::vector<int64_t>{0, 2, 5}, w), Catch::Contains("W2 has shape (2, 8, 4)"));
    w.W2 = Tensor<float>::ones(Shape{2, 4, 8});
    CHECK_THROWS_WITH(cuda::expert_ffn(xs, std::vector<int64_t>{0, 2, 6}, w), Catch::Contains("offsets"));
    CHECK_THROWS_WITH(cuda::expert_ffn(xs, std::vector<int64_t>{0, 2, 5}, w), Catch::Contains("W1") && Catch::Contains("is on cpu"));
    CHECK_THROWS_WITH(cuda::expert_ffn(xs, std::vector<int64_t>{0, 5}, w), Catch::Contains("E = 1"));

    const Tensor<float> a = Tensor<float>::ones(Shape{4, 10});
    CHECK_THROWS_WITH(cuda::symmetric_kl_forward(a, Tensor<float>::ones(Shape{4, 11})), Catch::Contains("same shape"));
    CHECK_THROWS_WITH(cuda::symmetric_kl_forward(a, a, Tensor<uint8_t>::zeros(Shape{5})),
                      Catch::Contains("pad_mask of shape (5,)"));
    CHECK_THROWS_WITH(cuda::symmetric_kl_forward(a, a), Catch::Contains("logits_a") && Catch::Contains("is on cpu"));

    CHECK_THROWS_WITH(cuda::relation_loss_forward(Tensor<float>::ones(Shape{5, 8}), Tensor<float>::ones(Shape{6, 8})),
                      Catch::Contains("different token counts"));
    CHECK_THROWS_WITH(cuda::relation_loss_forward(Tensor<float>::ones(Shape{5, 8}), Tensor<float>::ones(Shape{5, 3})),
                      Catch::Contains("student") && Catch::Contains("is on cpu"));
    CHECK_THROWS_WITH(linalg::cuda::svd(Tensor<float>::ones(Shape{3, 2})), Catch::Contains("is on cpu"));
}

int main(int argc, char** argv) { return moekd::test::gpu_test_main(argc, argv); }
