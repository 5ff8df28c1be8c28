// model_test.cpp — the translation example's model and training rule (moekd/methods/tsjt.hpp as
// this example wires it), without a tokenizer: the shared architecture's parameter identity (a shared layer is one object reached
// from both models and gets both models' gradients in one step), the MoE placement, batching,
// the joint TSJT loss and its detach rule, the stage switch (fixed and automatic t_sep, and its
// checkpoint state), greedy/beam decoding, and submodel extraction round trips.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <moekd/optim/optimizers.hpp>

#include "decode.hpp"
#include "submodel.hpp"
#include "train.hpp"

using namespace tsjt;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny(int64_t experts = 4) {
    ModelConfig c;
    c.vocab = 40;
    c.d_model = 16;
    c.heads = 2;
    c.ffn_dim = 32;
    c.enc_layers = c.dec_layers = 4;
    c.experts = experts;
    c.dropout = 0.0;
    return c;
}

std::vector<Example> toy_examples(int n, Generator& gen) {
    std::vector<Example> ex;
    for (int i = 0; i < n; ++i) {
        Example e;
        const int len = 2 + int(gen.randint(0, 6));
        e.src.push_back(4);  // a "tag"
        for (int j = 0; j < len; ++j) e.src.push_back(5 + int(gen.randint(0, 30)));
        e.src.push_back(kEos);
        for (size_t j = 1; j + 1 < e.src.size(); ++j) e.tgt.push_back(e.src[e.src.size() - 1 - j]);  // reversed
        e.tgt.push_back(kEos);
        ex.push_back(e);
    }
    return ex;
}

const void* ptr(const Tensor<F>& t) { return t.data(); }

}  // namespace

TEST_CASE("MoE layers sit in every other layer", "[tsjt]") {
    Generator gen(1);
    const ModelConfig c = tiny();
    auto m = make_model(c, gen);
    const Sub s = Sub::of(*m, c.pad);
    CHECK(s.enc_moe == 2);
    CHECK(s.dec_moe == 2);
    for (int64_t i = 0; i < c.enc_layers; ++i) {
        const bool moe_i = dynamic_cast<moe::MoELayer<F>*>((*m->encoder->layers)[i].ffn.get()) != nullptr;
        CHECK(moe_i == (i % 2 == 1));
    }
    auto d = make_model(tiny(0), gen);
    CHECK_FALSE(Sub::of(*d, 0).is_moe());
}

TEST_CASE("shared architecture: shared layers are the same objects and tensors", "[tsjt]") {
    Generator gen(2);
    const ModelConfig c = tiny();
    auto m = make_model(c, gen);
    SharedDense d(*m, c, 4, 4, gen);
    for (int64_t i = 0; i < 4; ++i) {
        const bool shared = i % 2 == 0;
        CHECK((d.encoder->layers->ptr(i) == m->encoder->layers->ptr(i)) == shared);
        CHECK((d.decoder->layers->ptr(i) == m->decoder->layers->ptr(i)) == shared);
        CHECK((ptr((*d.encoder->layers)[i].self_attn->q_proj->weight) == ptr((*m->encoder->layers)[i].self_attn->q_proj->weight)) == shared);
        CHECK(dynamic_cast<moe::MoELayer<F>*>((*d.encoder->layers)[i].ffn.get()) == nullptr);
    }
    CHECK(d.encoder->embed_tokens == m->encoder->embed_tokens);
    CHECK(ptr(d.decoder->output_projection->weight) == ptr(m->encoder->embed_tokens->weight));
    // distinct parameters of the pair = MoE model's + dense model's own
    const auto all = unique_parameters({m.get(), &d});
    int64_t own = 0;
    for (const auto& p : d.parameters()) {
        bool in_moe = false;
        for (const auto& q : m->parameters()) in_moe = in_moe || ptr(p) == ptr(q);
        if (!in_moe) own += p.numel();
    }
    CHECK(count_elements(all) == m->num_parameters() + own);
    CHECK(own > 0);
    // a deeper dense model: layers beyond the MoE model's depth are its own
    SharedDense deep(*m, c, 6, 6, gen);
    CHECK(deep.encoder->layers->ptr(4) != nullptr);
    CHECK(SharedDense::shares(4, 4, c) == false);
    CHECK_THROWS_WITH(SharedDense(*m, c, 0, 2, gen), Catch::Contains("at least one encoder"));
}

