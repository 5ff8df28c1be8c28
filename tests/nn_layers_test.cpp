// nn_layers_test.cpp — the layers of moekd::nn (layers, attention, Transformer layers and stacks,
// BERT, ViT, adapters): parameter names, initialisation, forward values against naive loops,
// masks, hooks, errors naming the module and shapes, and gradchecks in double of Linear,
// LayerNorm, attention with masks and the encoder / decoder layers. PyTorch parity of the same
// layers in float32 is tests/parity.
#include <algorithm>

#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <set>

#include <moekd/nn.hpp>
#include <moekd/testing/gradcheck.hpp>

using namespace moekd;
using Catch::Contains;

namespace {

std::set<std::string> names_of(const nn::Module<double>& m) {
    std::set<std::string> s;
    for (auto& [n, t] : m.named_parameters()) s.insert(n);
    return s;
}

/// gradcheck of f(inputs) with every parameter of `m` appended to the checked inputs (they are
/// perturbed in place, so f sees them through the module).
template <class F>
void gradcheck_module(nn::Module<double>& m, std::vector<Tensor<double>> inputs, F f) {
    const size_t n_in = inputs.size();
    for (auto& p : m.parameters()) inputs.push_back(p);
    auto r = testing::gradcheck([&](const std::vector<Tensor<double>>& in) {
        return f(std::vector<Tensor<double>>(in.begin(), in.begin() + n_in));
    }, inputs);
    INFO(r.report);
    CHECK(r.ok);
}

/// Naive multi-head attention in plain loops (double): the ground truth for the module.
std::vector<double> naive_mha(nn::MultiHeadAttention<double>& a, const Tensor<double>& q_in, const Tensor<double>& kv,
                              const Tensor<uint8_t>& kpm, bool causal) {
    const int64_t B = q_in.size(0), L = q_in.size(1), S = kv.size(1), D = a.embed_dim(), H = a.num_heads(), Dh = D / H;
    auto proj = [&](const nn::Linear<double>& l, const Tensor<double>& x, int64_t b, int64_t t, int64_t o) {
        double s = l.bias.at({o});
        for (int64_t i = 0; i < D; ++i) s += x.at({b, t, i}) * l.weight.at({o, i});
        return s;
    };
    std::vector<double> ctx(B * L * D), out(B * L * D);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < L; ++t) {
                std::vector<double> sc(S);
                double mx = -INFINITY;
                for (int64_t s = 0; s < S; ++s) {
                    double d = 0;
                    for (int64_t e = 0; e < Dh; ++e)
                        d += proj(*a.q_proj, q_in, b, t, h * Dh + e) * proj(*a.k_proj, kv, b, s, h * Dh + e);
                    d /= std::sqrt(double(Dh));
                    if ((kpm.defined() && kpm.at({b, s})) || (causal && s > t)) d = -INFINITY;
                    sc[s] = d;
                    mx = std::max(mx, d);
                }
                double z = 0;
                for (auto& v : sc) z += (v = std::exp(v - mx));
                for (int64_t e = 0; e < Dh; ++e) {
                    double acc = 0;
                    for (int64_t s = 0; s < S; ++s) acc += sc[s] / z * proj(*a.v_proj, kv, b, s, h * Dh + e);
                    ctx[(b * L + t) * D + h * Dh + e] = acc;
                }
            }
    for (int64_t r = 0; r < B * L; ++r)
        for (int64_t o = 0; o < D; ++o) {
            double s = a.out_proj->bias.at({o});
            for (int64_t i = 0; i < D; ++i) s += ctx[r * D + i] * a.out_proj->weight.at({o, i});
            out[r * D + o] = s;
        }
    return out;
}

nn::LayerConfig small_cfg(bool pre_norm, nn::Activation act = nn::Activation::GELU) {
    nn::LayerConfig c;
    c.d_model = 8, c.num_heads = 2, c.ffn_dim = 12, c.activation = act, c.pre_norm = pre_norm;
    c.dropout = 0.0;
    return c;
}

/// Moves every LayerNorm weight / bias off 1 / 0 so that gradchecks see them matter.
void jiggle_1d(nn::Module<double>& m, uint64_t seed) {
    Generator g(seed);
    NoGrad ng;
    for (auto& p : m.parameters())
        if (p.dim() == 1)
            for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] += 0.3 * g.normal();
}

Tensor<uint8_t> mask_of(std::vector<uint8_t> v, Shape s) { return Tensor<uint8_t>::from_vector(v, s); }

}  // namespace

