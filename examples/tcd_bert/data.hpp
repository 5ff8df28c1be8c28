// data.hpp — the text side of the TCD example: the pre-training corpus (WordNet glosses and usage
// examples and fortunes unpacked by scripts/build_tcd_corpus.sh, or the user's text files), the
// SentencePiece vocabulary trained on it, packing into contiguous segments of up to 128 tokens,
// the downstream tasks (built-in GLUE-format tasks or real GLUE directories) and their
// tokenisation as [CLS] a [SEP] (b [SEP]). The vocabulary's training text is written through
// io::write_text_atomic (checked: a nearly full disk is an error, never a truncated sample).
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "english.hpp"
#include <moekd/data/glue.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/text/sentencepiece.hpp>

namespace tcdb {

using namespace moekd;

/// Token ids: SentencePiece's fixed specials (pad 0, unk 1, bos 2, eos 3) serve as [PAD], [UNK],
/// [CLS], [SEP]; "[MASK]" is the first user-defined symbol.
constexpr int64_t kPad = 0, kUnk = 1, kCls = 2, kSep = 3, kMask = 4;

struct Corpus {
    std::vector<std::string> train, heldout;  // pre-training lines (disjoint, split by a line hash)
    std::vector<english::Synset> wordnet;        // empty with --corpus
    std::vector<english::Fortune> fortunes;
    std::string source;                       // what was read, for the log
};

/// The unpacked package tree of build_tcd_corpus.sh: <dir>/root if present, else <dir> itself.
inline std::string corpus_root(const std::string& dir) {
    return std::filesystem::is_directory(dir + "/root/usr/share/wordnet") ? dir + "/root" : dir;
}

/// Reads WordNet + fortunes from the script's output, or the user's text files (then built-in
/// tasks other than those the user provides via --glue-dir are unavailable).
inline Corpus load_corpus(const std::string& data_dir, const std::vector<std::string>& files, double heldout_frac,
                          uint64_t seed) {
    Corpus c;
    std::vector<std::string> lines;
    if (!files.empty()) {
        for (const auto& f : files) {
            auto v = english::read_text_lines(f);  // UTF-8 checked; an empty file is an error
            lines.insert(lines.end(), v.begin(), v.end());
        }
        c.source = std::to_string(files.size()) + " text file(s)";
    } else {
        const std::string root = corpus_root(data_dir);
        c.wordnet = english::read_wordnet(root + "/usr/share/wordnet");
        c.fortunes = english::read_fortunes(root + "/usr/share/games/fortunes");
        lines = english::pretraining_lines(c.wordnet, c.fortunes);
        c.source = root + " (" + std::to_string(c.wordnet.size()) + " WordNet synsets, " +
                   std::to_string(c.fortunes.size()) + " fortunes)";
    }
    auto split = english::split_lines(lines, heldout_frac, seed);
    MOEKD_CHECK(!split.train.empty() && !split.heldout.empty(), "corpus: ", lines.size(),
                " lines are too few to split into training and held-out text; HINT: give more text");
    c.train = std::move(split.train);
    c.heldout = std::move(split.heldout);
    return c;
}

/// Trains (or, if out_dir/spm.model exists and `reuse`, loads) the SentencePiece vocabulary on
/// up to `sample_lines` evenly spaced training lines.
inline text::SentencePiece train_vocab(const Corpus& c, const std::string& out_dir, int vocab, size_t sample_lines,
                                       bool reuse) {
    const std::string prefix = out_dir + "/spm";
    if (reuse && std::filesystem::is_regular_file(prefix + ".model")) return text::SentencePiece::load(prefix + ".model");
    const std::string txt = out_dir + "/spm_train.txt";
    {
        std::string sample;
        const size_t n = c.train.size(), k = std::min(n, sample_lines);
        for (size_t i = 0; i < k; ++i) (sample += c.train[i * n / k]) += "\n";
        io::write_text_atomic(txt, sample);  // every write, the fsync and the close checked
    }
    text::SentencePieceOptions o;
    o.vocab_size = vocab;
    o.model_type = "unigram";
    o.character_coverage = 0.9995;
    o.normalization = "nmt_nfkc";
    o.user_defined_symbols = {"[MASK]"};
    text::train_sentencepiece({txt}, prefix, o);
    auto sp = text::SentencePiece::load(prefix + ".model");
    MOEKD_CHECK(sp.piece_id("[MASK]") == kMask, "sentencepiece: [MASK] got id ", sp.piece_id("[MASK]"),
                ", expected ", kMask);
    return sp;
}

/// Fisher-Yates shuffle drawn from gen (the data order of every loop).
template <class V>
void shuffle(std::vector<V>& v, Generator& gen) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(gen.randint(0, int64_t(i)))]);
}

