// decode.hpp — greedy and beam-search decoding for a submodel (Sub), on source ids: the library's
// cached decoders (moekd/nn/decode.hpp). The source is encoded once per batch (greedy) or once
// per sentence (beam); the decoder's cross-attention keys/values of the encoder output are
// computed once, and each step runs the decoder on the newest token only (key/value cache). With
// the MoE model's default dropless evaluation (model.hpp) a sentence decodes the same alone or in
// a batch. On a device model the inputs and the caches live on its device (the cached step runs
// through the same ops there) and each step's scores come back to the host, where the search
// runs (n x V values per step). beam_decode_one(..., reencode = true) is the old path, kept as
// the reference the tests compare with: the encoder re-run at every step and the decoder re-run
// on the whole prefix.
// Scores that are not finite (a model with NaN weights) throw NonFiniteLogits instead of
// decoding to empty or arbitrary outputs; the callers name the model.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <moekd/nn/decode.hpp>

#include "batch.hpp"
#include "model.hpp"

namespace tsjt {

/// The model's output scores hold a NaN or an infinity (callers add which model).
struct NonFiniteLogits : Error {
    using Error::Error;
};

/// Throws NonFiniteLogits when row[0, V) holds a NaN or an infinity (log_softmax may give
/// -inf for a vanishing probability: allow_neg_inf).
inline void check_finite_scores(const F* row, int64_t V, int64_t step, bool allow_neg_inf = false) {
    for (int64_t v = 0; v < V; ++v)
        if (!std::isfinite(row[v]) && !(allow_neg_inf && row[v] < 0 && std::isinf(row[v])))
            throw NonFiniteLogits(msg("score ", row[v], " of token ", v, " at output step ", step + 1));
}

/// Source batch (B, S) right-padded with pad.
inline Tensor<int64_t> pad_sources(const std::vector<std::vector<int32_t>>& srcs, size_t from, size_t n, int64_t pad) {
    int64_t S = 1;
    for (size_t i = from; i < from + n; ++i) S = std::max<int64_t>(S, srcs[i].size());
    Tensor<int64_t> t = Tensor<int64_t>::full({int64_t(n), S}, pad);
    for (size_t i = 0; i < n; ++i)
        for (size_t j = 0; j < srcs[from + i].size(); ++j) t.data()[i * S + j] = srcs[from + i][j];
    return t;
}

inline int64_t max_output_len(size_t src_len, int64_t cap) { return std::min<int64_t>(cap, int64_t(src_len) * 3 / 2 + 10); }

/// Greedy decoding of every source (ids from encode_source); returns the output ids without
/// bos/eos. Runs without gradients (put the model in eval mode first). Sources are sorted by
/// length and cut into batches of at most `batch` sentences and `max_tokens` source tokens, so
/// one long sentence does not slow down a batch of short ones.
inline std::vector<std::vector<int>> greedy_decode(const Sub& m, const std::vector<std::vector<int32_t>>& srcs,
                                                   int batch = 32, int64_t max_len_cap = 128,
                                                   int64_t max_tokens = 1024) {
    NoGrad ng;
    std::vector<std::vector<int>> out(srcs.size());
    std::vector<size_t> order(srcs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return srcs[a].size() < srcs[b].size(); });
    for (size_t from = 0; from < order.size();) {
        size_t n = 1;
        while (from + n < order.size() && n < size_t(batch) &&
               int64_t(srcs[order[from + n]].size()) * int64_t(n + 1) <= max_tokens)
            ++n;
        std::vector<std::vector<int32_t>> group;
        for (size_t i = 0; i < n; ++i) group.push_back(srcs[order[from + i]]);
        const Tensor<int64_t> src = pad_sources(group, 0, n, m.pad).to(m.device());
        const Encoded enc = m.encode(src);
        std::vector<int64_t> limits;
        for (size_t i = 0; i < n; ++i) limits.push_back(max_output_len(group[i].size(), max_len_cap));
        const auto ids = nn::greedy_decode<F>(*m.decoder, enc.enc, enc.mask, limits, nn::DecodeTokens{kBos, kEos},
                                              [](const F* row, int64_t V, int64_t t) { check_finite_scores(row, V, t); });
        for (size_t i = 0; i < n; ++i) out[order[from + i]].assign(ids[i].begin(), ids[i].end());
        from += n;
    }
    return out;
}

/// Row 0 of an encoding, repeated n times: enc (1, S, D) -> (n, S, D), mask (1, S) -> (n, S),
/// on the encoding's device.
inline Encoded repeat_encoded(const Encoded& e, int64_t n) {
    Encoded r;
    r.enc = e.enc.expand({n, e.enc.size(1), e.enc.size(2)}).contiguous();
    if (e.mask.defined()) r.mask = e.mask.expand({n, e.mask.size(1)}).contiguous();
    return r;
}

