// tokenizer.hpp — the joint SentencePiece model of a run directory: trained on every training
// sentence with the target-language tags as user-defined symbols, under a temporary name that is
// installed only after the checks (nothing saved is replaced before it is known to belong to the
// same run), reused when OUT already holds the one of the same data; its hash (the pieces, not
// the file's bytes) is part of every run's checked configuration.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <moekd/io/checkpoint.hpp>

#include "data.hpp"
#include "train.hpp"

namespace tsjt {

/// FNV-1a of what a SentencePiece model encodes with: every piece, its score and its kind, as 16
/// hex digits (not the file's bytes: the model also records the name of its training file).
inline std::string tokenizer_hash(const std::string& path) {
    sentencepiece::SentencePieceProcessor sp;
    MOEKD_CHECK(sp.LoadFromSerializedProto(io::read_file(path, "tsjt")).ok(), "tsjt: '", path,
                "' is not a SentencePiece model");
    uint64_t h = moekd::fnv1a64("tsjt-spm-1");
    for (int i = 0; i < sp.GetPieceSize(); ++i) {
        h = moekd::fnv1a64(std::string_view(sp.IdToPiece(i).data(), sp.IdToPiece(i).size() + 1), h);
        const float score = sp.GetScore(i);
        const char kind = char(sp.IsControl(i) | sp.IsUnknown(i) << 1 | sp.IsUnused(i) << 2 | sp.IsByte(i) << 3);
        h = moekd::fnv1a64(std::string_view(reinterpret_cast<const char*>(&score), sizeof score), h);
        h = moekd::fnv1a64(std::string_view(&kind, 1), h);
    }
    char b[24];
    std::snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
    return b;
}

/// Trains the joint SentencePiece model on every training sentence (both sides of every pair)
/// with the target-language tags as user-defined symbols, under a temporary name in `dir`
/// (spm.new.*: nothing saved is replaced); returns the temporary .model path, for install_spm.
inline std::string train_joint_spm(const std::vector<LangPair>& corpus, const std::string& dir, int vocab_size,
                                   const std::string& model_type) {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    const std::string tmp = (fs::path(dir) / "spm.new").string();
    const std::string text = tmp + ".train.txt";
    std::string bytes;
    for (const LangPair& p : corpus)
        for (size_t i = 0; i < p.train.size(); ++i) bytes += p.train.src[i] + '\n' + p.train.tgt[i] + '\n';
    std::string model;
    try {
        io::write_text_atomic(text, bytes);
        text::SentencePieceOptions opt;
        opt.vocab_size = vocab_size;
        opt.model_type = model_type;
        opt.user_defined_symbols.push_back(lang_tag("en"));
        for (const LangPair& p : corpus) opt.user_defined_symbols.push_back(lang_tag(p.lang));
        model = text::train_sentencepiece({text}, tmp, opt);
    } catch (...) {
        std::error_code ec;
        for (const char* ext : {".train.txt", ".model", ".vocab"}) fs::remove(tmp + ext, ec);
        throw;
    }
    fs::remove(text);
    return model;
}

/// Moves a model trained by train_joint_spm (and its .vocab) to dir/spm.model (spm.vocab).
inline std::string install_spm(const std::string& tmp_model, const std::string& dir) {
    namespace fs = std::filesystem;
    const std::string model = (fs::path(dir) / "spm.model").string();
    const std::string stem = tmp_model.substr(0, tmp_model.size() - 6);  // without ".model"
    fs::rename(tmp_model, model);
    std::error_code ec;
    if (fs::exists(stem + ".vocab")) fs::rename(stem + ".vocab", (fs::path(dir) / "spm.vocab").string(), ec);
    return model;
}

/// Removes what train_joint_spm left when the caller does not install it.
inline void discard_spm(const std::string& tmp_model) {
    std::error_code ec;
    const std::string stem = tmp_model.substr(0, tmp_model.size() - 6);
    std::filesystem::remove(tmp_model, ec);
    std::filesystem::remove(stem + ".vocab", ec);
}

namespace fs = std::filesystem;

/// The tokenizer of OUT and the checked data configuration (data_config + " spm.model=<hash>").
/// Before anything under OUT is written: the data configuration must match the one recorded in
/// OUT/tokenizer/data-config.txt and the one of every run's newest checkpoint; then the saved
/// spm.model is reused (when its hash is the recorded one), else a new one is trained under a
/// temporary name and installed only once the checkpoints agree with it.
std::pair<std::string, std::string> prepare_tokenizer(const std::string& out, const std::vector<LangPair>& corpus,
                                                      const std::string& dcfg, int vocab, const std::string& spm_type,
                                                      const std::vector<Mode>& modes) {
    const fs::path dir = fs::path(out) / "tokenizer";
    const std::string model = (dir / "spm.model").string(), record = (dir / "data-config.txt").string();
    const char* hint = ". Nothing was changed. HINT: rerun with the flags and data it was made with, or use another "
                       "--out directory (or delete this one)";
    auto check_ckpts = [&](const std::string& cfg) {  // the data keys of every run's newest checkpoint
        for (Mode m : modes) {
            const std::string last = io::latest_checkpoint((fs::path(out) / mode_name(m) / "ckpt").string());
            if (last.empty()) continue;
            const std::string diff = config_diff(io::read_checkpoint<F>(last).state.config, cfg, false);
            MOEKD_CHECK(diff.empty(), "tsjt_wmt: checkpoint '", last, "' was written by another configuration: ", diff, hint);
        }
    };
    std::string have;
    if (fs::exists(record)) {
        have = io::read_file(record, "tsjt_wmt");
        while (!have.empty() && (have.back() == '\n' || have.back() == ' ')) have.pop_back();
        const std::string diff = config_diff(have, dcfg, false);
        MOEKD_CHECK(diff.empty(), "tsjt_wmt: --out '", out, "' was made with other data (", record, "): ", diff, hint);
    }
    check_ckpts(dcfg);
    if (!have.empty() && fs::is_regular_file(model)) {
        const std::string h = tokenizer_hash(model);
        if (parse_config(have)["spm.model"] == h) {
            const std::string cfg = dcfg + " spm.model=" + h;
            check_ckpts(cfg);
            std::printf("tokenizer: reusing %s (same data as recorded)\n", model.c_str());
            return {model, cfg};
        }
    }
    const std::string tmp = train_joint_spm(corpus, dir.string(), vocab, spm_type);
    const std::string cfg = dcfg + " spm.model=" + tokenizer_hash(tmp);
    try {
        check_ckpts(cfg);
    } catch (...) {
        discard_spm(tmp);
        throw;
    }
    install_spm(tmp, dir.string());
    io::write_text_atomic(record, cfg + "\n");
    return {model, cfg};
}

}  // namespace tsjt