TEST_CASE("one combined step updates shared layers from both models", "[tsjt]") {
    Generator gen(3);
    const ModelConfig c = tiny();
    auto m = make_model(c, gen);
    auto d = std::make_shared<SharedDense>(*m, c, 4, 4, gen);
    const Sub a = Sub::of(*m, 0), b = Sub::of(*d, 0);
    std::vector<Example> ex = toy_examples(8, gen);
    std::vector<int64_t> idx(8);
    for (int i = 0; i < 8; ++i) idx[i] = i;
    const Batch batch = make_batch(ex, idx);
    const Tensor<F> shared_w = (*m->encoder->layers)[0].self_attn->q_proj->weight;
    // the shared layer's gradient with both CE terms = grad(CE_moe) + grad(CE_dense)
    auto grad_of = [&](bool moe_term, bool dense_term) {
        m->zero_grad();
        d->zero_grad();
        Tensor<F> loss = Tensor<F>::scalar(0.0f);
        if (moe_term) loss = loss + cross_entropy(a.forward(batch.src, batch.prev), batch.tgt, int64_t(0));
        if (dense_term) loss = loss + cross_entropy(b.forward(batch.src, batch.prev), batch.tgt, int64_t(0));
        loss.backward();
        return shared_w.grad().contiguous().to_vector();
    };
    const auto g_both = grad_of(true, true), g_a = grad_of(true, false), g_b = grad_of(false, true);
    double max_diff = 0, norm_b = 0;
    for (size_t i = 0; i < g_both.size(); ++i) {
        max_diff = std::max(max_diff, double(std::abs(g_both[i] - g_a[i] - g_b[i])));
        norm_b += double(g_b[i]) * g_b[i];
    }
    CHECK(max_diff < 1e-5);
    CHECK(norm_b > 0);  // the dense model's loss reaches the shared layer
}

TEST_CASE("joint loss: KL terms and their detach rule", "[tsjt]") {
    Generator gen(4);
    const ModelConfig c = tiny();
    auto m = make_model(c, gen);
    auto d = make_model(tiny(0), gen);
    const Sub a = Sub::of(*m, 0), b = Sub::of(*d, 0);
    std::vector<Example> ex = toy_examples(6, gen);
    const Batch batch = make_batch(ex, {0, 1, 2, 3, 4, 5});
    const JointLoss with = joint_loss(a, b, batch, true, 5.0, 10.0, 0.1);
    const JointLoss without = joint_loss(a, b, batch, false, 5.0, 10.0, 0.1);
    CHECK(with.kl > 0);
    CHECK(with.kl == Approx(without.kl).epsilon(1e-5));
    CHECK(with.total.item() == Approx(with.ce_moe + with.ce_dense + with.aux + 15.0 * with.kl).epsilon(1e-4));
    CHECK(without.total.item() == Approx(without.ce_moe + without.ce_dense + without.aux).epsilon(1e-4));
    CHECK(with.aux > 0);  // the MoE model's balance loss is in
    // gradient of the KL part alone on the dense model = alpha_dense * d KL / d dense
    m->zero_grad();
    d->zero_grad();
    const Tensor<F> la = a.forward(batch.src, batch.prev), lb = b.forward(batch.src, batch.prev);
    (symmetric_kl(la, lb, batch.tgt_pad, true, false) * 10.0f).backward();
    const Tensor<F> wd = d->encoder->embed_tokens->weight;
    const Tensor<F> wm = m->encoder->embed_tokens->weight;
    CHECK_FALSE(wm.grad().defined());  // detached side gets nothing
    REQUIRE(wd.grad().defined());
}

