// tcd_test.cpp — the TCD relation losses over hooked BERT representations (losses/tcd.hpp):
// each term reads the intended tensors (a hook test: changing only the teacher's trunk changes
// only L_T, likewise inner and attention), the capture holds exactly what the layers' LayerNorms,
// sublayers and attention projections produced, the terms equal the relation losses computed by
// hand (L_T and L_I over cross-batch token groups, L_A per sequence over its own real tokens, each
// summed over positions: the paper's lines 142-144 and 352), finite-difference gradcheck of the composed loss w.r.t. the student's parameters (dense
// and MoE student, teacher of another width), and bad inputs.
#include <catch2/catch.hpp>

#include <moekd/losses/tcd.hpp>
#include <moekd/moe/moe_layer.hpp>
#include <moekd/testing/gradcheck.hpp>

using namespace moekd;
using Catch::Contains;

namespace {

nn::BertConfig tiny_config(int64_t D, int64_t F, int64_t layers = 2, int64_t heads = 2) {
    nn::BertConfig c;
    c.vocab_size = 13, c.hidden_size = D, c.num_layers = layers, c.num_heads = heads, c.intermediate_size = F;
    c.max_position_embeddings = 16, c.hidden_dropout = 0.0, c.attention_dropout = 0.0;
    return c;
}

/// An FFN factory that puts a top-1 MoE layer (KL-uniform balance) in every layer.
template <class T>
nn::FFNFactory<T> moe_factory(int64_t D, int64_t F, int64_t E) {
    return [=](int64_t layer, Generator& g) -> std::shared_ptr<nn::FFNBase<T>> {
        moe::MoEConfig mc;
        mc.d_model = D, mc.ffn_dim = F, mc.activation = nn::Activation::GELU;
        mc.router.num_experts = E, mc.router.top_k = 1, mc.router.dropless = true;
        mc.balance = moe::BalanceLoss::KLUniform, mc.balance_weight = 0.01;
        mc.name = "moe" + std::to_string(layer);
        return std::make_shared<moe::MoELayer<T>>(mc, g);
    };
}

Tensor<int64_t> batch_ids(int64_t B, int64_t T, uint64_t seed) {
    Generator g(seed);
    return Tensor<int64_t>::randint(4, 13, {B, T}, g);
}

double val(const Tensor<double>& t) { return t.item(); }

}  // namespace

TEST_CASE("the capture holds exactly the LayerNorm outputs, sublayer outputs and q/k of each layer", "[tcd]") {
    Generator gen(1);
    nn::BertEncoder<double> bert(tiny_config(8, 16), gen);
    tcd::RepresentationCapture<double> cap(bert);
    // independent hooks on the submodules that produce each representation
    std::vector<Tensor<double>> attn_ln(2), ffn_ln(2), attn_out(2), ffn_out(2), q(2), k(2);
    for (size_t l = 0; l < 2; ++l) {
        auto& layer = (*bert.encoder->layers)[l];
        layer.self_attn_layer_norm->add_forward_hook([&, l](const std::string& t, const Tensor<double>& v) {
            if (t == "output") attn_ln[l] = v;
        });
        layer.final_layer_norm->add_forward_hook([&, l](const std::string& t, const Tensor<double>& v) {
            if (t == "output") ffn_ln[l] = v;
        });
        layer.self_attn->add_forward_hook([&, l](const std::string& t, const Tensor<double>& v) {
            if (t == "output") attn_out[l] = v;
            if (t == "q") q[l] = v;
            if (t == "k") k[l] = v;
        });
        layer.ffn->add_forward_hook([&, l](const std::string& t, const Tensor<double>& v) {
            if (t == "output") ffn_out[l] = v;
        });
    }
    const Tensor<double> h = bert.forward(batch_ids(2, 5, 3));
    REQUIRE(cap.depth() == 2);
    for (int64_t l = 0; l < 2; ++l) {
        const auto& r = cap.layer(l);
        CHECK(r.attn_trunk.is_same(attn_ln[size_t(l)]));
        CHECK(r.ffn_trunk.is_same(ffn_ln[size_t(l)]));
        CHECK(r.attn_inner.is_same(attn_out[size_t(l)]));
        CHECK(r.ffn_inner.is_same(ffn_out[size_t(l)]));
        CHECK(r.q.is_same(q[size_t(l)]));
        CHECK(r.k.is_same(k[size_t(l)]));
        CHECK(r.q.shape() == Shape({2, 2, 5, 4}));
    }
    CHECK(cap.layer(1).ffn_trunk.is_same(h));  // post-LN: the last trunk is the encoder output
    // a capture that keeps only the trunk leaves the rest undefined; destroying it removes its hooks
    {
        tcd::RepresentationCapture<double> only(bert, tcd::CaptureWhat{true, false, false});
        bert.forward(batch_ids(2, 5, 4));
        CHECK(only.layer(0).attn_trunk.defined());
        CHECK_FALSE(only.layer(0).attn_inner.defined());
        CHECK_FALSE(only.layer(0).q.defined());
    }
    CHECK(bert.encoder->layers->ptr(0)->self_attn->has_hooks());  // the test's own hooks remain
}

