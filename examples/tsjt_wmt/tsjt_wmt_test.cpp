// tsjt_wmt_test.cpp — unit tests of the translation example's evaluation path (no tokenizer):
//   * dropless evaluation (model.hpp, the default): a sentence decodes to the same tokens alone
//     and inside a batch; with the old eval capacity (factor 2 or less) the batch changes what a
//     sentence's MoE layers compute (the negative control: the test can fail);
//   * beam search encodes the source once: the same hypotheses as re-running the encoder at
//     every step (the old path), for the MoE and the dense model;
//   * the figures read back the run log (figures.hpp) and mark the stage switch;
//   * a model with NaN weights: decoding throws NonFiniteLogits (not empty translations) and
//     loading the saved submodel fails naming its file and tensor;
//   * the submodel's files are written with every write checked (an injected ENOSPC names
//     config.json / spm.model);
//   * --train-pairs: the languages' shares are proportional to their corpora and add up.
// The model, training rule and extraction tests are in model_test.cpp.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unistd.h>

#include <moekd/optim/optimizers.hpp>

#include <moekd/io/atomic_file.hpp>

#include "data.hpp"
#include "decode.hpp"
#include "figures.hpp"
#include "submodel.hpp"

using namespace tsjt;

namespace {

constexpr int kTrainSteps = 150;

ModelConfig tiny_moe() {
    ModelConfig c;
    c.vocab = 40;
    c.d_model = 16;
    c.heads = 2;
    c.ffn_dim = 32;
    c.enc_layers = c.dec_layers = 2;
    c.experts = 4;
    c.dropout = 0.0;
    return c;
}

std::vector<std::vector<int32_t>> toy_sources(int n, Generator& gen) {
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < n; ++i) {
        std::vector<int32_t> s{4};
        const int len = 2 + int(gen.randint(0, 9));
        for (int j = 0; j < len; ++j) s.push_back(5 + int(gen.randint(0, 34)));
        s.push_back(kEos);
        out.push_back(s);
    }
    return out;
}

/// A model of config c with the weights of seed 11 (eval_dropless does not change the draws),
/// trained `steps` Adam steps on reversing the toy sources (so that decoding has close calls).
std::shared_ptr<nn::EncoderDecoder<F>> model_of(const ModelConfig& c, int steps = 0) {
    Generator gen(11);
    auto m = make_model(c, gen);
    if (steps > 0) {
        Generator data(12);
        std::vector<Example> ex;
        for (const auto& s : toy_sources(64, data)) {
            Example e;
            e.src = s;
            for (size_t j = s.size() - 2; j >= 1; --j) e.tgt.push_back(s[j]);
            e.tgt.push_back(kEos);
            ex.push_back(e);
        }
        const Sub sub = Sub::of(*m, 0);
        optim::Adam<F> opt({optim::ParamGroup<F>{m->parameters(), 3e-3, 0.0}}, 0.9, 0.98);
        const auto batches = token_batches(ex, 160);
        for (int it = 0; it < steps; ++it) {
            const Batch b = make_batch(ex, batches[it % batches.size()]);
            m->zero_grad();
            cross_entropy(sub.forward(b.src, b.prev), b.tgt, int64_t(0)).backward();  // no balance loss: uneven routing
            opt.step();
        }
    }
    m->train(false);
    return m;
}

/// Logits (V) of the first decoder step for source i, decoded in a batch of all sources.
std::vector<F> first_step_logits(const Sub& s, const std::vector<std::vector<int32_t>>& srcs, size_t i, bool alone) {
    NoGrad ng;
    const size_t from = alone ? i : 0, n = alone ? 1 : srcs.size();
    const Tensor<int64_t> src = pad_sources(srcs, from, n, s.pad);
    const Tensor<int64_t> prev = Tensor<int64_t>::full({int64_t(n), 1}, kBos);
    const Tensor<F> logits = s.decode_last(prev, s.encode(src)).contiguous();  // (n, V)
    const int64_t V = logits.size(1), row = alone ? 0 : int64_t(i);
    return std::vector<F>(logits.data() + row * V, logits.data() + (row + 1) * V);
}

float max_abs_diff(const std::vector<F>& a, const std::vector<F>& b) {
    float d = 0;
    for (size_t k = 0; k < a.size(); ++k) d = std::max(d, std::abs(a[k] - b[k]));
    return d;
}

}  // namespace