// ---- basic layers --------------------------------------------------------------------------------
TEST_CASE("Linear: torch names, shapes and init, forward is x W^T + b", "[nn][layers]") {
    Generator g(1);
    nn::Linear<double> l(5, 3, g);
    CHECK(names_of(l) == std::set<std::string>{"weight", "bias"});
    CHECK(l.weight.shape() == Shape{3, 5});
    const double bound = 1 / std::sqrt(5.0);
    for (double v : l.weight.to_vector()) CHECK(std::abs(v) <= bound);
    for (double v : l.bias.to_vector()) CHECK(std::abs(v) <= bound);
    auto x = Tensor<double>::randn({2, 4, 5}, g);
    auto y = l.forward(x);
    REQUIRE(y.shape() == Shape{2, 4, 3});
    double s = l.bias.at({2});
    for (int i = 0; i < 5; ++i) s += x.at({1, 3, i}) * l.weight.at({2, i});
    CHECK(y.at({1, 3, 2}) == Approx(s).epsilon(1e-12));
    nn::Linear<double> nb(5, 3, g, false);
    CHECK(names_of(nb) == std::set<std::string>{"weight"});
    CHECK_THROWS_WITH(l.forward(Tensor<double>::zeros({2, 6})), Contains("Linear(5 -> 3)") && Contains("(2, 6)"));
}

TEST_CASE("Embedding: padding row starts at zero and gets no gradient", "[nn][layers]") {
    Generator g(2);
    nn::Embedding<double> e(6, 4, g, /*padding_idx=*/1, /*std=*/0.5);
    for (int j = 0; j < 4; ++j) CHECK(e.weight.at({1, j}) == 0.0);
    auto ids = Tensor<int64_t>::from_vector({0, 1, 5, 5, 1, 2}, {2, 3});
    auto y = e.forward(ids);
    REQUIRE(y.shape() == Shape{2, 3, 4});
    CHECK(y.at({0, 2, 3}) == e.weight.at({5, 3}));
    sum(y * y + y).backward();
    for (int j = 0; j < 4; ++j) CHECK(e.weight.grad().at({1, j}) == 0.0);
    CHECK(e.weight.grad().at({5, 0}) == Approx(2 * (2 * e.weight.at({5, 0}) + 1)));
    CHECK_THROWS_WITH(e.forward(Tensor<int64_t>::from_vector({7}, {1})), Contains("embedding") && Contains("7"));
    CHECK_THROWS_WITH(nn::Embedding<double>(4, 2, g, 4), Contains("padding_idx 4"));
}

TEST_CASE("SinusoidalPositions: fairseq's table, counting only non-pad tokens", "[nn][layers]") {
    nn::SinusoidalPositions<double> pos(6, /*padding_idx=*/1);
    auto ids = Tensor<int64_t>::from_vector({1, 1, 7, 8, 9, 1, 4, 4}, {2, 4});  // left pad, right pad
    auto y = pos.forward(ids);
    REQUIRE(y.shape() == Shape{2, 4, 6});
    auto expect = [](int64_t p, int64_t j) {  // h = 3, f_k = 10000^(-k / 2)
        const int64_t k = j % 3;
        const double a = double(p) * std::exp(-double(k) * std::log(10000.0) / 2.0);
        return j < 3 ? std::sin(a) : std::cos(a);
    };
    for (int j = 0; j < 6; ++j) {
        CHECK(y.at({0, 0, j}) == 0.0);  // pads: zero rows
        CHECK(y.at({0, 2, j}) == Approx(expect(2, j)).margin(1e-15));  // first real token: position pad + 1
        CHECK(y.at({0, 3, j}) == Approx(expect(3, j)).margin(1e-15));
        CHECK(y.at({1, 0, j}) == Approx(expect(2, j)).margin(1e-15));
        CHECK(y.at({1, 1, j}) == 0.0);
        CHECK(y.at({1, 3, j}) == Approx(expect(4, j)).margin(1e-15));
    }
    CHECK(!y.requires_grad());
}

TEST_CASE("LearnedPositions and LayerNorm", "[nn][layers]") {
    Generator g(3);
    nn::LearnedPositions<double> p(5, 3, g);
    auto r = p.forward(2, 1);
    CHECK(r.shape() == Shape{2, 3});
    CHECK(r.at({1, 2}) == p.weight.at({2, 2}));
    CHECK_THROWS_WITH(p.forward(5, 1), Contains("LearnedPositions(5, 3)") && Contains("exceed"));

    nn::LayerNorm<double> ln(4, 1e-6);
    CHECK(names_of(ln) == std::set<std::string>{"weight", "bias"});
    auto x = Tensor<double>::from_vector({1, 2, 3, 6}, {1, 4});
    auto y = ln.forward(x);
    const double mu = 3, var = (4 + 1 + 0 + 9) / 4.0;
    CHECK(y.at({0, 3}) == Approx((6 - mu) / std::sqrt(var + 1e-6)).epsilon(1e-12));
    CHECK_THROWS_WITH(ln.forward(Tensor<double>::zeros({2, 5})), Contains("LayerNorm(4)") && Contains("(2, 5)"));
}