TEST_CASE("each term equals the relation losses over the gathered tokens, summed over positions", "[tcd]") {
    Generator gen(2);
    nn::BertEncoder<double> s(tiny_config(8, 16), gen), t(tiny_config(12, 24), gen);
    tcd::RepresentationCapture<double> cs(s), ct(t);
    const auto ids = batch_ids(3, 6, 5);
    s.forward(ids);
    t.forward(ids);
    const auto groups = tcd::sample_batch_token_groups(3, 6, Tensor<uint8_t>(), 4, 5, gen);
    const auto loss = tcd::tcd_loss(cs, ct, groups, {0.5, 2.0, 3.0});
    double lt = 0, li = 0, la = 0;
    auto rows = [&](const Tensor<double>& x) {  // (B, T, D) -> (G, N, D) by hand
        const int64_t D = x.size(2);
        std::vector<double> out;
        const auto v = x.contiguous().to_vector();
        for (int64_t i = 0; i < groups.numel(); ++i)
            for (int64_t d = 0; d < D; ++d) out.push_back(v[size_t(groups.data()[i] * D + d)]);
        return Tensor<double>::from_vector(out, {groups.size(0), groups.size(1), D});
    };
    auto seq = [&](const Tensor<double>& x, int64_t b) {  // (B, H, T, Dh) -> sequence b's (1, H, T, Dh) by hand
        const int64_t H = x.size(1), Tn = x.size(2), Dh = x.size(3);
        const auto v = x.contiguous().to_vector();
        std::vector<double> out(v.begin() + b * H * Tn * Dh, v.begin() + (b + 1) * H * Tn * Dh);
        return Tensor<double>::from_vector(out, {1, H, Tn, Dh});
    };
    for (int64_t l = 0; l < 2; ++l) {
        const auto &a = cs.layer(l), &b = ct.layer(l);
        lt += moekd::detail::relation_loss_reference(rows(a.attn_trunk), rows(b.attn_trunk)) +
              moekd::detail::relation_loss_reference(rows(a.ffn_trunk), rows(b.ffn_trunk));
        li += moekd::detail::relation_loss_reference(rows(a.attn_inner), rows(b.attn_inner)) +
              moekd::detail::relation_loss_reference(rows(a.ffn_inner), rows(b.ffn_inner));
        // L_A: within each sequence (its 6 queries against its 6 keys), mean over the 3 sequences
        double lal = 0;
        for (int64_t bb = 0; bb < 3; ++bb)
            lal += moekd::detail::qk_relation_loss_reference(seq(a.q, bb), seq(a.k, bb), seq(b.q, bb), seq(b.k, bb));
        la += lal / 3;
    }
    // the total over the positions (2L = 4 for L_T and L_I, L = 2 for L_A), not the mean
    CHECK(val(loss.trunk) == Approx(lt).epsilon(1e-12));
    CHECK(val(loss.inner) == Approx(li).epsilon(1e-12));
    CHECK(val(loss.attention) == Approx(la).epsilon(1e-12));
    CHECK(val(loss.total) == Approx(0.5 * lt + 2.0 * li + 3.0 * la).epsilon(1e-12));
    CHECK(val(loss.trunk) > 0);
    CHECK(val(loss.inner) > 0);
    CHECK(val(loss.attention) > 0);
    // a model against itself: every term is 0
    const auto self = tcd::tcd_loss(cs, cs, groups, {});
    CHECK(val(self.total) == Approx(0).margin(1e-14));
}

