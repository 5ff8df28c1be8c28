// autocast_test.cpp — the bf16 autocast scope (core/precision.hpp, ops/gemm_bf16.hpp).
//
// Where bf16 products run (bf16_support().ok: a MOEKD_DNNL build on an AVX512-BF16 CPU):
// - the bf16 GEMM equals the fp32 GEMM of the bf16-rounded operands up to the order of the fp32
//   sums (|diff| <= 1e-5 * sum_k |a_ik b_kj|), over transposed, strided, alpha / beta operands;
// - matmul, bmm and linear in a scope, forward and backward, equal the fp32 ops on rounded
//   operands (the same bound), and differ from fp32 (so the bf16 path really ran);
// - a whole MoE layer (GELU) in bf16 stays within the bf16 tolerance of fp32, output and
//   gradients: ||x16 - x32|| / ||x32|| <= 0.02 (bf16 keeps 8 significant bits, u = 2^-8; each
//   product of two rounded operands is off by <= 2u relatively, about 0.008, and sums of
//   random-signed terms keep that scale), with the router's probabilities bit for bit fp32;
// - softmax / layer norm / reductions inside a scope give the fp32 bits; a backward outside the
//   scope runs in its forward's precision; pool workers compute in their caller's precision;
// - a parameter's bf16 copy is made once per step, and an optimizer step makes it again.
// Where they do not run, a bf16 scope reports fp32 and gives the fp32 bits.
#include <algorithm>
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

#include <moekd/moe.hpp>
#include <moekd/nn.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;

namespace {

Tensor<float> round_bf16(const Tensor<float>& x) {
    Tensor<float> r = x.detach().contiguous().clone();
    for (int64_t i = 0; i < r.numel(); ++i) r.data()[i] = float(bf16(r.data()[i]));
    return r;
}

double max_diff(const Tensor<float>& a, const Tensor<float>& b) {
    REQUIRE(a.shape() == b.shape());
    const auto u = a.contiguous().to_vector(), v = b.contiguous().to_vector();
    double m = 0;
    for (size_t i = 0; i < u.size(); ++i) m = std::max(m, double(std::abs(u[i] - v[i])));
    return m;
}
/// ||a - b|| / ||b|| (Frobenius): the tolerance of a bf16 result against its fp32 one, robust to
/// the cancellation inside single elements that a max-relative bound is not.
double rel_error(const Tensor<float>& a, const Tensor<float>& b) {
    REQUIRE(a.shape() == b.shape());
    const auto u = a.contiguous().to_vector(), v = b.contiguous().to_vector();
    double d = 0, n = 0;
    for (size_t i = 0; i < u.size(); ++i) d += double(u[i] - v[i]) * (u[i] - v[i]), n += double(v[i]) * v[i];
    INFO("|a - b| / |b| = " << std::sqrt(d / n));
    return std::sqrt(d / n);
}
bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
    return a.shape() == b.shape() && a.contiguous().to_vector() == b.contiguous().to_vector();
}

/// got == ref up to fp32 summation order: |got - ref| <= 1e-5 * (|A| @ |B|) elementwise, given
/// bound = |A| @ |B| (for the same shapes as got).
void require_sum_order_close(const Tensor<float>& got, const Tensor<float>& ref, const Tensor<float>& bound) {
    REQUIRE(got.shape() == ref.shape());
    const auto g = got.contiguous().to_vector(), r = ref.contiguous().to_vector(), b = bound.contiguous().to_vector();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(double(g[i]) - r[i]) / (double(b[i]) + 1e-30));
    INFO("shape " << got.shape() << ": worst |got - ref| / (|A| @ |B|) = " << worst);
    CHECK(worst <= 1e-5);
}

Tensor<float> absf(const Tensor<float>& x) { return abs(x.detach()); }

}  // namespace

