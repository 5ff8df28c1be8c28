// decode.hpp — greedy and beam-search decoding over an nn::TransformerDecoder and an encoder
// output, with key/value caching (optimised path) and the full-prefix reference it must equal.
//
// Cached path (greedy_decode, beam_search): the encoder output's cross-attention keys/values are
// computed once per batch of sentences (TransformerDecoder::make_cache), and each step runs the
// decoder on the newest token of each live row only (TransformerDecoder::forward_step), appending
// its self-attention keys/values to the cache. Finished rows are dropped from the batch; beams
// are rows too: the hypotheses of several sentences decode together, and each step reorders the
// cache to the surviving hypotheses' parents (a cross cache keeps one copy per sentence).
// Reference path (greedy_decode_reference, beam_search_reference): the algorithm the example
// used first — the decoder re-run on the whole prefix at every step — kept as the ground truth
// that the tests compare against token for token, and as the fallback of a caller that wants it.
// Both paths run the same search: same tie-breaking, same stopping rules, same outputs.
//
// Scores: the search reads each step's (rows, V) scores on the host (logits for greedy,
// log_softmax for beams; n x V values per step). `check` (optional) sees every live row's scores
// before they are used (the example throws on non-finite ones). Inference only: put the model in
// eval mode; the functions run under NoGrad. An MoE FFN acts per token; with a dropless eval
// capacity (the example's default) its outputs do not depend on the batch, so a sentence decodes
// the same in any batch and on either path (up to float rounding of the batch's GEMMs).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "transformer.hpp"

namespace moekd::nn {

/// What every decoder here needs to know about the vocabulary.
struct DecodeTokens {
    int64_t bos = 0;  // the first decoder input of every row
    int64_t eos = 2;  // ends a row (not part of the output); a value no token has: rows end at max_len
};

/// Sees a live row's scores row[0, V) at output step `step` (0-based) before they are used.
template <class T>
using ScoreCheck = std::function<void(const T* row, int64_t V, int64_t step)>;

namespace detail_decode {
/// Host copy of a (rows, V) device or host tensor, contiguous.
template <class T>
Tensor<T> host_rows(const Tensor<T>& x) {
    return x.to(Device::CPU).contiguous();
}
template <class T>
int64_t max_of(const std::vector<T>& v, int64_t at_least) {
    int64_t m = at_least;
    for (auto x : v) m = std::max<int64_t>(m, int64_t(x));
    return m;
}
}  // namespace detail_decode

/// Logits of the last position of prev through the full decoder (the reference step).
/// prev: (B, T); enc: (B, S, D); enc_mask: (B, S) or undefined -> (B, V)
template <class T>
Tensor<T> decode_last_full(const TransformerDecoder<T>& dec, const Tensor<int64_t>& prev, const Tensor<T>& enc,
                           const Tensor<uint8_t>& enc_mask) {
    const Tensor<uint8_t> m = padding_mask(prev, dec.padding_idx());
    const Tensor<T> h = dec.forward(dec.embed(prev), enc, m, enc_mask);  // (B, T, D)
    return dec.output_projection->forward(h.select(1, h.size(1) - 1));
}

// ---- greedy ------------------------------------------------------------------------------------

/// Greedy decoding of the B rows of enc (B, S, D) (enc_mask (B, S) or undefined), on the encoder
/// output's device: row i emits at most max_len[i] tokens (eos included) and stops at eos.
/// Returns each row's tokens without bos/eos. Cached (one decoder step per output token).
template <class T>
std::vector<std::vector<int64_t>> greedy_decode(const TransformerDecoder<T>& dec, const Tensor<T>& enc,
                                                const Tensor<uint8_t>& enc_mask, const std::vector<int64_t>& max_len,
                                                const DecodeTokens& tok, const ScoreCheck<T>& check = {}) {
    NoGrad ng;
    const int64_t n = enc.size(0);
    MOEKD_CHECK(int64_t(max_len.size()) == n, "greedy_decode: ", max_len.size(), " output limits for ", n, " rows");
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(n));
    if (n == 0) return out;
    const int64_t limit = detail_decode::max_of(max_len, 1);
    DecoderCache<T> cache = dec.make_cache(enc, enc_mask, limit + 1);
    std::vector<int64_t> live(static_cast<size_t>(n)), next(static_cast<size_t>(n), tok.bos);  // cache row -> sentence; its next input
    for (int64_t i = 0; i < n; ++i) live[size_t(i)] = i;
    for (int64_t t = 0; t < limit; ++t) {
        // rows past their limit stop before the step (as the reference marks them done)
        std::vector<int64_t> keep;
        for (size_t r = 0; r < live.size(); ++r)
            if (t < max_len[size_t(live[r])]) keep.push_back(int64_t(r));
        if (keep.empty()) break;
        if (keep.size() != live.size()) {
            std::vector<int64_t> nl, nn;
            for (int64_t r : keep) nl.push_back(live[size_t(r)]), nn.push_back(next[size_t(r)]);
            cache.reorder(keep);
            live = std::move(nl), next = std::move(nn);
        }
        const int64_t B = int64_t(live.size());
        const Tensor<int64_t> in = Tensor<int64_t>::from_vector(next, Shape{B, 1}).to(enc.device());
        const Tensor<T> logits = detail_decode::host_rows(dec.forward_step(in, cache));  // (B, V)
        const int64_t V = logits.size(1);
        keep.clear();
        std::vector<int64_t> nl, nn;
        for (int64_t r = 0; r < B; ++r) {
            const T* row = logits.data() + r * V;
            if (check) check(row, V, t);
            const int64_t best = std::max_element(row, row + V) - row;
            if (best == tok.eos) continue;
            out[size_t(live[size_t(r)])].push_back(best);
            keep.push_back(r), nl.push_back(live[size_t(r)]), nn.push_back(best);
        }
        if (keep.empty()) break;
        if (int64_t(keep.size()) != B) cache.reorder(keep);
        live = std::move(nl), next = std::move(nn);
    }
    return out;
}