TEST_CASE("L_A is per sequence over its real tokens: a padded batch's L_A is the mean of its sequences' alone", "[tcd]") {
    Generator gen(12);
    nn::BertEncoder<double> s(tiny_config(8, 16), gen, moe_factory<double>(8, 8, 4)), t(tiny_config(12, 24), gen);
    s.eval(), t.eval();
    tcd::RepresentationCapture<double> cs(s, {false, false, true}), ct(t, {false, false, true});
    const tcd::TcdWeights wa{0.0, 0.0, 1.0};
    // three sequences of 7, 4 and 5 real tokens (pads at the end)
    const int64_t B = 3, Tn = 7, len[3] = {7, 4, 5};
    Tensor<int64_t> ids = batch_ids(B, Tn, 13);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = len[b]; i < Tn; ++i) ids.data()[b * Tn + i] = 0;
    const Tensor<uint8_t> pad = nn::padding_mask(ids, 0);
    auto run = [&](const Tensor<int64_t>& x, const Tensor<uint8_t>& p) {
        s.forward(x, Tensor<int64_t>(), p);
        t.forward(x, Tensor<int64_t>(), p);
        const auto g = tcd::sample_batch_token_groups(x.size(0), x.size(1), p, 1, 2, gen);  // unused by L_A
        return val(tcd::tcd_loss(cs, ct, g, wa, p).attention);
    };
    const double batch = run(ids, pad);
    double alone = 0;
    for (int64_t b = 0; b < B; ++b) {  // each sequence by itself, cut to its real tokens: no pad at all
        std::vector<int64_t> v(ids.data() + b * Tn, ids.data() + b * Tn + len[b]);
        alone += run(Tensor<int64_t>::from_vector(v, {1, len[b]}), Tensor<uint8_t>());
    }
    CHECK(batch == Approx(alone / 3).epsilon(1e-10));
    CHECK(batch > 0);
    // the naive reference on the padded batch's own captures: per sequence over its real positions
    run(ids, pad);
    double ref = 0;
    for (int64_t l = 0; l < 2; ++l) {
        const auto &a = cs.layer(l), &b = ct.layer(l);
        double lal = 0;
        for (int64_t bb = 0; bb < B; ++bb) {
            auto cut = [&](const Tensor<double>& x) {  // (B, H, T, Dh) -> (1, H, len, Dh)
                const int64_t H = x.size(1), Dh = x.size(3);
                const auto v = x.contiguous().to_vector();
                std::vector<double> out;
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t i = 0; i < len[bb]; ++i)
                        for (int64_t d = 0; d < Dh; ++d) out.push_back(v[size_t(((bb * H + h) * Tn + i) * Dh + d)]);
                return Tensor<double>::from_vector(out, {1, H, len[bb], Dh});
            };
            lal += moekd::detail::qk_relation_loss_reference(cut(a.q), cut(a.k), cut(b.q), cut(b.k));
        }
        ref += lal / double(B);
    }
    CHECK(batch == Approx(ref).epsilon(1e-12));
    // a pad position's q / k does not enter L_A; a real one does
    auto moved = [&](int64_t pos) {
        const tcd::LayerReps<double> keep = ct.layer(0);
        Tensor<double> q = ct.layer(0).q.contiguous().clone();
        const int64_t Dh = q.size(3), b = pos / Tn, i = pos % Tn;
        for (int64_t d = 0; d < Dh; ++d) q.data()[((b * 2 + 0) * Tn + i) * Dh + d] += 1.0 + double(d);
        ct.layer_mut(0).q = q;
        const auto g = tcd::sample_batch_token_groups(B, Tn, pad, 1, 2, gen);
        const double v = val(tcd::tcd_loss(cs, ct, g, wa, pad).attention);
        ct.layer_mut(0) = keep;
        return v;
    };
    CHECK(moved(1 * Tn + 5) == Approx(batch).epsilon(1e-14));  // sequence 1, token 5: a pad
    CHECK(moved(1 * Tn + 2) != Approx(batch).epsilon(1e-6));    // sequence 1, token 2: real
    // a pad mask of another shape is an error
    const auto g = tcd::sample_batch_token_groups(B, Tn, pad, 1, 2, gen);
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, ct, g, wa, Tensor<uint8_t>::zeros({3, 6})),
                      Contains("pad mask (3, 6) does not fit the batch (3, 7)"));
}