TEST_CASE("Dropout follows the training flag and its own generator", "[nn][layers]") {
    Generator g(4);
    nn::Dropout<double> d(0.5, g);
    auto x = Tensor<double>::ones({1000});
    auto y = d.forward(x);
    int zeros = 0;
    for (double v : y.to_vector()) {
        CHECK((v == 0.0 || v == 2.0));
        zeros += v == 0.0;
    }
    CHECK(zeros > 400);
    CHECK(zeros < 600);
    d.eval();
    CHECK(d.forward(x).is_same(x));
    CHECK_THROWS_WITH(nn::Dropout<double>(1.5, g), Contains("Dropout") && Contains("1.5"));
}

// ---- attention -----------------------------------------------------------------------------------
TEST_CASE("MultiHeadAttention matches naive loops, self and cross, with masks", "[nn][attention]") {
    Generator g(5);
    nn::MultiHeadAttention<double> a(8, 2, g);
    CHECK(names_of(a) == std::set<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                               "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"});
    auto x = Tensor<double>::randn({2, 4, 8}, g);
    auto kv = Tensor<double>::randn({2, 3, 8}, g);
    auto kpm4 = mask_of({0, 0, 0, 0, 0, 0, 1, 1}, {2, 4});
    auto kpm3 = mask_of({0, 1, 0, 0, 0, 1}, {2, 3});
    struct Case { const char* name; Tensor<double> q, k; Tensor<uint8_t> m; bool causal; };
    for (auto& c : std::vector<Case>{{"self", x, x, {}, false}, {"self+pad", x, x, kpm4, false},
                                     {"causal", x, x, {}, true}, {"causal+pad", x, x, kpm4, true},
                                     {"cross+pad", x, kv, kpm3, false}}) {
        INFO(c.name);
        auto y = a.forward(c.q, c.k, c.k, c.m, c.causal);
        REQUIRE(y.shape() == Shape{2, 4, 8});
        auto ref = naive_mha(a, c.q, c.k, c.m, c.causal);
        auto got = y.to_vector();
        for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(ref[i]).epsilon(1e-10).margin(1e-12));
    }
}

TEST_CASE("MultiHeadAttention: masked keys and future tokens do not matter", "[nn][attention]") {
    Generator g(6);
    nn::MultiHeadAttention<double> a(8, 4, g);
    auto x = Tensor<double>::randn({1, 5, 8}, g);
    auto x2 = x.clone();
    for (int j = 0; j < 8; ++j) x2.at({0, 4, j}) += 3.0;  // change the last token only
    auto pad = mask_of({0, 0, 0, 0, 1}, {1, 5});
    auto y1 = a.self_attention(x, pad), y2 = a.self_attention(x2, pad);
    auto c1 = a.self_attention(x, {}, true), c2 = a.self_attention(x2, {}, true);
    for (int t = 0; t < 4; ++t)  // the padded / future token is invisible to the other queries
        for (int j = 0; j < 8; ++j) {
            CHECK(y1.at({0, t, j}) == Approx(y2.at({0, t, j})).epsilon(1e-12));
            CHECK(c1.at({0, t, j}) == Approx(c2.at({0, t, j})).epsilon(1e-12));
        }
}

TEST_CASE("MultiHeadAttention emits per-head q and k and its output", "[nn][attention][hooks]") {
    Generator g(7);
    nn::MultiHeadAttention<double> a(8, 2, g);
    std::map<std::string, Shape> seen;
    a.add_forward_hook([&](const std::string& tag, const Tensor<double>& t) { seen[tag] = t.shape(); });
    a.forward(Tensor<double>::randn({3, 4, 8}, g), Tensor<double>::randn({3, 6, 8}, g),
              Tensor<double>::randn({3, 6, 8}, g));
    CHECK(seen["q"] == Shape{3, 2, 4, 4});
    CHECK(seen["k"] == Shape{3, 2, 6, 4});
    CHECK(seen["output"] == Shape{3, 4, 8});
}