TEST_CASE("precision names: fp32 and bf16 parse, anything else lists the choices", "[autocast]") {
    CHECK(parse_precision("fp32") == Precision::fp32);
    CHECK(parse_precision("bf16") == Precision::bf16);
    CHECK(std::string(precision_name(Precision::bf16)) == "bf16");
    for (const char* bad : {"fp16", "", "BF16", "float32"}) {
        try {
            parse_precision(bad);
            FAIL("accepted " << bad);
        } catch (const Error& e) {
            CHECK(std::string(e.what()).find("choose fp32 or bf16") != std::string::npos);
        }
    }
}

TEST_CASE("a bf16 scope runs bf16 exactly where bf16_support() says it can", "[autocast]") {
    const Bf16Support s = bf16_support();
    INFO("bf16 support: " << s.ok << " (" << s.why << ")");
    CHECK(!s.why.empty());
    CHECK(autocast_precision() == Precision::fp32);
    {
        Autocast ac(Precision::bf16);
        CHECK(ac.active() == (s.ok ? Precision::bf16 : Precision::fp32));
        {
            Autocast inner(Precision::fp32);  // nested scopes restore what they found
            CHECK(autocast_precision() == Precision::fp32);
        }
        CHECK(autocast_precision() == ac.active());
    }
    CHECK(autocast_precision() == Precision::fp32);
    Generator gen(3);
    Tensor<float> a = Tensor<float>::randn({33, 47}, gen), b = Tensor<float>::randn({47, 29}, gen);
    const Tensor<float> c32 = matmul(a, b);
    Tensor<float> c16;
    {
        Autocast ac(Precision::bf16);
        c16 = matmul(a, b);
    }
    if (s.ok) CHECK(max_diff(c16, c32) > 0);  // the bf16 path ran
    else CHECK(same_bits(c16, c32));          // the fp32 fallback
}

TEST_CASE("the bf16 GEMM is the fp32 GEMM of the rounded operands, over layouts, alpha and beta", "[autocast]") {
    if (!bf16_support().ok) {
        WARN("bf16 products do not run here: " << bf16_support().why);
        return;
    }
    Generator gen(5);
    struct Case {
        int64_t M, N, K;
        bool ta, tb;
        float alpha, beta;
    };
    for (const Case& c : std::vector<Case>{{1, 1, 1, false, false, 1, 0},
                                           {7, 13, 5, true, false, 1, 0},
                                           {64, 64, 64, false, true, 1, 1},
                                           {129, 257, 65, true, true, 0.5f, 0},
                                           {300, 200, 150, false, false, -2, 0.25f},
                                           {512, 96, 384, false, true, 1, 0},
                                           {40, 700, 256, false, false, 1, 1}}) {
        INFO("M " << c.M << " N " << c.N << " K " << c.K << " ta " << c.ta << " tb " << c.tb << " alpha " << c.alpha
                  << " beta " << c.beta);
        // stored as given, read through transposed views where asked
        Tensor<float> as = Tensor<float>::randn(c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K}, gen);
        Tensor<float> bs = Tensor<float>::randn(c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N}, gen);
        const Tensor<float> a = c.ta ? as.t() : as, b = c.tb ? bs.t() : bs;
        const Tensor<float> c0 = Tensor<float>::randn({c.M, c.N}, gen);
        Tensor<float> got = c0.clone(), ref = c0.clone();
        {
            Autocast ac(Precision::bf16);
            detail::gemm_auto(c.alpha, detail::mat_ref(a), detail::mat_ref(b), c.beta, detail::mat_mut(got));
        }
        const Tensor<float> ar = round_bf16(a), br = round_bf16(b);
        detail::gemm(c.alpha, detail::mat_ref(ar), detail::mat_ref(br), c.beta, detail::mat_mut(ref));
        const Tensor<float> bound = matmul(absf(ar), absf(br)) * std::abs(c.alpha) + absf(c0) * std::abs(c.beta);
        require_sum_order_close(got, ref, bound);
    }
}