TEST_CASE("hook test: changing only the teacher's trunk / inner / q-k changes only L_T / L_I / L_A", "[tcd]") {
    Generator gen(3);
    nn::BertEncoder<double> s(tiny_config(8, 16), gen, moe_factory<double>(8, 8, 4));
    nn::BertEncoder<double> t(tiny_config(12, 24), gen);
    tcd::RepresentationCapture<double> cs(s), ct(t);
    const auto ids = batch_ids(2, 7, 6);
    s.forward(ids);
    t.forward(ids);
    const auto groups = tcd::sample_batch_token_groups(2, 7, Tensor<uint8_t>(), 3, 6, gen);
    const auto base = tcd::tcd_loss(cs, ct, groups, {});
    auto changed = [&](auto edit) {
        const tcd::LayerReps<double> keep = ct.layer(1);
        edit(ct.layer_mut(1));
        const auto l = tcd::tcd_loss(cs, ct, groups, {});
        ct.layer_mut(1) = keep;
        return std::array<bool, 3>{val(l.trunk) != val(base.trunk), val(l.inner) != val(base.inner),
                                   val(l.attention) != val(base.attention)};
    };
    auto noise = [&](const Tensor<double>& x) { return x + Tensor<double>::randn(x.shape(), gen); };
    CHECK(changed([&](auto& r) { r.ffn_trunk = noise(r.ffn_trunk); }) == std::array<bool, 3>{true, false, false});
    CHECK(changed([&](auto& r) { r.attn_trunk = noise(r.attn_trunk); }) == std::array<bool, 3>{true, false, false});
    CHECK(changed([&](auto& r) { r.ffn_inner = noise(r.ffn_inner); }) == std::array<bool, 3>{false, true, false});
    CHECK(changed([&](auto& r) { r.attn_inner = noise(r.attn_inner); }) == std::array<bool, 3>{false, true, false});
    CHECK(changed([&](auto& r) { r.q = noise(r.q); }) == std::array<bool, 3>{false, false, true});
    CHECK(changed([&](auto& r) { r.k = noise(r.k); }) == std::array<bool, 3>{false, false, true});

    // the same through the real model: the last layer's final LayerNorm feeds nothing else in the
    // encoder, so changing its gain changes only the teacher's last ffn trunk -> only L_T moves
    {
        NoGrad ng;
        auto& ln = *(*t.encoder->layers)[1].final_layer_norm;
        Tensor<double> w = Tensor<double>::randn(ln.weight.shape(), gen);
        moekd::detail::copy_into(ln.weight, w);
    }
    t.forward(ids);
    const auto after = tcd::tcd_loss(cs, ct, groups, {});
    CHECK(val(after.trunk) != val(base.trunk));
    CHECK(val(after.inner) == val(base.inner));
    CHECK(val(after.attention) == val(base.attention));

    // a weight of 0 switches a term off: not computed, absent from the total
    const auto no_a = tcd::tcd_loss(cs, ct, groups, {1.0, 1.0, 0.0});
    CHECK_FALSE(no_a.attention.defined());
    CHECK(val(no_a.total) == Approx(val(after.trunk) + val(after.inner)).epsilon(1e-12));
    const auto none = tcd::tcd_loss(cs, ct, groups, {0.0, 0.0, 0.0});
    CHECK(val(none.total) == 0.0);
}