/// Beam search for one source: hypotheses scored by sum log p / len^length_penalty (fairseq's
/// normalisation); returns the best finished hypothesis (or the best unfinished at the limit).
/// The source is encoded once and decoded with the cache (nn::beam_search); reencode = true is
/// the old path: the encoder run again at every step on n copies of the source and the decoder
/// on every whole prefix (the slow reference the tests and the timing compare with).
inline std::vector<int> beam_decode_one(const Sub& m, const std::vector<int32_t>& src, int beam, double length_penalty,
                                        int64_t max_len_cap = 128, bool reencode = false) {
    NoGrad ng;
    MOEKD_CHECK(beam >= 1, "tsjt: beam size must be >= 1, got ", beam);
    const Tensor<int64_t> s1 = pad_sources({src}, 0, 1, m.pad);
    const Device dev = m.device();
    if (!reencode) {  // the cached path: encoded once, one decoder step per output token
        const Encoded e = m.encode(s1.to(dev));
        const auto ids = nn::beam_search<F>(
            *m.decoder, e.enc, e.mask, {max_output_len(src.size(), max_len_cap)}, nn::BeamOptions{beam, length_penalty},
            nn::DecodeTokens{kBos, kEos}, [](const F* row, int64_t V, int64_t t) { check_finite_scores(row, V, t, true); });
        return std::vector<int>(ids[0].begin(), ids[0].end());
    }
    // the old path: the source re-encoded for the live hypotheses and the decoder re-run on
    // every whole prefix, at every step
    Encoded en;
    struct Hyp { std::vector<int64_t> ids; double logp; };
    std::vector<Hyp> live{{{kBos}, 0.0}}, finished;
    const int64_t limit = max_output_len(src.size(), max_len_cap);
    auto norm = [&](const Hyp& h, size_t len) { return h.logp / std::pow(double(std::max<size_t>(len, 1)), length_penalty); };
    for (int64_t t = 0; t < limit && !live.empty(); ++t) {
        const int64_t n = int64_t(live.size());
        Tensor<int64_t> src_n = Tensor<int64_t>::empty({n, s1.size(1)});
        for (int64_t i = 0; i < n; ++i) std::copy_n(s1.data(), s1.size(1), src_n.data() + i * s1.size(1));
        en = m.encode(src_n.to(dev));
        Tensor<int64_t> prev = Tensor<int64_t>::empty({n, t + 1});
        for (int64_t i = 0; i < n; ++i) std::copy_n(live[i].ids.data(), t + 1, prev.data() + i * (t + 1));
        const Tensor<F> logp = log_softmax(m.decode_last(prev.to(dev), en), -1).to(Device::CPU).contiguous();  // (n, V)
        const int64_t V = logp.size(1);
        std::vector<Hyp> cand;
        for (int64_t i = 0; i < n; ++i) {
            const F* row = logp.data() + i * V;
            check_finite_scores(row, V, t, true);
            std::vector<int64_t> ids(V);
            for (int64_t v = 0; v < V; ++v) ids[v] = v;
            std::partial_sort(ids.begin(), ids.begin() + std::min<int64_t>(beam, V), ids.end(),
                              [&](int64_t a, int64_t b) { return row[a] > row[b]; });
            for (int64_t k = 0; k < std::min<int64_t>(beam, V); ++k) {
                Hyp h = live[i];
                h.ids.push_back(ids[k]);
                h.logp += row[ids[k]];
                cand.push_back(std::move(h));
            }
        }
        std::sort(cand.begin(), cand.end(), [](const Hyp& a, const Hyp& b) { return a.logp > b.logp; });
        live.clear();
        for (Hyp& h : cand) {
            if (int(live.size()) >= beam) break;
            if (h.ids.back() == kEos) finished.push_back(std::move(h));
            else live.push_back(std::move(h));
        }
        if (int(finished.size()) >= beam) break;
    }
    const std::vector<Hyp>& pool = finished.empty() ? live : finished;
    size_t best = 0;
    for (size_t i = 1; i < pool.size(); ++i)
        if (norm(pool[i], pool[i].ids.size() - 1) > norm(pool[best], pool[best].ids.size() - 1)) best = i;
    std::vector<int> out;
    for (size_t j = 1; j < pool[best].ids.size(); ++j)
        if (pool[best].ids[j] != kEos) out.push_back(int(pool[best].ids[j]));
    return out;
}

}  // namespace tsjt