TEST_CASE("matmul, bmm and linear in a bf16 scope: forward and backward on rounded operands", "[autocast]") {
    if (!bf16_support().ok) {
        WARN("bf16 products do not run here: " << bf16_support().why);
        return;
    }
    Generator gen(7);
    SECTION("linear with bias: y, dx, dw") {
        Tensor<float> x = Tensor<float>::randn({2, 37, 96}, gen).requires_grad_();
        Tensor<float> w = Tensor<float>::randn({80, 96}, gen, 0, 0.1).requires_grad_();
        Tensor<float> bias = Tensor<float>::randn({80}, gen).requires_grad_();
        const Tensor<float> g = Tensor<float>::randn({2, 37, 80}, gen);
        Tensor<float> y;
        {
            Autocast ac(Precision::bf16);
            y = linear(x, w, bias);
            sum(y * g).backward();
        }
        const Tensor<float> xr = round_bf16(x), wr = round_bf16(w), gr = round_bf16(g);
        require_sum_order_close(y - bias.detach(), matmul(xr, wr.t()), matmul(absf(xr), absf(wr).t()));
        require_sum_order_close(x.grad(), matmul(gr, wr), matmul(absf(gr), absf(wr)));
        const Tensor<float> g2 = gr.reshape({74, 80}), x2 = xr.reshape({74, 96});
        require_sum_order_close(w.grad(), matmul(g2.t(), x2), matmul(absf(g2).t(), absf(x2)));
        // the bias gradient is a column sum: fp32, not rounded
        CHECK(max_diff(bias.grad(), sum(g, {0, 1})) <= 1e-4);
        Tensor<float> y32 = linear(x.detach(), w.detach(), bias.detach());
        CHECK(max_diff(y, y32) > 0);
        CHECK(rel_error(y, y32) <= 0.02);
    }
    SECTION("linear: only w or only x needs a gradient, a fused relu, a single row") {
        // the backward converts g once for dx and (transposed) dW: each product must still read
        // the right operand whichever gradients are asked for
        for (const int64_t rows : {int64_t(29), int64_t(1)})
            for (const int which : {0, 1, 2}) {  // 0: only w, 1: only x, 2: both with a fused relu
                Tensor<float> x = Tensor<float>::randn({rows, 48}, gen);
                Tensor<float> w = Tensor<float>::randn({40, 48}, gen, 0, 0.1);
                if (which != 1) w.requires_grad_();
                if (which != 0) x.requires_grad_();
                const Tensor<float> g = Tensor<float>::randn({rows, 40}, gen);
                Tensor<float> y;
                {
                    Autocast ac(Precision::bf16);
                    y = linear(x, w, Tensor<float>(), which == 2);
                    sum(y * g).backward();
                }
                const Tensor<float> xr = round_bf16(x.detach()), wr = round_bf16(w.detach());
                // through the relu: g where y > 0 (y is exact here, the mask the same in both)
                Tensor<float> gm = g.clone();
                if (which == 2)
                    for (int64_t i = 0; i < gm.numel(); ++i)
                        if (!(y.data()[i] > 0.0f)) gm.data()[i] = 0.0f;
                const Tensor<float> gr = round_bf16(gm);
                if (which != 1)
                    require_sum_order_close(w.grad(), matmul(gr.t(), xr), matmul(absf(gr).t(), absf(xr)));
                if (which != 0) require_sum_order_close(x.grad(), matmul(gr, wr), matmul(absf(gr), absf(wr)));
            }
    }
    SECTION("matmul broadcast over a batch, and bmm") {
        Tensor<float> a = Tensor<float>::randn({3, 1, 17, 64}, gen).requires_grad_();
        Tensor<float> b = Tensor<float>::randn({4, 64, 19}, gen).requires_grad_();
        const Tensor<float> g = Tensor<float>::randn({3, 4, 17, 19}, gen);
        Tensor<float> c;
        {
            Autocast ac(Precision::bf16);
            c = matmul(a, b);
        }
        sum(c * g).backward();  // outside the scope: still the forward's bf16
        const Tensor<float> ar = round_bf16(a), br = round_bf16(b), gr = round_bf16(g);
        require_sum_order_close(c, matmul(ar, br), matmul(absf(ar), absf(br)));
        require_sum_order_close(a.grad(), sum(matmul(gr, br.transpose(-1, -2)), {1}, true),
                                sum(matmul(absf(gr), absf(br).transpose(-1, -2)), {1}, true));
        require_sum_order_close(b.grad(), sum(matmul(ar.transpose(-1, -2), gr), {0}),
                                sum(matmul(absf(ar).transpose(-1, -2), absf(gr)), {0}));
        Tensor<float> p = Tensor<float>::randn({8, 16, 32}, gen), q = Tensor<float>::randn({8, 32, 16}, gen);
        Tensor<float> r;
        {
            Autocast ac(Precision::bf16);
            r = bmm(p, q);
        }
        require_sum_order_close(r, bmm(round_bf16(p), round_bf16(q)), bmm(absf(p), absf(q)));
    }
    SECTION("per-head products on strided views, as the attention runs them") {
        // q, k: (B, H, L, Dh) views of (B, L, D) projections; scores = q @ k^T, ctx = probs @ k
        const int64_t B = 3, L = 7, H = 2, Dh = 8;
        Tensor<float> xq = Tensor<float>::randn({B, L, H * Dh}, gen).requires_grad_();
        Tensor<float> xk = Tensor<float>::randn({B, L, H * Dh}, gen).requires_grad_();
        const auto heads = [&](const Tensor<float>& t) { return t.view({B, L, H, Dh}).permute({0, 2, 1, 3}); };
        const Tensor<float> g = Tensor<float>::randn({B, H, L, Dh}, gen);
        Tensor<float> s, ctx;
        {
            Autocast ac(Precision::bf16);
            s = matmul(heads(xq), heads(xk).transpose(-1, -2));  // (B, H, L, L), k^T column-major
            ctx = matmul(s, heads(xk));                          // (B, H, L, Dh)
        }
        sum(ctx * g).backward();
        const Tensor<float> qr = heads(round_bf16(xq)), kr = heads(round_bf16(xk));
        require_sum_order_close(s, matmul(qr, kr.transpose(-1, -2)), matmul(absf(qr), absf(kr).transpose(-1, -2)));
        const Tensor<float> sr = round_bf16(s.detach());
        require_sum_order_close(ctx, matmul(sr, kr), matmul(absf(sr), absf(kr)));
        // the gradients chain two bf16 products (d scores, then dq / dk): against fp32's, bf16's tolerance
        Tensor<float> xq32 = xq.detach().clone().requires_grad_(), xk32 = xk.detach().clone().requires_grad_();
        sum(matmul(matmul(heads(xq32), heads(xk32).transpose(-1, -2)), heads(xk32)) * g).backward();
        CHECK(rel_error(xq.grad(), xq32.grad()) <= 0.02);
        CHECK(rel_error(xk.grad(), xk32.grad()) <= 0.02);
    }
    SECTION("pool workers compute in their caller's precision") {
        // many small products: batched_mm splits the batch over the pool's threads
        const int saved = num_threads();
        set_num_threads(2);
        Tensor<float> p = Tensor<float>::randn({64, 8, 24}, gen), q = Tensor<float>::randn({64, 24, 8}, gen);
        Tensor<float> r;
        {
            Autocast ac(Precision::bf16);
            r = bmm(p, q);
        }
        set_num_threads(saved);
        require_sum_order_close(r, bmm(round_bf16(p), round_bf16(q)), bmm(absf(p), absf(q)));
    }
}