/// The reference: greedy decoding re-running the decoder on the whole prefix at every step
/// (finished rows are fed padding). Same arguments and results as greedy_decode.
template <class T>
std::vector<std::vector<int64_t>> greedy_decode_reference(const TransformerDecoder<T>& dec, const Tensor<T>& enc,
                                                          const Tensor<uint8_t>& enc_mask,
                                                          const std::vector<int64_t>& max_len, const DecodeTokens& tok,
                                                          const ScoreCheck<T>& check = {}) {
    NoGrad ng;
    const size_t n = size_t(enc.size(0));
    MOEKD_CHECK(max_len.size() == n, "greedy_decode_reference: ", max_len.size(), " output limits for ", n, " rows");
    const int64_t pad = dec.padding_idx(), limit = detail_decode::max_of(max_len, 1);
    std::vector<std::vector<int64_t>> out(n), prefix(n, std::vector<int64_t>{tok.bos});
    std::vector<bool> done(n, false);
    for (int64_t t = 0; t < limit; ++t) {
        Tensor<int64_t> prev = Tensor<int64_t>::full({int64_t(n), t + 1}, pad);
        for (size_t i = 0; i < n; ++i)
            for (int64_t j = 0; j <= t; ++j) prev.data()[int64_t(i) * (t + 1) + j] = prefix[i][size_t(j)];
        const Tensor<T> logits = detail_decode::host_rows(decode_last_full(dec, prev.to(enc.device()), enc, enc_mask));
        const int64_t V = logits.size(1);
        bool all = true;
        for (size_t i = 0; i < n; ++i) {
            if (!done[i] && t >= max_len[i]) done[i] = true;
            if (done[i]) { prefix[i].push_back(pad); continue; }
            const T* row = logits.data() + int64_t(i) * V;
            if (check) check(row, V, t);
            const int64_t best = std::max_element(row, row + V) - row;
            prefix[i].push_back(best);
            if (best == tok.eos) done[i] = true;
            else out[i].push_back(best);
            all = all && done[i];
        }
        if (all) break;
    }
    return out;
}

