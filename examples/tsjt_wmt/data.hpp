// data.hpp — the translation example's data path: read a WMT-style corpus (or build the built-in
// one from the gettext catalogs installed on this machine), train/load the joint SentencePiece
// model with target-language tags, turn sentence pairs into id sequences for both directions
// (X->en and en->X); batch.hpp cuts them into batches.
//
// Nothing saved is overwritten before it is known to belong to the same run: the catalog corpus
// is built in memory and written (write_corpus_files) only once the caller has checked it, and
// the tokenizer (tokenizer.hpp) is trained under a temporary name that the caller installs
// after its checks. data_config() is the part of a run's checked configuration
// that describes its data (a hash of the corpus files, the data flags); config_diff() names what
// differs between two such key=value configurations. Every write is checked (io::atomic_file).
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
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/read_file.hpp>
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

/// The built-in corpus: the language pairs (parsed exactly as a --data directory would be) and
/// the files to write under out_dir (path, bytes), not yet written.
struct CatalogCorpus {
    std::vector<LangPair> pairs;
    std::vector<std::pair<std::string, std::string>> files;
};

/// Builds the corpus from the gettext catalogs under `root` (e.g. /usr/share/locale, or the
/// tree scripts/build_gettext_corpus.sh unpacks) with the project's cleaning and hash split, as
/// the bytes of out_dir/<xx>-en/{train,valid,test}.{xx,en}, parsed like any --data directory
/// (nothing is written: write_corpus_files). Prints the statistics per language.
inline CatalogCorpus build_catalog_corpus(const std::string& root, const std::vector<std::string>& langs,
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
    CatalogCorpus out;
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
        LangPair p{l, {}, {}, {}};
        for (data::Split s : {data::Split::train, data::Split::valid, data::Split::test}) {
            auto bytes = [](const std::vector<std::string>& lines) {
                std::string b;
                for (const auto& x : lines) b += x + '\n';
                return b;
            };
            const std::string sp = (d / (std::string(data::split_name(s)) + "." + l)).string();
            const std::string tp = (d / (std::string(data::split_name(s)) + ".en")).string();
            std::string sb = bytes(corpus.translation(s)), tb = bytes(corpus.english(s));
            (s == data::Split::train ? p.train : s == data::Split::valid ? p.valid : p.test) =
                data::parse_parallel(sb, sp, tb, tp);
            out.files.emplace_back(sp, std::move(sb));
            out.files.emplace_back(tp, std::move(tb));
        }
        out.pairs.push_back(std::move(p));
        std::printf("  %-4s %5lld %8lld | %7zu %6zu %6zu\n", l.c_str(), (long long)corpus.catalogs(),
                    (long long)corpus.entries(), corpus.english(data::Split::train).size(),
                    corpus.english(data::Split::valid).size(), corpus.english(data::Split::test).size());
    }
    return out;
}

/// Writes the files of build_catalog_corpus (each atomically, every write checked).
inline void write_corpus_files(const std::vector<std::pair<std::string, std::string>>& files) {
    for (const auto& [path, bytes] : files) {
        std::filesystem::create_directories(std::filesystem::path(path).parent_path());
        io::write_text_atomic(path, bytes);
    }
}

/// FNV-1a of the corpus files read (every split of every language, as read: before --max-train).
inline std::string corpus_hash(const std::vector<LangPair>& corpus) {
    uint64_t h = moekd::fnv1a64("tsjt-corpus-1");
    for (const LangPair& p : corpus) {
        h = moekd::fnv1a64(p.lang, h);
        for (const data::ParallelText* t : {&p.train, &p.valid, &p.test})
            h = moekd::fnv1a64(std::string_view(reinterpret_cast<const char*>(&t->hash), sizeof t->hash), h);
    }
    char b[24];
    std::snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
    return b;
}

/// "k1=v1 k2=v2" -> {k1: v1, k2: v2} (values hold no spaces).
inline std::map<std::string, std::string> parse_config(const std::string& s) {
    std::map<std::string, std::string> m;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') ++i;
        size_t j = s.find(' ', i);
        if (j == std::string::npos) j = s.size();
        if (j > i) {
            const std::string item = s.substr(i, j - i);
            const size_t eq = item.find('=');
            m[item.substr(0, eq)] = eq == std::string::npos ? "" : item.substr(eq + 1);
        }
        i = j;
    }
    return m;
}

/// What differs between a recorded configuration and this run's, over the keys of `now` (and,
/// when all_keys, the recorded keys this run does not have), e.g. "--max-train: 400 before, 300
/// now"; "" if none.
inline std::string config_diff(const std::string& recorded, const std::string& now, bool all_keys = true) {
    const auto a = parse_config(recorded), b = parse_config(now);
    std::string out;
    auto name = [](const std::string& k) {
        return k == "corpus" ? std::string("the corpus (FNV-1a of the files read)")
               : k == "spm.model" ? std::string("the tokenizer (a hash of spm.model's pieces and scores)")
                                  : k;
    };
    for (const auto& [k, v] : b) {
        auto it = a.find(k);
        const std::string was = it == a.end() ? "(not recorded)" : it->second;
        if (was != v) out += (out.empty() ? "" : "; ") + name(k) + ": " + was + " before, " + v + " now";
    }
    for (const auto& [k, v] : a)
        if (all_keys && !b.count(k)) out += (out.empty() ? "" : "; ") + name(k) + ": " + v + " before, (none) now";
    return out;
}

/// The data part of a run's checked configuration: languages, corpus hash, data flags.
inline std::string data_config(const std::vector<LangPair>& corpus, size_t max_train, size_t train_pairs, int max_len,
                               int vocab, const std::string& spm_type) {
    std::string langs;
    for (const LangPair& p : corpus) langs += (langs.empty() ? "" : ",") + p.lang;
    return "--langs=" + langs + " corpus=" + corpus_hash(corpus) + " --max-train=" + std::to_string(max_train) +
           " --train-pairs=" + std::to_string(train_pairs) + " --max-len=" + std::to_string(max_len) +
           " --vocab=" + std::to_string(vocab) + " --spm-type=" + spm_type;
}

/// How many of each language's pairs to keep so that `total` pairs are drawn from the merged
/// corpora in proportion to their sizes (the paper merges all parallel corpora into one training
/// set, l.98; a language with more data gets more of the budget): n_l = total * size_l / sum,
/// rounded by largest remainder so that the counts add up to `total` exactly (ties: the earlier
/// language). total == 0 or total >= sum: every pair.
inline std::vector<size_t> proportional_counts(const std::vector<size_t>& sizes, size_t total) {
    size_t sum = 0;
    for (size_t s : sizes) sum += s;
    if (total == 0 || total >= sum) return sizes;
    std::vector<size_t> n(sizes.size());
    std::vector<std::pair<double, size_t>> rem;  // (fractional part, index)
    size_t given = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
        const double exact = double(total) * double(sizes[i]) / double(sum);
        n[i] = size_t(exact);
        given += n[i];
        rem.emplace_back(exact - double(n[i]), i);
    }
    std::stable_sort(rem.begin(), rem.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t k = 0; given < total; ++k, ++given) ++n[rem[k % rem.size()].second];
    return n;
}

/// Keeps the first n pairs (the split is already a deterministic hash order).
inline void limit(data::ParallelText& t, size_t n) {
    if (n == 0 || t.size() <= n) return;
    t.src.resize(n);
    t.tgt.resize(n);
}

inline std::string lang_tag(const std::string& lang) { return "<2" + lang + ">"; }

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