TEST_CASE("only the products change: softmax, layer norm, sums in a bf16 scope give the fp32 bits", "[autocast]") {
    Generator gen(9);
    Tensor<float> x = Tensor<float>::randn({6, 33}, gen);
    Tensor<float> gamma = Tensor<float>::randn({33}, gen), beta = Tensor<float>::randn({33}, gen);
    const Tensor<float> s32 = softmax(x, -1), n32 = layer_norm(x, {33}, gamma, beta), m32 = sum(x, {1});
    Autocast ac(Precision::bf16);
    CHECK(same_bits(softmax(x, -1), s32));
    CHECK(same_bits(layer_norm(x, {33}, gamma, beta), n32));
    CHECK(same_bits(sum(x, {1}), m32));
}

TEST_CASE("an MoE layer in bf16: within the bf16 tolerance of fp32, the router in fp32", "[autocast]") {
    if (!bf16_support().ok) {
        WARN("bf16 products do not run here: " << bf16_support().why);
        return;
    }
    Generator gen(13);
    moe::MoEConfig cfg;
    cfg.d_model = 64;
    cfg.ffn_dim = 128;
    cfg.router.num_experts = 4;
    cfg.router.top_k = 2;
    cfg.activation = nn::Activation::GELU;  // smooth: a ReLU's kink flips whole terms of dW1 between
                                            // precisions wherever a pre-activation is near 0
    moe::MoELayer<float> layer(cfg, gen);
    Tensor<float> x = Tensor<float>::randn({4, 32, 64}, gen);
    const Tensor<float> g = Tensor<float>::randn({4, 32, 64}, gen);
    Tensor<float> x32 = x.clone().requires_grad_(), x16 = x.clone().requires_grad_();
    auto o32 = layer.forward_with_stats(x32);
    sum(o32.y * g).backward();
    const Tensor<float> dw32 = layer.experts->ptr(0)->fc1->weight.grad().clone();
    layer.zero_grad();
    moe::MoEOutput<float> o16;
    {
        Autocast ac(Precision::bf16);
        o16 = layer.forward_with_stats(x16);
        sum(o16.y * g).backward();
    }
    CHECK(same_bits(o16.routing.probs, o32.routing.probs));
    CHECK(max_diff(o16.y, o32.y) > 0);
    CHECK(rel_error(o16.y, o32.y) <= 0.02);
    CHECK(rel_error(x16.grad(), x32.grad()) <= 0.02);
    CHECK(rel_error(layer.experts->ptr(0)->fc1->weight.grad(), dw32) <= 0.02);
}

