// data.hpp — the translation example's data path: read a WMT-style corpus (or build the built-in
// one from the gettext catalogs installed on this machine), train/load the joint SentencePiece
// model with target-language tags, turn sentence pairs into id sequences for both directions
// (X->en and en->X); batch.hpp cuts them into batches.
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <moekd/data/gettext.hpp>
#include <moekd/data/parallel.hpp>
#include <moekd/tensor.hpp>
#include <moekd/text/sentencepiece.hpp>

#include "batch.hpp"

namespace tsjt {

using namespace moekd;

static_assert(kPad == text::kSpPad && kUnk == text::kSpUnk && kBos == text::kSpBos && kEos == text::kSpEos);

/// One language paired with English, oriented xx -> en (src = xx, tgt = en).
struct LangPair {
    std::string lang;
    data::ParallelText train, valid, test;
};

/// "a,b,c" -> {"a", "b", "c"} (empty items kept, so "a,,b" is caught by the callers' checks).
inline std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find(',', start);
        if (end == std::string::npos) end = s.size();
        out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

/// Parses "fr,fi,hi"; every code must be a valid code and not "en".
inline std::vector<std::string> parse_langs(const std::string& s) {
    std::vector<std::string> out;
    for (const std::string& l : split_list(s)) {
        MOEKD_CHECK(data::valid_language_code(l), "tsjt: unknown language code '", l, "' in --langs '", s,
                    "' (want codes like fr,fi,hi)");
        MOEKD_CHECK(l != "en", "tsjt: --langs lists the languages paired with English; 'en' itself is implied");
        MOEKD_CHECK(std::find(out.begin(), out.end(), l) == out.end(), "tsjt: language '", l, "' is listed twice");
        out.push_back(l);
    }
    return out;
}

/// Reads DIR/<xx>-en (or en-<xx>) for each language; errors name the missing file / bad line.
inline std::vector<LangPair> read_corpus_dir(const std::string& dir, const std::vector<std::string>& langs) {
    std::vector<LangPair> out;
    for (const std::string& l : langs) {
        data::ParallelCorpus c = data::read_parallel_corpus(dir, l, "en");
        out.push_back({l, std::move(c.train), std::move(c.valid), std::move(c.test)});
    }
    return out;
}

/// Builds the corpus from the gettext catalogs under `root` (e.g. /usr/share/locale, or the
/// tree scripts/build_gettext_corpus.sh unpacks) with the project's cleaning and hash split,
/// writes it to out_dir/<xx>-en/{train,valid,test}.{xx,en} and reads it back (so it is
/// validated like any --data directory). Prints the statistics per language.
inline std::vector<LangPair> build_catalog_corpus(const std::string& root, const std::vector<std::string>& langs,
                                                  const std::string& out_dir, double valid_frac, double test_frac) {
    namespace fs = std::filesystem;
    MOEKD_CHECK(fs::is_directory(root), "tsjt: catalog root '", root, "' does not exist");
    std::map<std::string, std::vector<std::string>> files;
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied);
         it != fs::recursive_directory_iterator(); ++it) {
        if (it->path().extension() != ".mo" || it->is_symlink() || !it->is_regular_file()) continue;
        const std::string lang = data::mo_language(it->path().string());
        if (std::find(langs.begin(), langs.end(), lang) != langs.end()) files[lang].push_back(it->path().string());
    }
    std::printf("corpus: building from the gettext catalogs under %s\n", root.c_str());
    std::printf("  %-4s %5s %8s | %7s %6s %6s\n", "lang", "cats", "entries", "train", "valid", "test");
    for (const std::string& l : langs) {
        std::vector<std::string>& fl = files[l];
        MOEKD_CHECK(!fl.empty(), "tsjt: no gettext catalog (.mo) for language '", l, "' under '", root,
                    "'. HINT: build the full corpus with scripts/build_gettext_corpus.sh and pass --data");
        std::sort(fl.begin(), fl.end());
        data::GettextCorpus::Options opt;
        opt.valid_frac = valid_frac;
        opt.test_frac = test_frac;
        data::GettextCorpus corpus(opt);
        for (const std::string& f : fl) {
            try {
                corpus.add(data::read_mo(f));
            } catch (const Error& e) {
                std::fprintf(stderr, "  skipping unreadable catalog %s: %s\n", f.c_str(), e.what());
            }
        }
        const fs::path d = fs::path(out_dir) / (l + "-en");
        fs::create_directories(d);
        for (data::Split s : {data::Split::train, data::Split::valid, data::Split::test}) {
            auto write = [&](const std::string& lang, const std::vector<std::string>& lines) {
                std::ofstream f(d / (std::string(data::split_name(s)) + "." + lang), std::ios::binary | std::ios::trunc);
                for (const auto& x : lines) f << x << '\n';
                MOEKD_CHECK(f.good(), "tsjt: cannot write the corpus under '", d.string(), "'");
            };
            write(l, corpus.translation(s));
            write("en", corpus.english(s));
        }
        std::printf("  %-4s %5lld %8lld | %7zu %6zu %6zu\n", l.c_str(), (long long)corpus.catalogs(),
                    (long long)corpus.entries(), corpus.english(data::Split::train).size(),
                    corpus.english(data::Split::valid).size(), corpus.english(data::Split::test).size());
    }
    return read_corpus_dir(out_dir, langs);
}