TEST_CASE("MultiHeadAttention rejects bad shapes naming the module", "[nn][attention][errors]") {
    Generator g(8);
    CHECK_THROWS_WITH(nn::MultiHeadAttention<double>(10, 3, g),
                      Contains("MultiHeadAttention") && Contains("10") && Contains("num_heads 3"));
    nn::MultiHeadAttention<double> a(8, 2, g);
    auto x = Tensor<double>::zeros({2, 4, 8});
    CHECK_THROWS_WITH(a.self_attention(Tensor<double>::zeros({2, 4, 6})),
                      Contains("MultiHeadAttention(D=8, H=2)") && Contains("(2, 4, 6)"));
    CHECK_THROWS_WITH(a.self_attention(x, mask_of({0, 0, 0}, {1, 3})),
                      Contains("key_padding_mask (1, 3)") && Contains("(2, 4)"));
    CHECK_THROWS_WITH(a.forward(x, Tensor<double>::zeros({2, 3, 8}), Tensor<double>::zeros({2, 5, 8})),
                      Contains("same length"));
    CHECK_THROWS_WITH(a.forward(x, Tensor<double>::zeros({2, 3, 8}), Tensor<double>::zeros({2, 3, 8}), {}, true),
                      Contains("causal"));
}

// ---- Transformer layers --------------------------------------------------------------------------
TEST_CASE("TransformerEncoderLayer: fairseq names, hooks, post-LN and pre-LN", "[nn][transformer]") {
    Generator g(9);
    for (bool pre : {false, true}) {
        nn::TransformerEncoderLayer<double> l(small_cfg(pre), g);
        auto names = names_of(l);
        for (const char* n : {"self_attn.q_proj.weight", "self_attn.out_proj.bias", "self_attn_layer_norm.weight",
                              "ffn.fc1.weight", "ffn.fc2.bias", "final_layer_norm.bias"})
            CHECK(names.count(n) == 1);
        CHECK(names.size() == 16);
        std::map<std::string, Tensor<double>> seen;
        l.add_forward_hook([&](const std::string& tag, const Tensor<double>& t) { seen[tag] = t; });
        auto x = Tensor<double>::randn({2, 3, 8}, g);
        auto y = l.forward(x, mask_of({0, 0, 1, 0, 0, 0}, {2, 3}));
        for (const char* tag : {"attn_inner", "attn_trunk", "ffn_inner", "ffn_trunk", "output"}) {
            REQUIRE(seen.count(tag) == 1);
            CHECK(seen[tag].shape() == Shape{2, 3, 8});
        }
        if (!pre) {  // post-LN: the trunk after the FFN is the layer output
            CHECK(seen["ffn_trunk"].is_same(y));
        } else {  // pre-LN: output = x + attn + ffn sublayers
            auto a = (x + seen["attn_inner"] + seen["ffn_inner"]).to_vector();
            auto yv = y.to_vector();
            for (size_t i = 0; i < yv.size(); ++i) CHECK(yv[i] == Approx(a[i]).epsilon(1e-12));
        }
    }
    CHECK_THROWS_WITH(nn::TransformerEncoderLayer<double>(small_cfg(false), g).forward(Tensor<double>::zeros({2, 3, 4})),
                      Contains("TransformerEncoderLayer(d_model=8)") && Contains("(2, 3, 4)"));
    auto bad = small_cfg(false);
    bad.num_heads = 3;
    CHECK_THROWS_WITH(nn::TransformerEncoderLayer<double>(bad, g), Contains("not divisible by num_heads 3"));
}

TEST_CASE("FeedForward: the fused ReLU path equals the plain one, a hook on fc1 sees the pre-activation", "[nn][transformer]") {
    Generator g(21);
    nn::FeedForward<double> ffn(6, 10, g);
    auto x = Tensor<double>::randn({4, 6}, g);
    auto fused = ffn.forward(x).to_vector();  // no hook: fc1 + ReLU as one op
    Tensor<double> h;
    ffn.fc1->add_forward_hook([&](const std::string& tag, const Tensor<double>& t) { if (tag == "output") h = t; });
    auto plain = ffn.forward(x).to_vector();  // hooked: fc1, then ReLU
    REQUIRE(h.defined());
    const auto hv = h.to_vector();
    CHECK(*std::min_element(hv.begin(), hv.end()) < 0);  // pre-activation, negatives included
    REQUIRE(fused.size() == plain.size());
    for (size_t i = 0; i < fused.size(); ++i) CHECK(fused[i] == Approx(plain[i]).epsilon(1e-12));
}