// ---- beam search -------------------------------------------------------------------------------

/// Options of beam_search: beam size, fairseq's length normalisation sum log p / len^penalty.
struct BeamOptions {
    int beam = 4;
    double length_penalty = 1.0;
};

namespace detail_decode {
struct Hyp {
    std::vector<int64_t> ids;  // bos first
    double logp = 0;
    int64_t row = 0;  // the cache row it extends (cached path)
};
/// One sentence's search state, advanced one step from its rows' log-probabilities.
struct BeamState {
    std::vector<Hyp> live{Hyp{}}, finished;
    int64_t limit = 0;
    bool stopped = false;

    bool active(int64_t t) const { return !stopped && t < limit && !live.empty(); }
    /// logp: the host (rows, V) log-probabilities; live[i] reads row live[i].row.
    template <class T>
    void step(const T* logp, int64_t V, int64_t t, const BeamOptions& o, int64_t eos, const ScoreCheck<T>& check) {
        std::vector<Hyp> cand;
        std::vector<int64_t> ids(static_cast<size_t>(V));
        const int64_t k = std::min<int64_t>(o.beam, V);
        for (const Hyp& hyp : live) {
            const T* row = logp + hyp.row * V;
            if (check) check(row, V, t);
            for (int64_t v = 0; v < V; ++v) ids[size_t(v)] = v;
            std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
            for (int64_t j = 0; j < k; ++j) {
                Hyp h = hyp;
                h.ids.push_back(ids[size_t(j)]);
                h.logp += row[ids[size_t(j)]];
                cand.push_back(std::move(h));
            }
        }
        std::sort(cand.begin(), cand.end(), [](const Hyp& a, const Hyp& b) { return a.logp > b.logp; });
        live.clear();
        for (Hyp& h : cand) {
            if (int(live.size()) >= o.beam) break;
            if (h.ids.back() == eos) finished.push_back(std::move(h));
            else live.push_back(std::move(h));
        }
        if (int(finished.size()) >= o.beam) stopped = true;
    }
    /// The best finished hypothesis by normalised score (the best live one if none finished),
    /// without bos / eos.
    std::vector<int64_t> best(const BeamOptions& o, int64_t eos) const {
        const std::vector<Hyp>& pool = finished.empty() ? live : finished;
        auto norm = [&](const Hyp& h) {
            return h.logp / std::pow(double(std::max<size_t>(h.ids.size() - 1, 1)), o.length_penalty);
        };
        size_t b = 0;
        for (size_t i = 1; i < pool.size(); ++i)
            if (norm(pool[i]) > norm(pool[b])) b = i;
        std::vector<int64_t> out;
        for (size_t j = 1; j < pool[b].ids.size(); ++j)
            if (pool[b].ids[j] != eos) out.push_back(pool[b].ids[j]);
        return out;
    }
};
}  // namespace detail_decode

