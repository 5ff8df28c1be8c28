// translate.hpp — text in, text out: SentencePiece encoding with the target-language tag,
// decoding (greedy or beam) and detokenisation; and the two subcommands built on it,
// `tsjt_wmt translate` (stdin with an extracted submodel) and `tsjt_wmt score` (corpus BLEU).
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <moekd/io/read_file.hpp>
#include <moekd/text/bleu.hpp>

#include "data.hpp"
#include "decode.hpp"
#include "submodel.hpp"

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

/// `tsjt_wmt score REF HYP`: corpus BLEU of two aligned text files (sacreBLEU default).
inline int cmd_score(const std::string& ref_path, const std::string& hyp_path) {
    // io::read_file: "-" is stdin, <(cmd) and pipes work, a directory or a missing file is named
    const auto refs = data::read_lines_utf8(ref_path, "score");
    const auto hyps = data::read_lines_utf8(hyp_path, "score");
    MOEKD_CHECK(refs.size() == hyps.size(), "score: '", ref_path, "' has ", refs.size(), " lines but '", hyp_path,
                "' has ", hyps.size());
    const text::BleuScore s = text::corpus_bleu(hyps, refs);
    std::printf("%s\n", s.verbose(4).c_str());
    std::printf("signature: %s\n", text::bleu_signature().c_str());
    return 0;
}

/// `tsjt_wmt translate --model DIR --to LANG`: translates stdin, one sentence per line.
inline int cmd_translate(const std::string& dir, const std::string& to, int beam, double lenpen, bool eval_dropless,
                  bool reencode) {
    const LoadedSubmodel m = load_submodel(dir, eval_dropless);
    const text::SentencePiece sp = text::SentencePiece::load((std::filesystem::path(dir) / "spm.model").string());
    MOEKD_CHECK(sp.vocab_size() == m.config.vocab, "translate: '", dir, "/spm.model' has ", sp.vocab_size(),
                " pieces but the model was trained with ", m.config.vocab);
    MOEKD_CHECK(data::valid_language_code(to), "translate: '", to, "' is not a language code");
    const Sub sub = Sub::of(*m.model, m.config.pad);
    std::vector<std::string> lines;
    for (const std::string& l : data::split_lines_utf8(io::read_file("-", "translate"), "<stdin>", "translate"))
        lines.push_back(data::collapse_whitespace(l));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> out;
    try {
        out = translate(sub, sp, to, lines, beam, lenpen, reencode);
    } catch (const NonFiniteLogits& e) {
        MOEKD_CHECK(false, "translate: the model '", m.file, "' gives non-finite scores (", e.what(),
                    "): its weights are broken (a diverged run?)");
    } catch (const Error& e) {  // e.g. the MoE router's check of its logits
        MOEKD_CHECK(false, "translate: the model '", m.file, "' failed: ", e.what());
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const std::string& t : out) std::printf("%s\n", t.c_str());
    std::fprintf(stderr, "translate: %zu sentences in %.3f s (%s, beam %d%s)\n", lines.size(), secs,
                 eval_dropless || !m.config.experts ? "dropless" : "eval capacity", beam,
                 reencode && beam > 1 ? ", source re-encoded every step" : "");
    return 0;
}

}  // namespace tsjt
