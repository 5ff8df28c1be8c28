// translate.hpp — text in, text out: SentencePiece encoding with the target-language tag,
// decoding (greedy or beam) and detokenisation.
#pragma once

#include <string>
#include <vector>

#include "data.hpp"
#include "decode.hpp"

namespace tsjt {

/// Translations of `sentences` into tgt_lang (detokenised text).
inline std::vector<std::string> translate(const Sub& m, const text::SentencePiece& sp, const std::string& tgt_lang,
                                          const std::vector<std::string>& sentences, int beam = 1,
                                          double length_penalty = 1.0, bool reencode = false) {
    std::vector<std::vector<int32_t>> srcs;
    for (const std::string& s : sentences) srcs.push_back(encode_source(sp, tgt_lang, s));
    std::vector<std::vector<int>> ids;
    if (beam <= 1) ids = greedy_decode(m, srcs);
    else
        for (const auto& s : srcs) ids.push_back(beam_decode_one(m, s, beam, length_penalty, 128, reencode));
    std::vector<std::string> out;
    for (const auto& v : ids) out.push_back(sp.decode(v));
    return out;
}

}  // namespace tsjt
