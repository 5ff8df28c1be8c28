// nn_decode_test.cpp — incremental (key/value-cached) decoding of nn/decode.hpp against the
// full-prefix reference: on small random nn::EncoderDecoder models (dense post-LN, dense pre-LN,
// and an MoE decoder layer with dropless eval capacity), each cached step's logits equal the
// last position of the full decoder forward to 1e-5 (padding tokens in the prefix included), and
// cached greedy and beam search give the reference's outputs token for token on sentences of
// different lengths, batched and alone (rows ending at eos, at their limit, emitting padding).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <moekd/moe/moe_layer.hpp>
#include <moekd/nn.hpp>
#include <moekd/nn/decode.hpp>

using namespace moekd;
using Catch::Contains;

namespace {

constexpr int64_t kV = 48, kPad = 1, kBos = 0;

enum class Kind { Dense, PreNorm, MoE };

std::shared_ptr<nn::EncoderDecoder<float>> make_model(Kind kind, uint64_t seed) {
    Generator gen(seed);
    nn::EncoderDecoderConfig c;
    c.src_vocab = c.tgt_vocab = kV;
    c.padding_idx = kPad;
    c.share_embeddings = true;
    c.tie_output = false;  // an own output projection: a random tied one mostly repeats the input token
    c.layer.d_model = 32;
    c.layer.num_heads = 4;
    c.layer.ffn_dim = 64;
    c.layer.pre_norm = kind == Kind::PreNorm;
    c.encoder_layers = 2;
    c.decoder_layers = 2;
    nn::FFNFactory<float> dec_ffn;
    if (kind == Kind::MoE)  // layer 1 of the decoder is a top-1 MoE of 4 experts, dropless at eval
        dec_ffn = [](int64_t i, Generator& g) -> std::shared_ptr<nn::FFNBase<float>> {
            if (i != 1) return nullptr;
            moe::MoEConfig m;
            m.d_model = 32;
            m.ffn_dim = 64;
            m.router.num_experts = 4;
            m.router.top_k = 1;
            m.router.capacity_factor_eval = 4.0;  // = E: nothing dropped
            return std::make_shared<moe::MoELayer<float>>(m, g);
        };
    auto m = std::make_shared<nn::EncoderDecoder<float>>(c, gen, nn::FFNFactory<float>{}, dec_ffn);
    m->eval();
    return m;
}

/// Source sentences of lengths 2 .. 9, ids in [3, V).
std::vector<std::vector<int64_t>> sources(uint64_t seed) {
    Generator g(seed);
    std::vector<std::vector<int64_t>> s;
    for (int64_t len : {5, 2, 9, 4, 7, 3}) {
        std::vector<int64_t> v;
        for (int64_t j = 0; j < len; ++j) v.push_back(3 + int64_t(g.next_u64() % uint64_t(kV - 3)));
        s.push_back(v);
    }
    return s;
}

struct Enc {
    Tensor<float> enc;
    Tensor<uint8_t> mask;
};
Enc encode(const nn::EncoderDecoder<float>& m, const std::vector<std::vector<int64_t>>& srcs) {
    NoGrad ng;
    size_t S = 1;
    for (auto& s : srcs) S = std::max(S, s.size());
    Tensor<int64_t> t = Tensor<int64_t>::full({int64_t(srcs.size()), int64_t(S)}, kPad);
    for (size_t i = 0; i < srcs.size(); ++i) std::copy(srcs[i].begin(), srcs[i].end(), t.data() + i * S);
    return {m.encoder->forward_tokens(t), nn::padding_mask(t, kPad)};
}

std::vector<int64_t> limits(const std::vector<std::vector<int64_t>>& srcs, int64_t extra) {
    std::vector<int64_t> l;
    for (auto& s : srcs) l.push_back(int64_t(s.size()) + extra);
    return l;
}

/// An eos that the model really emits: the 4th greedy token of sentence 0 (so rows end at
/// different steps rather than all at their limit).
int64_t pick_eos(const nn::EncoderDecoder<float>& m, const std::vector<std::vector<int64_t>>& srcs) {
    const Enc e = encode(m, {srcs[0]});
    const auto out = nn::greedy_decode_reference(*m.decoder, e.enc, e.mask, {12}, nn::DecodeTokens{kBos, -1});
    for (size_t j = 3; j < out[0].size(); ++j)  // the first token that is new at position >= 3
        if (std::find(out[0].begin(), out[0].begin() + int64_t(j), out[0][j]) == out[0].begin() + int64_t(j)) return out[0][j];
    return out[0].back();
}

const char* kind_name(Kind k) { return k == Kind::Dense ? "dense" : k == Kind::PreNorm ? "pre-LN" : "moe"; }

}  // namespace

TEST_CASE("decode: each cached step's logits equal the full-prefix forward's last position", "[nn][decode]") {
    for (Kind kind : {Kind::Dense, Kind::PreNorm, Kind::MoE}) {
        INFO(kind_name(kind));
        auto m = make_model(kind, 11);
        const auto srcs = sources(5);
        const Enc e = encode(*m, srcs);
        NoGrad ng;
        const int64_t B = int64_t(srcs.size()), T = 10;
        Generator g(3);
        Tensor<int64_t> prefix = Tensor<int64_t>::empty({B, T});
        for (int64_t i = 0; i < B * T; ++i) {  // bos, then random tokens, one in 6 of them padding
            const uint64_t r = g.next_u64();
            prefix.data()[i] = i % T == 0 ? kBos : r % 6 == 0 ? kPad : 3 + int64_t((r / 6) % (kV - 3));
        }
        // capacity 4 < T: the self-attention caches must grow on the way
        nn::DecoderCache<float> cache = m->decoder->make_cache(e.enc, e.mask, 4);
        double worst = 0;
        for (int64_t t = 0; t < T; ++t) {
            const Tensor<int64_t> step = prefix.narrow(1, t, 1).contiguous();
            const Tensor<float> got = m->decoder->forward_step(step, cache).contiguous();  // (B, V)
            const Tensor<float> want =
                nn::decode_last_full(*m->decoder, prefix.narrow(1, 0, t + 1).contiguous(), e.enc, e.mask).contiguous();
            REQUIRE(got.shape() == want.shape());
            for (int64_t i = 0; i < got.numel(); ++i)
                worst = std::max(worst, double(std::abs(got.data()[i] - want.data()[i])));
        }
        INFO("worst |cached - full| over " << T << " steps: " << worst);
        CHECK(worst < 1e-5);
    }
}