TEST_CASE("a parameter's bf16 copy: made once, reused, remade after an optimizer step, dropped at the end",
          "[autocast]") {
    if (!bf16_support().ok) {
        WARN("bf16 products do not run here: " << bf16_support().why);
        return;
    }
    Generator gen(17);
    nn::Linear<float> fc(48, 32, gen);
    optim::SGD<float> opt({{fc.parameters(), 0.5, 0.0}});
    Tensor<float> x = Tensor<float>::randn({16, 48}, gen);
    CHECK(detail::bf16_cache_size() == 0);
    Autocast ac(Precision::bf16);
    Tensor<float> y1 = fc.forward(x);
    CHECK(detail::bf16_cache_size() == 1);  // the weight (x is no parameter)
    sum(y1).backward();                    // dx = g @ w reads the same copy
    Tensor<float> y2 = fc.forward(x);
    CHECK(detail::bf16_cache_size() == 1);
    CHECK(same_bits(y1, y2));
    opt.step();  // the weight changes in place: the copy must not be reused
    const Tensor<float> y3 = fc.forward(x);
    const Tensor<float> ref = matmul(round_bf16(x), round_bf16(fc.weight).t()) + fc.bias.detach();
    require_sum_order_close(y3 - fc.bias.detach(), ref - fc.bias.detach(),
                            matmul(absf(x), absf(fc.weight.detach()).t()));
    CHECK(max_diff(y3, y1) > 1e-3);
}

TEST_CASE("the cache is empty once the last scope ends", "[autocast]") {
    Generator gen(19);
    nn::Linear<float> fc(8, 8, gen);
    {
        Autocast ac(Precision::bf16);
        fc.forward(Tensor<float>::randn({4, 8}, gen));
    }
    CHECK(detail::bf16_cache_size() == 0);
}