TEST_CASE("batches: layout, padding and token budget", "[tsjt]") {
    Generator gen(5);
    std::vector<Example> ex = toy_examples(50, gen);
    const Batch b = make_batch(ex, {3, 7});
    const Example& e = ex[3];
    CHECK(b.src.data()[0] == e.src[0]);
    CHECK(b.prev.data()[0] == kBos);
    const int64_t T = b.tgt.size(1);
    for (size_t j = 0; j < e.tgt.size(); ++j) {
        CHECK(b.tgt.data()[j] == e.tgt[j]);
        CHECK(b.tgt_pad.data()[j] == 0);
        if (j > 0) CHECK(b.prev.data()[j] == e.tgt[j - 1]);
    }
    for (int64_t j = int64_t(e.tgt.size()); j < T; ++j) CHECK(b.tgt_pad.data()[j] == 1);
    const auto batches = token_batches(ex, 40);
    size_t total = 0;
    for (const auto& bb : batches) {
        size_t longest = 0;
        for (int64_t i : bb) longest = std::max({longest, ex[i].src.size(), ex[i].tgt.size()});
        CHECK((longest * bb.size() <= 40 || bb.size() == 1));
        total += bb.size();
    }
    CHECK(total == ex.size());
    CHECK_THROWS_WITH(make_batch(ex, {}), Catch::Contains("empty batch"));
}

TEST_CASE("stage controller: fixed threshold, automatic plateau rule, single/constjt", "[tsjt]") {
    StageController fixed(Mode::tsjt, 0.5, 3, 0);
    int64_t step = 0;
    for (double kl : {2.0, 1.5, 1.0, 0.8, 0.6}) CHECK_FALSE(fixed.observe(++step, kl));  // window means > 0.5
    CHECK(fixed.use_kl());
    CHECK(fixed.observe(++step, 0.1));  // mean(0.8, 0.6, 0.1) = 0.5
    CHECK(fixed.stage() == 2);
    CHECK(fixed.switch_step() == 6);
    CHECK_FALSE(fixed.use_kl());

    StageController const_jt(Mode::constjt, 0.5, 1, 0);
    for (int i = 1; i < 50; ++i) CHECK_FALSE(const_jt.observe(i, 0.0));
    CHECK(const_jt.use_kl());
    StageController single(Mode::single, 0.5, 1, 0);
    CHECK_FALSE(single.use_kl());

    // auto: KL falling fast, then flat -> switches after `patience` flat windows, not before
    StageController a(Mode::tsjt, -1, 5, 10, 0.05, 2);
    std::vector<double> kl;
    for (int i = 0; i < 40; ++i) kl.push_back(2.0 * std::exp(-i / 8.0) + 0.3);
    for (int i = 0; i < 200; ++i) kl.push_back(0.3 + 0.001 * ((i * 7) % 3));
    int64_t switched = -1;
    for (size_t i = 0; i < kl.size() && switched < 0; ++i)
        if (a.observe(int64_t(i + 1), kl[i])) switched = int64_t(i + 1);
    REQUIRE(switched > 0);
    CHECK(switched > 40);          // not while the KL is still falling fast
    CHECK(switched < 40 + 5 * 6);  // within a few windows of the plateau
    CHECK(a.t_sep() == Approx(0.3).margin(0.05));
    // never before min_steps
    StageController late(Mode::tsjt, -1, 2, 100, 0.05, 1);
    for (int i = 1; i < 100; ++i) CHECK_FALSE(late.observe(i, 1.0));

    // state round trip
    StageController s1(Mode::tsjt, -1, 4, 0), s2(Mode::tsjt, -1, 4, 0);
    for (int i = 1; i <= 9; ++i) s1.observe(i, 1.0 / i);
    std::map<std::string, std::string> saved;
    for (auto& [k, v] : s1.save()) saved["stage." + k] = v;
    s2.load(saved);
    for (int i = 10; i <= 60; ++i) CHECK(s1.observe(i, 0.1) == s2.observe(i, 0.1));
    CHECK(s1.switch_step() == s2.switch_step());
    CHECK_THROWS_WITH(StageController(Mode::tsjt, 1, 0, 0), Catch::Contains("KL window must be >= 1"));
    CHECK_THROWS_WITH(s2.load({}), Catch::Contains("stage state"));
}