/// Beam search for each of the N sentences of enc (N, S, D) (enc_mask (N, S) or undefined), all
/// sentences' hypotheses batched in each decoder step: sentence i makes at most max_len[i] steps
/// and stops when `beam` hypotheses have finished (eos). Returns each sentence's best finished
/// hypothesis (by normalised score; the best unfinished one at the limit), without bos/eos.
template <class T>
std::vector<std::vector<int64_t>> beam_search(const TransformerDecoder<T>& dec, const Tensor<T>& enc,
                                              const Tensor<uint8_t>& enc_mask, const std::vector<int64_t>& max_len,
                                              const BeamOptions& opt, const DecodeTokens& tok,
                                              const ScoreCheck<T>& check = {}) {
    NoGrad ng;
    MOEKD_CHECK(opt.beam >= 1, "beam_search: beam size must be >= 1, got ", opt.beam);
    const int64_t n = enc.size(0);
    MOEKD_CHECK(int64_t(max_len.size()) == n, "beam_search: ", max_len.size(), " output limits for ", n, " sentences");
    std::vector<detail_decode::BeamState> st(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) st[size_t(i)].limit = max_len[size_t(i)], st[size_t(i)].live[0].ids = {tok.bos},
                                    st[size_t(i)].live[0].row = i;
    if (n == 0) return {};
    const int64_t limit = detail_decode::max_of(max_len, 1);
    DecoderCache<T> cache = dec.make_cache(enc, enc_mask, limit + 1);
    int64_t rows = n;  // cache rows now: the live hypotheses of the active sentences, in order
    for (int64_t t = 0; t < limit; ++t) {
        // the rows this step: every live hypothesis of an active sentence (its cache row: h.row)
        std::vector<int64_t> keep, next;
        for (auto& s : st)
            if (s.active(t))
                for (auto& h : s.live) {
                    keep.push_back(h.row);
                    next.push_back(h.ids.back());
                    h.row = int64_t(keep.size()) - 1;
                }
        if (keep.empty()) break;
        bool same = int64_t(keep.size()) == rows;
        for (size_t r = 0; same && r < keep.size(); ++r) same = keep[r] == int64_t(r);
        if (!same) cache.reorder(keep);
        rows = int64_t(keep.size());
        const Tensor<int64_t> in = Tensor<int64_t>::from_vector(next, Shape{rows, 1}).to(enc.device());
        const Tensor<T> logp = detail_decode::host_rows(log_softmax(dec.forward_step(in, cache), -1));  // (rows, V)
        for (auto& s : st)
            if (s.active(t)) s.step(logp.data(), logp.size(1), t, opt, tok.eos, check);
    }
    std::vector<std::vector<int64_t>> out;
    for (const auto& s : st) out.push_back(s.best(opt, tok.eos));
    return out;
}

/// The reference: beam search for one sentence at a time (enc row i alone, its padding cut off
/// by the mask), re-running the decoder on every live prefix at every step. Same arguments and
/// results as beam_search.
template <class T>
std::vector<std::vector<int64_t>> beam_search_reference(const TransformerDecoder<T>& dec, const Tensor<T>& enc,
                                                        const Tensor<uint8_t>& enc_mask,
                                                        const std::vector<int64_t>& max_len, const BeamOptions& opt,
                                                        const DecodeTokens& tok, const ScoreCheck<T>& check = {}) {
    NoGrad ng;
    MOEKD_CHECK(opt.beam >= 1, "beam_search_reference: beam size must be >= 1, got ", opt.beam);
    const int64_t N = enc.size(0), S = enc.size(1), D = enc.size(2);
    std::vector<std::vector<int64_t>> out;
    for (int64_t i = 0; i < N; ++i) {
        detail_decode::BeamState s;
        s.limit = max_len[size_t(i)];
        s.live[0].ids = {tok.bos};
        for (int64_t t = 0; s.active(t); ++t) {
            const int64_t n = int64_t(s.live.size());
            const Tensor<T> e = enc.narrow(0, i, 1).expand({n, S, D}).contiguous();
            const Tensor<uint8_t> m = enc_mask.defined() ? enc_mask.narrow(0, i, 1).expand({n, S}).contiguous() : Tensor<uint8_t>();
            Tensor<int64_t> prev = Tensor<int64_t>::empty({n, t + 1});
            for (int64_t r = 0; r < n; ++r) {
                std::copy_n(s.live[size_t(r)].ids.data(), t + 1, prev.data() + r * (t + 1));
                s.live[size_t(r)].row = r;
            }
            const Tensor<T> logp =
                detail_decode::host_rows(log_softmax(decode_last_full(dec, prev.to(enc.device()), e, m), -1));
            s.step(logp.data(), logp.size(1), t, opt, tok.eos, check);
        }
        out.push_back(s.best(opt, tok.eos));
    }
    return out;
}

}  // namespace moekd::nn