TEST_CASE("dropout in layers: same init whatever p, active only while training", "[nn][transformer]") {
    auto c0 = small_cfg(false), c1 = small_cfg(false);
    c1.dropout = c1.attention_dropout = c1.activation_dropout = 0.3;
    Generator g0(30), g1(30);
    nn::TransformerEncoderLayer<double> a(c0, g0), b(c1, g1);
    auto sa = a.state_dict(), sb = b.state_dict();
    for (auto& [n, t] : sa) CHECK(t.to_vector() == sb[n].to_vector());
    Generator gx(31);
    auto x = Tensor<double>::randn({2, 3, 8}, gx);
    auto ya = a.forward(x).to_vector();
    CHECK(b.forward(x).to_vector() != ya);  // training: dropout masks
    b.eval();
    auto yb = b.forward(x).to_vector();
    for (size_t i = 0; i < ya.size(); ++i) CHECK(yb[i] == Approx(ya[i]).epsilon(1e-14));
}

namespace {
struct ScaleFFN : nn::FFNBase<double> {  // a stand-in for an MoE layer: aux = sum(scale)
    Tensor<double> scale;
    explicit ScaleFFN(double v = 2.0) { scale = register_parameter("scale", Tensor<double>::full({8}, v)); }
    nn::FFNOutput<double> forward(const Tensor<double>& x, const Tensor<uint8_t>& pad) override {
        last_pad = pad;
        return {x * scale, sum(scale)};  // an aux loss, as an MoE layer's
    }
    Tensor<uint8_t> last_pad;
    std::string module_name() const override { return "moe"; }
};
}  // namespace

TEST_CASE("the FFN of a layer is replaceable and stacks take a factory", "[nn][transformer]") {
    Generator g(10);
    nn::FFNFactory<double> every_other = [](int64_t i, Generator&) -> std::shared_ptr<nn::FFNBase<double>> {
        return i % 2 ? std::make_shared<ScaleFFN>() : nullptr;
    };
    nn::TransformerEncoder<double> enc(small_cfg(true), 3, g, nullptr, every_other);
    auto names = names_of(enc);
    CHECK(names.count("layers.0.ffn.fc1.weight") == 1);
    CHECK(names.count("layers.1.moe.scale") == 1);
    CHECK(names.count("layers.2.ffn.fc2.bias") == 1);
    CHECK(names.count("layer_norm.weight") == 1);  // pre-LN stacks end in a LayerNorm
    auto y = enc.forward(Tensor<double>::randn({2, 3, 8}, g));
    CHECK(y.shape() == Shape{2, 3, 8});
}

