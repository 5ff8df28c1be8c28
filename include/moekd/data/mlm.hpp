// mlm.hpp — BERT's masked-language-model corruption of a batch of token ids.
//
// For masked-LM pre-training (BERT's objective). Of the non-special
// tokens, each is chosen independently with probability mask_prob (15%); a chosen token becomes
// [MASK] with probability replace_mask (80%), a uniformly random non-special token with
// probability replace_random (10%), and is kept otherwise (10%) — as in BERT / HF's
// DataCollatorForLanguageModeling. Labels hold the original id at chosen positions and
// ignore_index elsewhere, the layout cross_entropy's ignore_index expects. Masks are re-drawn
// on every call, so a training loop that calls this each epoch with its own Generator gets
// fresh masks every epoch ("dynamic masking"). Pure CPU integer code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace moekd::data {

struct MlmConfig {
    double mask_prob = 0.15;           // chance a non-special token is chosen
    double replace_mask = 0.8;         // chosen -> [MASK]
    double replace_random = 0.1;       // chosen -> random non-special token (rest: kept)
    int64_t mask_id = -1;              // id of [MASK] (required)
    int64_t vocab_size = -1;           // ids are in [0, vocab_size) (required)
    std::vector<int64_t> special_ids;  // never chosen and never drawn as random (pad, cls, sep, ...)
    int64_t ignore_index = -100;       // label at positions not chosen
    int64_t min_per_row = 0;           // if > 0, rows with fewer chosen tokens get extra ones (never
                                       // more than the row's non-special tokens); 0 = pure BERT
};

struct MlmBatch {
    Tensor<int64_t> input_ids;  // (B, T) corrupted ids
    Tensor<int64_t> labels;     // (B, T) original id where chosen, ignore_index elsewhere
    int64_t num_chosen = 0;     // positions with a label (count of labels != ignore_index)
};

/// Checks a config; throws moekd::Error naming the bad field.
inline void validate(const MlmConfig& c) {
    MOEKD_CHECK(c.vocab_size > 0, "mask_tokens: MlmConfig.vocab_size is unset (", c.vocab_size, ")");
    MOEKD_CHECK(c.mask_id >= 0 && c.mask_id < c.vocab_size, "mask_tokens: MlmConfig.mask_id ", c.mask_id,
                " is unset or outside the vocabulary [0, ", c.vocab_size, ")");
    MOEKD_CHECK(c.mask_prob >= 0 && c.mask_prob <= 1, "mask_tokens: mask_prob ", c.mask_prob, " not in [0, 1]");
    MOEKD_CHECK(c.replace_mask >= 0 && c.replace_mask <= 1, "mask_tokens: replace_mask ", c.replace_mask,
                " not in [0, 1]");
    MOEKD_CHECK(c.replace_random >= 0 && c.replace_random <= 1, "mask_tokens: replace_random ", c.replace_random,
                " not in [0, 1]");
    MOEKD_CHECK(c.replace_mask + c.replace_random <= 1 + 1e-12,
                "mask_tokens: replace_mask + replace_random = ", c.replace_mask + c.replace_random, " > 1");
    MOEKD_CHECK(c.min_per_row >= 0, "mask_tokens: min_per_row ", c.min_per_row, " < 0");
    for (int64_t s : c.special_ids)
        MOEKD_CHECK(s >= 0 && s < c.vocab_size, "mask_tokens: special id ", s, " outside [0, ", c.vocab_size, ")");
}

/// ids: (B, T) token ids (any shape works; rows are the last dim). Returns new tensors; ids is
/// not changed. The generator advances, so the next call draws a different mask.
inline MlmBatch mask_tokens(const Tensor<int64_t>& ids, const MlmConfig& cfg, Generator& gen) {
    validate(cfg);
    MOEKD_CHECK(ids.defined() && ids.dim() >= 1, "mask_tokens: ids must be a (B, T) tensor, got shape ",
                ids.defined() ? ids.shape() : Shape{});
    std::vector<char> special(static_cast<size_t>(cfg.vocab_size), 0);
    for (int64_t s : cfg.special_ids) special[static_cast<size_t>(s)] = 1;
    special[static_cast<size_t>(cfg.mask_id)] = 1;  // [MASK] itself is never a random replacement
    const int64_t n_normal = std::count(special.begin(), special.end(), 0);
    MOEKD_CHECK(n_normal > 0 || cfg.replace_random == 0, "mask_tokens: every id is special; cannot draw random tokens");

    std::vector<int64_t> in = ids.to_vector();
    std::vector<int64_t> lab(in.size(), cfg.ignore_index);
    const int64_t T = ids.size(-1), rows = T == 0 ? 0 : static_cast<int64_t>(in.size()) / T;
    int64_t chosen_total = 0;
    auto draw_random = [&]() {
        for (;;) {  // rejection: specials are few, so this ends fast
            const int64_t r = gen.randint(0, cfg.vocab_size);
            if (!special[static_cast<size_t>(r)]) return r;
        }
    };
    auto corrupt = [&](size_t i) {
        lab[i] = in[i];
        ++chosen_total;
        const double u = gen.uniform();
        if (u < cfg.replace_mask)
            in[i] = cfg.mask_id;
        else if (u < cfg.replace_mask + cfg.replace_random)
            in[i] = draw_random();
    };
    for (int64_t r = 0; r < rows; ++r) {
        std::vector<size_t> left;  // candidates not chosen (for min_per_row)
        int64_t chosen = 0;
        for (int64_t t = 0; t < T; ++t) {
            const size_t i = static_cast<size_t>(r * T + t);
            const int64_t id = in[i];
            MOEKD_CHECK(id >= 0 && id < cfg.vocab_size, "mask_tokens: id ", id, " at row ", r, " position ", t,
                        " is outside the vocabulary [0, ", cfg.vocab_size, ")");
            if (special[static_cast<size_t>(id)]) continue;  // pad, cls, ..., and [MASK] itself
            if (gen.uniform() < cfg.mask_prob) {
                corrupt(i);
                ++chosen;
            } else
                left.push_back(i);
        }
        while (chosen < cfg.min_per_row && !left.empty()) {
            const auto k = static_cast<size_t>(gen.randint(0, static_cast<int64_t>(left.size())));
            corrupt(left[k]);
            left[k] = left.back();
            left.pop_back();
            ++chosen;
        }
    }
    MlmBatch out;
    out.input_ids = Tensor<int64_t>::from_vector(in, ids.shape());
    out.labels = Tensor<int64_t>::from_vector(lab, ids.shape());
    out.num_chosen = chosen_total;
    return out;
}

}  // namespace moekd::data