inline std::vector<int64_t> encode(const text::SentencePiece& sp, const std::string& s) {
    const auto v = sp.encode(s);
    return std::vector<int64_t>(v.begin(), v.end());
}

/// Contiguous segments of exactly seg_len tokens, [CLS] + the token stream (lines in a seeded
/// random order, each followed by [SEP]) cut into pieces; at most max_segments (0: all).
inline std::vector<std::vector<int64_t>> pack_segments(const std::vector<std::string>& lines,
                                                      const text::SentencePiece& sp, int64_t seg_len,
                                                      size_t max_segments, uint64_t seed) {
    MOEKD_CHECK(seg_len >= 8 && seg_len <= 512, "segment length ", seg_len, " must be in [8, 512]");
    std::vector<size_t> order(lines.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    Generator g(seed);
    shuffle(order, g);
    std::vector<std::vector<int64_t>> out;
    std::vector<int64_t> cur{kCls};
    for (size_t i : order) {
        for (int64_t id : encode(sp, lines[i])) {
            cur.push_back(id);
            if (int64_t(cur.size()) == seg_len) {
                out.push_back(cur);
                cur.assign(1, kCls);
                if (max_segments && out.size() >= max_segments) return out;
            }
        }
        cur.push_back(kSep);
        if (int64_t(cur.size()) == seg_len) {
            out.push_back(cur);
            cur.assign(1, kCls);
            if (max_segments && out.size() >= max_segments) return out;
        }
    }
    return out;
}

// ---- downstream tasks ---------------------------------------------------------------------------
struct Task {
    data::GlueTaskInfo info;
    std::vector<data::GlueExample> train, dev;
    std::string source;
};

/// A real GLUE directory (train.tsv, dev.tsv) when glue_dir is set, else the built-in task built
/// from the corpus (and, if `write`, written to out_dir/tasks/<name>/{train,dev}.tsv, GLUE's layout).
inline Task load_task(const std::string& name, const std::string& glue_dir, const Corpus& c, const std::string& out_dir,
                      uint64_t seed, int64_t max_train, int64_t max_dev, bool write = true) {
    Task t;
    if (!glue_dir.empty()) {
        auto tr = data::read_glue_split(glue_dir, name, "train");
        auto dv = data::read_glue_split(glue_dir, name, "dev");
        t.info = tr.info;
        if (t.info.name == "FORTUNE") t.info.labels = dv.info.labels.size() > tr.info.labels.size() ? dv.info.labels : tr.info.labels;
        t.train = std::move(tr.examples), t.dev = std::move(dv.examples);
        if (max_train >= 0 && int64_t(t.train.size()) > max_train) t.train.resize(size_t(max_train));
        if (max_dev >= 0 && int64_t(t.dev.size()) > max_dev) t.dev.resize(size_t(max_dev));
        t.source = glue_dir;
        return t;
    }
    MOEKD_CHECK(!c.wordnet.empty() || !c.fortunes.empty(), "task ", name, ": built-in tasks need the WordNet/fortune ",
                "corpus; with --corpus give real task files with --glue-dir DIR --task NAME");
    auto b = english::build_task(name, c.wordnet, c.fortunes, seed, max_train, max_dev);
    t.info = b.info, t.train = std::move(b.train), t.dev = std::move(b.dev);
    const std::string dir = out_dir + "/tasks/" + t.info.name;
    t.source = "built-in, written to " + dir;
    if (!write) return t;  // another rank writes it (mpirun)
    std::filesystem::create_directories(dir);
    data::write_glue_tsv(dir + "/train.tsv", t.info, t.train);
    data::write_glue_tsv(dir + "/dev.tsv", t.info, t.dev);
    return t;
}

/// One tokenised example: [CLS] a [SEP] (b [SEP]), token types 0 / 1, cut to max_len (the longer
/// side is trimmed first, as HF's "longest_first").
struct Encoded {
    std::vector<int64_t> ids, types;
};
inline Encoded encode_example(const text::SentencePiece& sp, const data::GlueExample& e, bool pair, int64_t max_len) {
    std::vector<int64_t> a = encode(sp, e.text_a), b = pair ? encode(sp, e.text_b) : std::vector<int64_t>{};
    const int64_t room = max_len - (pair ? 3 : 2);
    while (int64_t(a.size() + b.size()) > room) (a.size() >= b.size() ? a : b).pop_back();
    Encoded out;
    out.ids.push_back(kCls);
    out.ids.insert(out.ids.end(), a.begin(), a.end());
    out.ids.push_back(kSep);
    out.types.assign(out.ids.size(), 0);
    if (pair) {
        out.ids.insert(out.ids.end(), b.begin(), b.end());
        out.ids.push_back(kSep);
        out.types.resize(out.ids.size(), 1);
    }
    return out;
}

}  // namespace tcdb