TEST_CASE("layers hand their padding mask to the FFN, stacks and models return the aux losses summed", "[nn][transformer]") {
    Generator g(15);
    std::vector<std::shared_ptr<ScaleFFN>> made;
    auto odd_layers = [&made](double base) {  // ScaleFFN(base + i) in the odd layers i
        return nn::FFNFactory<double>([&made, base](int64_t i, Generator&) -> std::shared_ptr<nn::FFNBase<double>> {
            if (i % 2 == 0) return nullptr;
            made.push_back(std::make_shared<ScaleFFN>(base + double(i)));
            return made.back();
        });
    };
    nn::EncoderDecoderConfig c;
    c.src_vocab = c.tgt_vocab = 11, c.padding_idx = 1, c.layer = small_cfg(false);
    c.encoder_layers = 4, c.decoder_layers = 2, c.share_embeddings = true;
    nn::EncoderDecoder<double> m(c, g, odd_layers(1.0), odd_layers(10.0));
    REQUIRE(made.size() == 3);  // encoder layers 1 and 3, decoder layer 1
    const auto src = Tensor<int64_t>::from_vector({4, 5, 6, 1, 7, 8, 9, 10}, {2, 4});  // a pad in row 0
    const auto prev = Tensor<int64_t>::from_vector({2, 4, 5, 2, 6, 1}, {2, 3});        // a pad in row 1
    const nn::AuxOutput<double> o = m.forward_with_aux(src, prev);
    REQUIRE(o.aux.defined());
    CHECK(o.aux.item() == (8 * 2.0 + 8 * 4.0) + 8 * 11.0);  // encoder's, then decoder's, in layer order
    CHECK(o.y.contiguous().to_vector() == m.forward(src, prev).contiguous().to_vector());
    for (size_t k = 0; k < 3; ++k) REQUIRE(made[k]->last_pad.defined());
    CHECK(made[0]->last_pad.shape() == Shape{2, 4});  // the encoder's key padding mask
    CHECK(made[0]->last_pad.contiguous().to_vector() == std::vector<uint8_t>{0, 0, 0, 1, 0, 0, 0, 0});
    CHECK(made[2]->last_pad.contiguous().to_vector() == std::vector<uint8_t>{0, 0, 0, 0, 0, 1});  // the target's
    o.aux.backward();  // the aux loss carries history
    for (size_t k = 0; k < 3; ++k) CHECK(made[k]->scale.grad().defined());
    // a decoder continues a given sum (as EncoderDecoder hands it the encoder's)
    const auto enc = m.encoder->forward_tokens_with_aux(src);
    CHECK(enc.aux.item() == 8 * 2.0 + 8 * 4.0);
    CHECK(m.decoder->forward_tokens_with_aux(prev, enc.y).aux.item() == 8 * 11.0);
    // dense: no aux tensor at all; add_aux skips it
    nn::EncoderDecoder<double> dense(c, g);
    CHECK_FALSE(dense.forward_with_aux(src, prev).aux.defined());
    const Tensor<double> one = Tensor<double>::scalar(1.0);
    CHECK_FALSE(nn::add_aux(Tensor<double>(), Tensor<double>()).defined());
    CHECK(nn::add_aux(one, Tensor<double>()).is_same(one));
    CHECK(nn::add_aux(Tensor<double>(), one).is_same(one));
    // BERT and ViT carry it too
    nn::BertConfig bc;
    bc.vocab_size = 20, bc.hidden_size = 8, bc.num_layers = 2, bc.num_heads = 2, bc.intermediate_size = 16;
    bc.max_position_embeddings = 10, bc.hidden_dropout = bc.attention_dropout = 0.0;
    made.clear();
    nn::BertEncoder<double> bert(bc, g, odd_layers(0.5));
    const auto ids = Tensor<int64_t>::from_vector({3, 4, 5, 0, 6, 7, 8, 9}, {2, 4});
    const auto bo = bert.forward_with_aux(ids, Tensor<int64_t>(), nn::padding_mask(ids, 0));
    CHECK(bo.aux.item() == 8 * 1.5);
    CHECK(made[0]->last_pad.contiguous().to_vector() == std::vector<uint8_t>{0, 0, 0, 1, 0, 0, 0, 0});
    nn::ViTConfig vc;
    vc.image_size = 4, vc.patch_size = 2, vc.num_channels = 1, vc.hidden_size = 8, vc.num_layers = 2, vc.num_heads = 2;
    vc.intermediate_size = 16, vc.num_classes = 3;
    nn::ViT<double> vit(vc, g, odd_layers(2.0));
    const auto vo = vit.forward_with_aux(Tensor<double>::randn({2, 1, 4, 4}, g));
    CHECK(vo.y.shape() == Shape{2, 3});
    CHECK(vo.aux.item() == 8 * 3.0);
}

TEST_CASE("TransformerDecoderLayer: names, causality, cross-attention hooks", "[nn][transformer]") {
    Generator g(11);
    nn::TransformerDecoderLayer<double> l(small_cfg(false), g);
    auto names = names_of(l);
    for (const char* n : {"encoder_attn.k_proj.weight", "encoder_attn_layer_norm.bias", "self_attn.v_proj.bias"})
        CHECK(names.count(n) == 1);
    std::set<std::string> tags;
    l.add_forward_hook([&](const std::string& tag, const Tensor<double>&) { tags.insert(tag); });
    auto x = Tensor<double>::randn({1, 4, 8}, g), enc = Tensor<double>::randn({1, 5, 8}, g);
    auto x2 = x.clone();
    for (int j = 0; j < 8; ++j) x2.at({0, 3, j}) -= 1.0;
    auto y1 = l.forward(x, enc), y2 = l.forward(x2, enc);
    for (int t = 0; t < 3; ++t)
        for (int j = 0; j < 8; ++j) CHECK(y1.at({0, t, j}) == Approx(y2.at({0, t, j})).epsilon(1e-12));
    CHECK(tags == std::set<std::string>{"attn_inner", "attn_trunk", "encoder_attn_inner", "encoder_attn_trunk",
                                        "ffn_inner", "ffn_trunk", "output"});
    CHECK_THROWS_WITH(l.forward(x, Tensor<double>::zeros({2, 5, 8})), Contains("batch sizes"));
    CHECK_THROWS_WITH(l.forward(x, Tensor<double>::zeros({1, 5, 6})), Contains("encoder output (1, 5, 6)"));
}

