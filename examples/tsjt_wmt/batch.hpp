// batch.hpp — examples (id sequences), translation directions, padded batches and token-count
// batching for the translation example; no tokenizer here (data.hpp makes the ids), so the unit
// tests can use it without SentencePiece.
//
// Example layout: src = [<2tgt>] + pieces(src) + [eos];  tgt = pieces(tgt) + [eos];
//                 prev (decoder input) = [bos] + pieces(tgt).
// Batches are right-padded with pad (0); CE ignores pad targets, the KL mask is tgt == pad.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <moekd/core/random.hpp>
#include <moekd/tensor.hpp>

namespace tsjt {

using namespace moekd;

// Special ids, fixed by moekd/text/sentencepiece.hpp (kSpPad, kSpUnk, kSpBos, kSpEos).
constexpr int kPad = 0, kUnk = 1, kBos = 2, kEos = 3;

/// One training/evaluation example.
struct Example {
    std::vector<int32_t> src, tgt;  // src: tag + pieces + eos; tgt: pieces + eos
    int dir = 0;                    // index into the direction list
};

/// A direction (xx->en or en->xx) and its test sentences.
struct Direction {
    std::string src_lang, tgt_lang;
    std::vector<std::string> test_src, test_ref;
    std::string name() const { return src_lang + "-" + tgt_lang; }
};

/// A padded batch. src: (B, S); prev, tgt: (B, T); pad = 0.
struct Batch {
    Tensor<int64_t> src, prev, tgt;
    Tensor<uint8_t> tgt_pad;  // (B, T), 1 where tgt is pad
    int64_t tokens = 0;       // non-pad target tokens
};

inline Batch make_batch(const std::vector<Example>& ex, const std::vector<int64_t>& idx) {
    MOEKD_CHECK(!idx.empty(), "tsjt: empty batch");
    int64_t S = 0, T = 0;
    for (int64_t i : idx) {
        S = std::max<int64_t>(S, ex[i].src.size());
        T = std::max<int64_t>(T, ex[i].tgt.size());
    }
    const int64_t B = int64_t(idx.size());
    Batch b;
    b.src = Tensor<int64_t>::zeros({B, S});
    b.prev = Tensor<int64_t>::zeros({B, T});
    b.tgt = Tensor<int64_t>::zeros({B, T});
    b.tgt_pad = Tensor<uint8_t>::ones({B, T});
    for (int64_t r = 0; r < B; ++r) {
        const Example& e = ex[idx[r]];
        for (size_t j = 0; j < e.src.size(); ++j) b.src.data()[r * S + j] = e.src[j];
        b.prev.data()[r * T] = kBos;
        for (size_t j = 0; j < e.tgt.size(); ++j) {
            b.tgt.data()[r * T + j] = e.tgt[j];
            b.tgt_pad.data()[r * T + j] = 0;
            if (j + 1 < size_t(T) && j + 1 < e.tgt.size()) b.prev.data()[r * T + j + 1] = e.tgt[j];
        }
        b.tokens += int64_t(e.tgt.size());
    }
    return b;
}

/// The batch's tensors on `dev` (batches are built on the host; --device cuda trains on the GPU).
inline Batch on_device(Batch b, Device dev) {
    if (dev == Device::CPU) return b;
    b.src = b.src.to(dev);
    b.prev = b.prev.to(dev);
    b.tgt = b.tgt.to(dev);
    b.tgt_pad = b.tgt_pad.to(dev);
    return b;
}

/// Token-count batches: examples sorted by length, cut so that B * max_len <= max_tokens.
/// Returns lists of example indices (deterministic; shuffle the list per epoch).
inline std::vector<std::vector<int64_t>> token_batches(const std::vector<Example>& ex, int64_t max_tokens) {
    MOEKD_CHECK(max_tokens > 0, "tsjt: --max-tokens must be positive");
    std::vector<int64_t> order(ex.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        const size_t la = std::max(ex[a].src.size(), ex[a].tgt.size()), lb = std::max(ex[b].src.size(), ex[b].tgt.size());
        return la < lb;
    });
    std::vector<std::vector<int64_t>> out;
    std::vector<int64_t> cur;
    int64_t longest = 0;
    for (int64_t i : order) {
        const int64_t len = int64_t(std::max(ex[i].src.size(), ex[i].tgt.size()));
        if (!cur.empty() && std::max(longest, len) * int64_t(cur.size() + 1) > max_tokens) {
            out.push_back(std::move(cur));
            cur.clear();
            longest = 0;
        }
        cur.push_back(i);
        longest = std::max(longest, len);
    }
    if (!cur.empty()) out.push_back(std::move(cur));
    return out;
}

/// Fisher-Yates with moekd's Generator (reproducible across runs and resumes).
template <class V>
void shuffle(std::vector<V>& v, Generator& gen) {
    for (int64_t i = int64_t(v.size()) - 1; i > 0; --i) std::swap(v[i], v[gen.randint(0, i + 1)]);
}

/// The batch order of an epoch: 0 .. n-1 shuffled by a generator of (seed, epoch), so that every
/// rank and every resume walks the same order.
inline std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
    std::vector<int64_t> o(n);
    for (size_t i = 0; i < n; ++i) o[i] = int64_t(i);
    Generator g(seed * 1000003ULL + uint64_t(epoch) + 17);
    shuffle(o, g);
    return o;
}

}  // namespace tsjt