TEST_CASE("dropless evaluation: a sentence decodes the same alone and inside a batch", "[tsjt][eval]") {
    Generator gen(3);
    const auto srcs = toy_sources(24, gen);
    ModelConfig c = tiny_moe();
    REQUIRE(c.eval_dropless);  // the default
    auto m = model_of(c, kTrainSteps);
    const Sub s = Sub::of(*m, 0);
    REQUIRE(s.is_moe());
    const auto batched = greedy_decode(s, srcs, 32);
    int nonempty = 0;
    for (size_t i = 0; i < srcs.size(); ++i) {
        const auto alone = greedy_decode(s, {srcs[i]}, 1);
        CHECK(alone[0] == batched[i]);
        nonempty += !batched[i].empty();
        // the first step's logits agree too (to rounding: the padded batch sums in another order)
        CHECK(max_abs_diff(first_step_logits(s, srcs, i, true), first_step_logits(s, srcs, i, false)) < 1e-5f);
    }
    CHECK(nonempty > 12);  // the comparison is not between empty outputs

    // negative control: the old eval capacity (here factor 0.5, i.e. tokens are dropped as soon
    // as routing is uneven) makes a sentence's logits depend on its batch
    ModelConfig capped = tiny_moe();
    capped.eval_dropless = false;
    capped.eval_capacity_factor = 0.5;
    auto mc = model_of(capped, kTrainSteps);
    const Sub sc = Sub::of(*mc, 0);
    float worst = 0;
    for (size_t i = 0; i < srcs.size(); ++i)
        worst = std::max(worst, max_abs_diff(first_step_logits(sc, srcs, i, true), first_step_logits(sc, srcs, i, false)));
    CHECK(worst > 1e-3f);
    const auto batched_capped = greedy_decode(sc, srcs, 32);
    int differ = 0;
    for (size_t i = 0; i < srcs.size(); ++i) differ += greedy_decode(sc, {srcs[i]}, 1)[0] != batched_capped[i];
    CHECK(differ > 0);
    UNSCOPED_INFO("capped eval capacity: " << differ << " of " << srcs.size() << " sentences decode differently alone");
}

TEST_CASE("beam search encodes the source once: same hypotheses as re-encoding every step", "[tsjt][eval]") {
    Generator gen(5);
    const auto srcs = toy_sources(10, gen);
    for (int64_t experts : {4, 0}) {
        ModelConfig c = tiny_moe();
        c.experts = experts;
        auto m = model_of(c);
        const Sub s = Sub::of(*m, 0);
        for (const auto& src : srcs)
            for (int beam : {1, 3}) {
                const auto once = beam_decode_one(s, src, beam, 1.0, 128, /*reencode=*/false);
                const auto every = beam_decode_one(s, src, beam, 1.0, 128, /*reencode=*/true);
                CHECK(once == every);
            }
        CHECK_THROWS_WITH(beam_decode_one(s, srcs[0], 0, 1.0), Catch::Contains("beam size must be >= 1, got 0"));
    }
}

TEST_CASE("figures: the log is read back and the stage switch is marked", "[tsjt][figures]") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("tsjt_fig_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        std::ofstream f(dir / "log.jsonl");
        f << "{\"mode\": \"tsjt\", \"step\": 10, \"ce_moe\": 6.5, \"ce_dense\": 6.6, \"kl\": 0.5, \"ce_moe_avg\": 7, "
             "\"ce_dense_avg\": 7.1, \"kl_avg\": 0.4}\n"
          << "{\"mode\": \"tsjt\", \"step\": 20, \"ce_moe\": 5.5, \"ce_dense\": 5.6, \"kl\": 0.3}\n";
    }
    const Curve c = read_curve((dir / "log.jsonl").string(), "tsjt", 20);
    CHECK(c.step == std::vector<double>{10, 20});
    CHECK(c.ce_moe == std::vector<double>{7, 5.5});  // the interval mean when logged, else the value
    CHECK(c.kl == std::vector<double>{0.4, 0.3});
    const auto paths = write_figures(dir.string(), {c}, false);
    REQUIRE(paths.size() == 3);
    std::ifstream k(paths[2]);
    const std::string svg((std::istreambuf_iterator<char>(k)), std::istreambuf_iterator<char>());
    CHECK(svg.find("TSJT stage 2 (20)") != std::string::npos);
    CHECK(svg.find("<polyline") != std::string::npos);
    {
        std::ofstream f(dir / "bad.jsonl");
        f << "{\"step\": 1, \"ce_moe\": 1, \"ce_dense\": 1, \"kl\": 1}\n{\"step\": 2, \"ce_\n";
    }
    CHECK_THROWS_WITH(read_curve((dir / "bad.jsonl").string(), "tsjt", -1), Catch::Contains("bad.jsonl' line 2 is not JSON"));
    fs::remove_all(dir);
}