TEST_CASE("decode: cached greedy equals the full-prefix reference batched and alone", "[nn][decode]") {
    // what the cases must exercise: rows that stop at eos, rows that run to their limit, and a
    // padding token emitted and fed back (the full forward masks it as padding; so must the cache)
    size_t at_eos = 0, at_limit = 0, with_pad = 0;
    for (Kind kind : {Kind::Dense, Kind::PreNorm, Kind::MoE}) {
        for (uint64_t seed : {1u, 2u}) {
            INFO(kind_name(kind) << " seed " << seed);
            auto m = make_model(kind, seed);
            const auto srcs = sources(seed + 10);
            const nn::DecodeTokens tok{kBos, pick_eos(*m, srcs)};
            const auto lim = limits(srcs, 3);
            const Enc e = encode(*m, srcs);
            const auto ref = nn::greedy_decode_reference(*m->decoder, e.enc, e.mask, lim, tok);
            const auto got = nn::greedy_decode(*m->decoder, e.enc, e.mask, lim, tok);
            CHECK(got == ref);
            for (size_t i = 0; i < srcs.size(); ++i) {
                INFO("sentence " << i);
                const Enc e1 = encode(*m, {srcs[i]});
                const auto ref1 = nn::greedy_decode_reference(*m->decoder, e1.enc, e1.mask, {lim[i]}, tok);
                const auto got1 = nn::greedy_decode(*m->decoder, e1.enc, e1.mask, {lim[i]}, tok);
                CHECK(got1 == ref1);
                CHECK(got1[0] == got[i]);
                (int64_t(got[i].size()) < lim[i] ? at_eos : at_limit) += 1;
                with_pad += std::count(got[i].begin(), got[i].end(), kPad) > 0;
            }
        }
    }
    INFO("rows ending at eos " << at_eos << ", at their limit " << at_limit << ", emitting padding " << with_pad);
    CHECK(at_eos > 0);
    CHECK(at_limit > 0);
    CHECK(with_pad > 0);
}

TEST_CASE("decode: cached beam search equals the full-prefix reference batched and alone", "[nn][decode]") {
    for (Kind kind : {Kind::Dense, Kind::PreNorm, Kind::MoE}) {
        for (int beam : {1, 3, 5}) {
            INFO(kind_name(kind) << " beam " << beam);
            auto m = make_model(kind, 7);
            const auto srcs = sources(21);
            const nn::DecodeTokens tok{kBos, pick_eos(*m, srcs)};
            const auto lim = limits(srcs, 4);
            const nn::BeamOptions opt{beam, 1.0};
            const Enc e = encode(*m, srcs);
            const auto batched = nn::beam_search(*m->decoder, e.enc, e.mask, lim, opt, tok);
            CHECK(batched == nn::beam_search_reference(*m->decoder, e.enc, e.mask, lim, opt, tok));
            for (size_t i = 0; i < srcs.size(); ++i) {
                INFO("sentence " << i);
                const Enc e1 = encode(*m, {srcs[i]});
                const auto ref1 = nn::beam_search_reference(*m->decoder, e1.enc, e1.mask, {lim[i]}, opt, tok);
                const auto got1 = nn::beam_search(*m->decoder, e1.enc, e1.mask, {lim[i]}, opt, tok);
                CHECK(got1 == ref1);
                CHECK(batched[i] == ref1[0]);
            }
            if (beam == 1)  // beam 1 is greedy
                CHECK(batched == nn::greedy_decode(*m->decoder, e.enc, e.mask, lim, tok));
        }
    }
}

TEST_CASE("decode: score checks see every live row and bad arguments are refused", "[nn][decode]") {
    auto m = make_model(Kind::Dense, 3);
    const auto srcs = sources(4);
    const Enc e = encode(*m, srcs);
    const nn::DecodeTokens tok{kBos, -1};  // no eos: every row runs to its limit
    const auto lim = limits(srcs, 0);
    int64_t seen = 0, want = 0;
    for (int64_t l : lim) want += l;
    nn::greedy_decode<float>(*m->decoder, e.enc, e.mask, lim, tok, [&](const float*, int64_t V, int64_t) {
        CHECK(V == kV);
        ++seen;
    });
    CHECK(seen == want);
    const auto out = nn::greedy_decode(*m->decoder, e.enc, e.mask, lim, tok);
    for (size_t i = 0; i < srcs.size(); ++i) CHECK(int64_t(out[i].size()) == lim[i]);
    CHECK_THROWS_WITH(nn::beam_search(*m->decoder, e.enc, e.mask, lim, nn::BeamOptions{0, 1.0}, tok),
                      Contains("beam size must be >= 1, got 0"));
    CHECK_THROWS_WITH(nn::greedy_decode(*m->decoder, e.enc, e.mask, {3}, tok), Contains("1 output limits for 6 rows"));
}