TEST_CASE("gradcheck (double) of the composed TCD loss w.r.t. the student's parameters", "[tcd][gradcheck]") {
    for (const bool moe : {false, true}) {
        DYNAMIC_SECTION((moe ? "MoE student" : "dense student")) {
            Generator gen(4);
            nn::BertEncoder<double> s(tiny_config(8, 12), gen, moe ? moe_factory<double>(8, 6, 3) : nn::FFNFactory<double>{});
            nn::BertEncoder<double> t(tiny_config(6, 10), gen);
            s.eval(), t.eval();
            tcd::RepresentationCapture<double> cs(s), ct(t);
            // pad the last two tokens of row 1: groups are drawn from the real tokens only
            Tensor<int64_t> ids = batch_ids(2, 5, 7);
            ids.data()[8] = ids.data()[9] = 0;
            const Tensor<uint8_t> pad = nn::padding_mask(ids, 0);
            {
                NoGrad ng;
                t.forward(ids, Tensor<int64_t>(), pad);
            }
            const auto groups = tcd::sample_batch_token_groups(2, 5, pad, 3, 4, gen);
            for (int64_t i = 0; i < groups.numel(); ++i) CHECK(groups.data()[i] != 8);
            for (int64_t i = 0; i < groups.numel(); ++i) CHECK(groups.data()[i] != 9);
            std::vector<Tensor<double>> params;
            for (auto& [name, p] : s.named_parameters())
                if (name.find("cls.") != 0) params.push_back(p);  // the MLM head plays no part in TCD
            auto f = [&](const std::vector<Tensor<double>>&) {
                s.forward(ids, Tensor<int64_t>(), pad);
                return tcd::tcd_loss(cs, ct, groups, {0.7, 1.3, 0.9}, pad).total;
            };
            testing::GradcheckOptions o;
            o.atol = 1e-7, o.rtol = 1e-5;
            const auto res = testing::gradcheck(f, params, o);
            INFO(res.report);
            CHECK(res.ok);
            // not vacuous: the gradient reaches the first layer's attention and, for the MoE, the router
            auto nonzero = [&](const std::string& name) {
                for (auto& [n, p] : s.named_parameters())
                    if (n == name && p.grad().defined())
                        for (double g : p.grad().to_vector())
                            if (g != 0.0) return true;
                return false;
            };
            CHECK(nonzero("encoder.layers.0.self_attn.q_proj.weight"));
            if (moe) CHECK(nonzero("encoder.layers.1.moe.gate.weight"));
            // the teacher gets no gradient
            for (auto& p : t.parameters()) CHECK_FALSE(p.grad().defined());
        }
    }
}

TEST_CASE("bad inputs are clear errors", "[tcd]") {
    Generator gen(5);
    nn::BertEncoder<float> s(tiny_config(8, 16, 2), gen), deep(tiny_config(8, 16, 3), gen);
    nn::BertEncoder<float> heads4(tiny_config(8, 16, 2, 4), gen);
    tcd::RepresentationCapture<float> cs(s), cd(deep), ch(heads4);
    const auto ids = batch_ids(2, 4, 8);
    const auto groups = tcd::sample_batch_token_groups(2, 4, Tensor<uint8_t>(), 2, 3, gen);
    // nothing captured yet
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, ch, groups, {}), Contains("no trunk representation captured"));
    s.forward(ids);
    deep.forward(ids);
    heads4.forward(ids);
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, cd, groups, {}), Contains("student has 2 layers but teacher has 3") &&
                                                             Contains("same depth"));
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, ch, groups, {}), Contains("student has 2 attention heads") &&
                                                             Contains("teacher has 4"));
    CHECK_NOTHROW(tcd::tcd_loss(cs, ch, groups, {1.0, 1.0, 0.0}));  // heads only matter for L_A
    // group size larger than the batch's (real) tokens
    CHECK_THROWS_WITH(tcd::sample_batch_token_groups(2, 4, Tensor<uint8_t>(), 2, 9, gen),
                      Contains("group size 9 is larger than the 8 real tokens in the batch (2 x 4)"));
    Tensor<uint8_t> pad = Tensor<uint8_t>::zeros({2, 4});
    pad.data()[7] = 1;
    CHECK_THROWS_WITH(tcd::sample_batch_token_groups(2, 4, pad, 1, 8, gen),
                      Contains("group size 8 is larger than the 7 real tokens"));
    CHECK_THROWS_WITH(tcd::sample_batch_token_groups(2, 4, Tensor<uint8_t>::zeros({2, 5}), 1, 2, gen),
                      Contains("pad mask (2, 5) does not fit the batch (2, 4)"));
    // student and teacher fed batches of different shapes
    nn::BertEncoder<float> t2(tiny_config(8, 16, 2), gen);
    tcd::RepresentationCapture<float> c2(t2);
    t2.forward(batch_ids(3, 4, 9));
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, c2, groups, {}), Contains("batches of different shapes"));
    // token positions outside the batch, negative weights, bad group tensor
    const Tensor<int64_t> far = Tensor<int64_t>::from_vector({0, 1, 8}, {1, 3});
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, cs, far, {}), Contains("token position 8 is outside the batch's 8 tokens"));
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, cs, groups, {-1.0, 1.0, 1.0}), Contains("must be >= 0"));
    CHECK_THROWS_WITH(tcd::tcd_loss(cs, cs, Tensor<int64_t>::zeros({6}), {}), Contains("token groups must be (G, N)"));
}