/// Keeps the first n pairs (the split is already a deterministic hash order).
inline void limit(data::ParallelText& t, size_t n) {
    if (n == 0 || t.size() <= n) return;
    t.src.resize(n);
    t.tgt.resize(n);
}

inline std::string lang_tag(const std::string& lang) { return "<2" + lang + ">"; }

/// Trains the joint SentencePiece model on every training sentence (both sides of every pair)
/// with the target-language tags as user-defined symbols; returns the .model path.
inline std::string train_joint_spm(const std::vector<LangPair>& corpus, const std::string& dir, int vocab_size,
                                   const std::string& model_type) {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    const std::string text = (fs::path(dir) / "spm_train.txt").string();
    {
        std::ofstream f(text, std::ios::binary | std::ios::trunc);
        for (const LangPair& p : corpus)
            for (size_t i = 0; i < p.train.size(); ++i) f << p.train.src[i] << '\n' << p.train.tgt[i] << '\n';
        MOEKD_CHECK(f.good(), "tsjt: cannot write '", text, "'");
    }
    text::SentencePieceOptions opt;
    opt.vocab_size = vocab_size;
    opt.model_type = model_type;
    opt.user_defined_symbols.push_back(lang_tag("en"));
    for (const LangPair& p : corpus) opt.user_defined_symbols.push_back(lang_tag(p.lang));
    const std::string model = text::train_sentencepiece({text}, (fs::path(dir) / "spm").string(), opt);
    fs::remove(text);
    return model;
}

/// Encodes one sentence pair; returns false when either side is longer than max_len pieces.
inline bool encode_pair(const text::SentencePiece& sp, int tag, const std::string& s, const std::string& t,
                        int max_len, Example& ex) {
    const std::vector<int> a = sp.encode(s), b = sp.encode(t);
    if (max_len > 0 && (int(a.size()) > max_len || int(b.size()) > max_len)) return false;
    ex.src.clear();
    ex.src.push_back(tag);
    ex.src.insert(ex.src.end(), a.begin(), a.end());
    ex.src.push_back(text::kSpEos);
    ex.tgt.assign(b.begin(), b.end());
    ex.tgt.push_back(text::kSpEos);
    return true;
}

/// Source ids of a sentence to translate into tgt_lang.
inline std::vector<int32_t> encode_source(const text::SentencePiece& sp, const std::string& tgt_lang, const std::string& s) {
    const int tag = sp.piece_id(lang_tag(tgt_lang));
    MOEKD_CHECK(tag >= 0, "tsjt: the tokenizer has no tag ", lang_tag(tgt_lang), " (was it trained for this language?)");
    std::vector<int32_t> out{tag};
    for (int id : sp.encode(s)) out.push_back(id);
    out.push_back(text::kSpEos);
    return out;
}

/// All directions (xx->en and en->xx for each language) and their training examples.
/// test_max_len > 0 keeps only test pairs whose source has at most that many pieces.
inline std::vector<Direction> make_directions(const std::vector<LangPair>& corpus, const text::SentencePiece& sp,
                                              int max_len, std::vector<Example>& train, int64_t& skipped_long,
                                              int test_max_len = 0) {
    std::vector<Direction> dirs;
    skipped_long = 0;
    for (const LangPair& p : corpus) {
        for (int back = 0; back < 2; ++back) {
            Direction d;
            d.src_lang = back ? "en" : p.lang;
            d.tgt_lang = back ? p.lang : "en";
            const auto& ts = back ? p.test.tgt : p.test.src;
            const auto& tr = back ? p.test.src : p.test.tgt;
            for (size_t i = 0; i < ts.size(); ++i) {
                if (test_max_len > 0 && int(sp.encode(ts[i]).size()) > test_max_len) continue;
                d.test_src.push_back(ts[i]);
                d.test_ref.push_back(tr[i]);
            }
            MOEKD_CHECK(!d.test_src.empty(), "tsjt: direction ", d.name(), " has no test sentence",
                        test_max_len > 0 ? " within --test-max-len" : "");
            const int tag = sp.piece_id(lang_tag(d.tgt_lang));
            MOEKD_CHECK(tag >= 0, "tsjt: the tokenizer has no tag ", lang_tag(d.tgt_lang));
            Example ex;
            ex.dir = int(dirs.size());
            for (size_t i = 0; i < p.train.size(); ++i) {
                const std::string& s = back ? p.train.tgt[i] : p.train.src[i];
                const std::string& t = back ? p.train.src[i] : p.train.tgt[i];
                if (encode_pair(sp, tag, s, t, max_len, ex)) train.push_back(ex);
                else ++skipped_long;
            }
            dirs.push_back(std::move(d));
        }
    }
    return dirs;
}

}  // namespace tsjt