// ---- models --------------------------------------------------------------------------------------
TEST_CASE("EncoderDecoder: shared and tied embeddings, fairseq names, logits", "[nn][models]") {
    Generator g(12);
    nn::EncoderDecoderConfig c;
    c.src_vocab = c.tgt_vocab = 11, c.padding_idx = 1, c.layer = small_cfg(false, nn::Activation::ReLU);
    c.encoder_layers = 2, c.decoder_layers = 1, c.share_embeddings = true;
    nn::EncoderDecoder<double> m(c, g);
    auto sd = m.state_dict();
    REQUIRE(sd.count("encoder.embed_tokens.weight") == 1);
    CHECK(sd["encoder.embed_tokens.weight"].is_same(sd["decoder.embed_tokens.weight"]));
    CHECK(sd["decoder.output_projection.weight"].is_same(sd["decoder.embed_tokens.weight"]));
    CHECK(m.parameters().size() + 2 == m.named_parameters().size());  // the table is counted once
    auto src = Tensor<int64_t>::from_vector({4, 5, 6, 1, 7, 8, 9, 10}, {2, 4});
    auto prev = Tensor<int64_t>::from_vector({2, 4, 5, 2, 6, 1}, {2, 3});
    auto y = m.forward(src, prev);
    CHECK(y.shape() == Shape{2, 3, 11});
    sum(y * y).backward();
    CHECK(sd["encoder.embed_tokens.weight"].grad().defined());
    c.share_embeddings = false, c.tie_output = false, c.tgt_vocab = 9;
    nn::EncoderDecoder<double> m2(c, g);
    CHECK(!m2.state_dict()["decoder.output_projection.weight"].is_same(m2.state_dict()["decoder.embed_tokens.weight"]));
    c.share_embeddings = true;
    CHECK_THROWS_WITH(nn::EncoderDecoder<double>(c, g), Contains("equal vocabularies"));
}

TEST_CASE("BertEncoder: HF names outside the layers, tied MLM decoder", "[nn][models]") {
    Generator g(13);
    nn::BertConfig c;
    c.vocab_size = 20, c.hidden_size = 8, c.num_layers = 2, c.num_heads = 2, c.intermediate_size = 16;
    c.max_position_embeddings = 10, c.hidden_dropout = c.attention_dropout = 0.0;
    nn::BertEncoder<double> m(c, g);
    auto sd = m.state_dict();
    for (const char* n : {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                          "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                          "encoder.layers.1.ffn.fc2.weight", "cls.predictions.transform.dense.weight",
                          "cls.predictions.transform.LayerNorm.bias", "cls.predictions.bias",
                          "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"})
        CHECK(sd.count(n) == 1);
    CHECK(sd["cls.predictions.decoder.weight"].is_same(sd["embeddings.word_embeddings.weight"]));
    CHECK(sd["cls.predictions.decoder.bias"].is_same(sd["cls.predictions.bias"]));
    auto ids = Tensor<int64_t>::from_vector({2, 3, 4, 0, 5, 6, 7, 8}, {2, 4});
    auto h = m.forward(ids, {}, mask_of({0, 0, 0, 1, 0, 0, 0, 0}, {2, 4}));
    CHECK(h.shape() == Shape{2, 4, 8});
    CHECK(m.mlm_logits(h).shape() == Shape{2, 4, 20});
    CHECK_THROWS_WITH(m.forward(Tensor<int64_t>::zeros({1, 11})), Contains("max_position_embeddings = 10"));
}

TEST_CASE("ViT: the patch Linear equals a strided conv, class-token logits", "[nn][models]") {
    Generator g(14);
    nn::ViTConfig c;
    c.image_size = 4, c.patch_size = 2, c.num_channels = 2, c.hidden_size = 8, c.num_layers = 1, c.num_heads = 2;
    c.intermediate_size = 16, c.num_classes = 3;
    nn::ViT<double> m(c, g);
    auto img = Tensor<double>::randn({2, 2, 4, 4}, g);
    auto p = m.embeddings->patch_embeddings->forward(img);
    REQUIRE(p.shape() == Shape{2, 4, 8});
    const auto& w = m.embeddings->patch_embeddings->projection->weight;  // (D, C*P*P) = conv (D, C, P, P)
    const auto& b = m.embeddings->patch_embeddings->projection->bias;
    for (int n = 0; n < 4; ++n)
        for (int d = 0; d < 8; ++d) {
            const int gi = n / 2, gj = n % 2;
            double s = b.at({d});
            for (int ch = 0; ch < 2; ++ch)
                for (int i = 0; i < 2; ++i)
                    for (int j = 0; j < 2; ++j) s += w.at({d, ch * 4 + i * 2 + j}) * img.at({1, ch, gi * 2 + i, gj * 2 + j});
            CHECK(p.at({1, n, d}) == Approx(s).epsilon(1e-12));
        }
    CHECK(names_of(m).count("embeddings.cls_token") == 1);
    CHECK(names_of(m).count("encoder.layer_norm.weight") == 1);
    CHECK(m.forward(img).shape() == Shape{2, 3});
    CHECK_THROWS_WITH(m.forward(Tensor<double>::zeros({1, 3, 4, 4})), Contains("PatchEmbedding") && Contains("(1, 3, 4, 4)"));
}