TEST_CASE("a model with NaN weights: decoding and loading fail, naming the model", "[tsjt][eval][hardening]") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("tsjt_nan_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    { std::ofstream(dir / "spm.model") << "not a real tokenizer"; }
    Generator gen(7);
    const auto srcs = toy_sources(4, gen);
    for (int64_t experts : {4, 0}) {
        ModelConfig c = tiny_moe();
        c.experts = experts;
        auto m = model_of(c);
        for (auto& p : m->parameters()) std::fill(p.data(), p.data() + p.numel(), std::numeric_limits<F>::quiet_NaN());
        const Sub s = Sub::of(*m, 0);
        if (experts > 0) {  // the MoE layer's router check comes first
            CHECK_THROWS_WITH(greedy_decode(s, srcs), Catch::Contains("router logits are not finite"));
            CHECK_THROWS_WITH(beam_decode_one(s, srcs[0], 3, 1.0), Catch::Contains("router logits are not finite"));
        } else {
            CHECK_THROWS_AS(greedy_decode(s, srcs), NonFiniteLogits);
            CHECK_THROWS_AS(beam_decode_one(s, srcs[0], 3, 1.0), NonFiniteLogits);
        }
        const std::string sub = (dir / ("m" + std::to_string(experts))).string();
        save_submodel(sub, *m, c, (dir / "spm.model").string());
        CHECK_THROWS_WITH(load_submodel(sub), Catch::Contains(sub + "/model.safetensors' is broken") &&
                                                  Catch::Contains("non-finite value"));
    }
    fs::remove_all(dir);
}

TEST_CASE("submodel files: every write is checked", "[tsjt][hardening]") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("tsjt_wfault_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    { std::ofstream(dir / "spm.model") << std::string(5000, 's'); }
    const ModelConfig c = tiny_moe();
    auto m = model_of(c);
    const std::string sub = (dir / "sub").string();
    save_submodel(sub, *m, c, (dir / "spm.model").string());
    const auto model_bytes = (long long)fs::file_size(fs::path(sub) / "model.safetensors");
    const auto config_bytes = (long long)fs::file_size(fs::path(sub) / "config.json");
    // a disk that fills up after model.safetensors (then after config.json): the next file's
    // write fails with an error naming it (std::ofstream used to lose it silently)
    io::detail::write_fault() = model_bytes + 5;
    CHECK_THROWS_WITH(save_submodel(sub, *m, c, (dir / "spm.model").string()),
                      Catch::Contains("config.json' failed") && Catch::Contains("No space left"));
    io::detail::write_fault() = model_bytes + config_bytes + 100;
    CHECK_THROWS_WITH(save_submodel(sub, *m, c, (dir / "spm.model").string()),
                      Catch::Contains("spm.model' failed") && Catch::Contains("No space left"));
    io::detail::write_fault() = -1;
    CHECK(fs::file_size(fs::path(sub) / "spm.model") == 5000);  // the previous file is intact
    fs::remove_all(dir);
}

TEST_CASE("--train-pairs: shares proportional to the corpora, adding up to the budget", "[tsjt][data]") {
    // the default corpus's sizes (fr, fi, hi)
    const std::vector<size_t> sizes{91030, 31724, 12324};
    const std::vector<size_t> n = proportional_counts(sizes, 16000);
    CHECK(n[0] + n[1] + n[2] == 16000);
    const double sum = 91030.0 + 31724.0 + 12324.0;
    for (size_t i = 0; i < 3; ++i) CHECK(std::abs(double(n[i]) - 16000.0 * double(sizes[i]) / sum) < 1.0);
    CHECK(n[0] > n[1]);
    CHECK(n[1] > n[2]);
    // largest remainder, ties to the earlier language
    CHECK(proportional_counts({1, 1, 1}, 2) == std::vector<size_t>{1, 1, 0});
    CHECK(proportional_counts({5, 5, 5}, 10) == std::vector<size_t>{4, 3, 3});
    // no budget, or a budget over the corpus: everything
    CHECK(proportional_counts(sizes, 0) == sizes);
    CHECK(proportional_counts(sizes, 200000) == sizes);
    // never more than a language has
    const std::vector<size_t> m = proportional_counts({1000, 1}, 1000);
    CHECK(m[0] + m[1] == 1000);
    CHECK(m[1] <= 1);
}