TEST_CASE("decoding: greedy equals beam 1 and stops at eos, a trained copy task decodes", "[tsjt]") {
    Generator gen(6);
    ModelConfig c = tiny(0);
    c.enc_layers = c.dec_layers = 1;
    c.d_model = 32;
    c.ffn_dim = 64;
    auto m = make_model(c, gen);
    const Sub s = Sub::of(*m, 0);
    std::vector<Example> ex = toy_examples(64, gen);
    // a few hundred steps on the reverse task
    optim::Adam<F> opt({optim::ParamGroup<F>{m->parameters(), 3e-3, 0.0}}, 0.9, 0.98);
    const auto batches = token_batches(ex, 128);
    for (int it = 0; it < 300; ++it) {
        const Batch b = make_batch(ex, batches[it % batches.size()]);
        m->zero_grad();
        cross_entropy(s.forward(b.src, b.prev), b.tgt, int64_t(0)).backward();
        opt.step();
    }
    m->train(false);
    std::vector<std::vector<int32_t>> srcs;
    for (int i = 0; i < 16; ++i) srcs.push_back(ex[i].src);
    const auto greedy = greedy_decode(s, srcs, 5);
    int exact = 0;
    for (int i = 0; i < 16; ++i) {
        std::vector<int> want(ex[i].tgt.begin(), ex[i].tgt.end() - 1);
        exact += greedy[i] == want;
        CHECK(beam_decode_one(s, srcs[i], 1, 1.0) == greedy[i]);
        CHECK(std::find(greedy[i].begin(), greedy[i].end(), kEos) == greedy[i].end());
    }
    CHECK(exact >= 8);  // learned (most of) the reversal
    // beam 4 finds a hypothesis at least as likely (length-normalised) as greedy: just sane output
    for (int i = 0; i < 4; ++i) CHECK(beam_decode_one(s, srcs[i], 4, 1.0).size() <= size_t(max_output_len(srcs[i].size(), 128)));
}

TEST_CASE("extraction: a standalone submodel translates like the one inside the pair", "[tsjt]") {
    Generator gen(7);
    const ModelConfig c = tiny();
    auto m = make_model(c, gen);
    auto d = std::make_shared<SharedDense>(*m, c, 4, 4, gen);
    m->train(false);
    d->train(false);
    const fs::path dir = fs::temp_directory_path() / ("moekd_tsjt_test_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string spm = (dir / "fake.model").string();
    std::ofstream(spm) << "x";
    save_submodel((dir / "dense").string(), *d, d->config(), spm);
    save_submodel((dir / "moe").string(), *m, c, spm);
    const LoadedSubmodel ld = load_submodel((dir / "dense").string());
    const LoadedSubmodel lm = load_submodel((dir / "moe").string());
    CHECK(ld.config.experts == 0);
    CHECK(lm.config.experts == 4);
    std::vector<Example> ex = toy_examples(6, gen);
    std::vector<std::vector<int32_t>> srcs;
    for (const auto& e : ex) srcs.push_back(e.src);
    CHECK(greedy_decode(Sub::of(*ld.model, 0), srcs) == greedy_decode(Sub::of(*d, 0), srcs));
    CHECK(greedy_decode(Sub::of(*lm.model, 0), srcs) == greedy_decode(Sub::of(*m, 0), srcs));
    const Batch b = make_batch(ex, {0, 1, 2});
    const auto x = Sub::of(*ld.model, 0).forward(b.src, b.prev).contiguous().to_vector();
    const auto y = Sub::of(*d, 0).forward(b.src, b.prev).contiguous().to_vector();
    CHECK(x == y);
    // another architecture in the file: clear error
    fs::copy_file(dir / "moe" / "model.safetensors", dir / "dense" / "model.safetensors", fs::copy_options::overwrite_existing);
    auto meta = config_metadata(d->config());
    auto tensors = io::load_safetensors<F>((dir / "moe" / "model.safetensors").string());
    io::write_safetensors<F>((dir / "dense" / "model.safetensors").string(), tensors, meta);
    CHECK_THROWS_WITH(load_submodel((dir / "dense").string()), Catch::Contains("does not fit the architecture"));
    io::write_safetensors<F>((dir / "dense" / "model.safetensors").string(), tensors, {});
    CHECK_THROWS_WITH(load_submodel((dir / "dense").string()), Catch::Contains("not a tsjt_wmt submodel"));
    CHECK_THROWS_WITH(load_submodel((dir / "none").string()), Catch::Contains("no model file"));
    fs::remove_all(dir);
}