TEST_CASE("Adapters: near identity, placed in layers, train_adapters_only freezes the rest", "[nn][adapter]") {
    Generator g(15);
    nn::Adapter<double> a(8, 2, g);
    auto x = Tensor<double>::randn({3, 8}, g);
    auto y = a.forward(x);
    for (int64_t i = 0; i < 24; ++i) CHECK(std::abs(y.to_vector()[i] - x.to_vector()[i]) < 0.05);

    nn::ViTConfig c;
    c.image_size = 4, c.patch_size = 2, c.num_channels = 1, c.hidden_size = 8, c.num_layers = 2, c.num_heads = 2;
    c.intermediate_size = 16, c.num_classes = 3, c.adapters = true, c.adapter_dim = 2;
    nn::ViT<double> m(c, g);
    const int64_t n = nn::train_adapters_only(m, {"classifier"});
    int64_t expect = 0;
    for (auto& [name, t] : m.named_parameters()) {
        const bool on = name.find("adapter") != std::string::npos || name.find("layer_norm") != std::string::npos ||
                        name.rfind("classifier.", 0) == 0;
        INFO(name);
        CHECK(t.requires_grad() == on);
        if (on) expect += t.numel();
    }
    CHECK(n == expect);
    CHECK(names_of(m).count("encoder.layers.1.ffn_adapter.up_proj.weight") == 1);
    sum(m.forward(Tensor<double>::randn({2, 1, 4, 4}, g))).backward();
    CHECK(m.encoder->layers->operator[](0).self_attn_adapter->down_proj->weight.grad().defined());
    CHECK(!m.encoder->layers->operator[](0).self_attn->q_proj->weight.grad().defined());
}

// ---- gradchecks (double) -------------------------------------------------------------------------
TEST_CASE("gradcheck: Linear and LayerNorm", "[nn][gradcheck]") {
    Generator g(20);
    nn::Linear<double> l(4, 3, g);
    gradcheck_module(l, {Tensor<double>::randn({2, 4}, g)}, [&](auto in) { return l.forward(in[0]); });
    nn::LayerNorm<double> ln(5);
    jiggle_1d(ln, 21);
    gradcheck_module(ln, {Tensor<double>::randn({3, 5}, g)}, [&](auto in) { return ln.forward(in[0]); });
}

TEST_CASE("gradcheck: MultiHeadAttention with padding, causal and cross masks", "[nn][gradcheck]") {
    Generator g(22);
    nn::MultiHeadAttention<double> a(8, 2, g);
    jiggle_1d(a, 23);
    auto pad = mask_of({0, 0, 1, 0, 0, 0}, {2, 3});
    gradcheck_module(a, {Tensor<double>::randn({2, 3, 8}, g)}, [&](auto in) { return a.self_attention(in[0], pad, true); });
    auto pad4 = mask_of({0, 1, 0, 0, 0, 0, 0, 1}, {2, 4});
    gradcheck_module(a, {Tensor<double>::randn({2, 3, 8}, g), Tensor<double>::randn({2, 4, 8}, g)},
                     [&](auto in) { return a.forward(in[0], in[1], in[1], pad4); });
}

TEST_CASE("gradcheck: Transformer encoder layers (post-LN, pre-LN with adapters) and decoder layer", "[nn][gradcheck]") {
    Generator g(24);
    auto pad = mask_of({0, 0, 0, 0, 1, 1}, {2, 3});
    nn::TransformerEncoderLayer<double> post(small_cfg(false), g);
    jiggle_1d(post, 25);
    gradcheck_module(post, {Tensor<double>::randn({2, 3, 8}, g)}, [&](auto in) { return post.forward(in[0], pad); });
    auto cfg = small_cfg(true);
    cfg.adapters = true, cfg.adapter_dim = 3;
    nn::TransformerEncoderLayer<double> pre(cfg, g);
    jiggle_1d(pre, 26);
    gradcheck_module(pre, {Tensor<double>::randn({2, 3, 8}, g)}, [&](auto in) { return pre.forward(in[0], pad); });
    nn::TransformerDecoderLayer<double> dec(small_cfg(false), g);
    jiggle_1d(dec, 27);
    auto enc_pad = mask_of({0, 0, 0, 1, 0, 0, 0, 0}, {2, 4});
    gradcheck_module(dec, {Tensor<double>::randn({2, 3, 8}, g), Tensor<double>::randn({2, 4, 8}, g)},
                     [&](auto in) { return dec.forward(in[0], in[1], {}, enc_pad); });
}
