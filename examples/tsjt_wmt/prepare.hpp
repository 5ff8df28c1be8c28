// prepare.hpp — the data of a training run: the corpus (a WMT-style directory, or the built-in one
// built from the gettext catalogs), its limits (--max-train, then --train-pairs in proportion to
// each language's corpus), the joint tokenizer and the id sequences of both directions.
// Rank 0 reads (or builds in memory) the corpus, checks its data configuration against what OUT
// holds, trains or reuses the tokenizer, and only then writes anything (the built corpus, the
// tokenizer); under mpirun the other ranks then read what it wrote.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <moekd/dist/collective.hpp>

#include "cli.hpp"
#include "data.hpp"
#include "tokenizer.hpp"

namespace tsjt {

struct Prepared {
    std::unique_ptr<text::SentencePiece> sp;
    std::string spm, data_cfg;           // the tokenizer file; the data part of the checked configuration
    std::vector<Direction> dirs;         // X->en and en->X of every language, with their test sets
    std::vector<Example> train_set;      // every direction's training pairs
};

inline Prepared prepare_data(const Options& o, dist::Communicator& comm, const std::vector<std::string>& langs,
                             const std::vector<Mode>& modes) {
    namespace fs = std::filesystem;
    std::vector<LangPair> corpus;
    CatalogCorpus built;
    const std::string corpus_dir = (fs::path(o.out) / "corpus").string();
    if (!o.data_dir.empty()) corpus = read_corpus_dir(o.data_dir, langs);
    else if ((comm.rank() == 0)) {
        built = build_catalog_corpus(o.catalogs, langs, corpus_dir, 0.01, 0.01);
        corpus = built.pairs;
    }
    auto apply_limits = [&](bool print) {
        if (print)
            std::printf("corpus%s: %-4s %8s %6s %6s\n", o.data_dir.empty() ? "" : (" " + o.data_dir).c_str(), "lang",
                        "train", "valid", "test");
        std::vector<size_t> full, capped;
        for (LangPair& p : corpus) {
            full.push_back(p.train.size());
            limit(p.train, o.max_train);
            capped.push_back(p.train.size());
        }
        const std::vector<size_t> keep = proportional_counts(capped, o.train_pairs);
        for (size_t i = 0; i < corpus.size(); ++i) {
            LangPair& p = corpus[i];
            MOEKD_CHECK(keep[i] > 0 || capped[i] == 0, "tsjt_wmt: --train-pairs ", o.train_pairs, " leaves language '",
                        p.lang, "' (", capped[i], " pairs) no training pair; raise --train-pairs");
            limit(p.train, keep[i]);
            MOEKD_CHECK(!p.test.src.empty(), "tsjt_wmt: language '", p.lang, "' has no test sentences");
            if (print)
                std::printf("        %-4s %8zu %6zu %6zu%s\n", p.lang.c_str(), p.train.size(), p.valid.size(),
                            p.test.size(),
                            full[i] > p.train.size() ? (" (of " + std::to_string(full[i]) +
                                                        (capped[i] > keep[i] ? ", --train-pairs)" : ", --max-train)")).c_str() : "");
        }
    };
    std::string spm, data_cfg;  // rank 0 decides them; the other ranks get them below
    if ((comm.rank() == 0)) {
        const std::string dcfg = data_config(corpus, o.max_train, o.train_pairs, o.max_len, o.vocab, o.spm_type);  // hashes: before limits
        apply_limits(true);
        std::tie(spm, data_cfg) = prepare_tokenizer(o.out, corpus, dcfg, o.vocab, o.spm_type, modes);
        if (o.data_dir.empty()) write_corpus_files(built.files);
    }
    if (comm.size() > 1) {  // after rank 0's checks and writes
        const auto got = dist::all_gather_strings(comm, {spm + "\n" + data_cfg}).front();
        spm = got.substr(0, got.find('\n'));
        data_cfg = got.substr(got.find('\n') + 1);
        if (!(comm.rank() == 0)) {
            if (o.data_dir.empty()) corpus = read_corpus_dir(corpus_dir, langs);
            apply_limits(false);
        }
    }
    Prepared out;
    out.sp = std::make_unique<text::SentencePiece>(text::SentencePiece::load(spm));
    const text::SentencePiece& sp = *out.sp;
    std::vector<Example>& train_set = out.train_set;
    int64_t skipped = 0;
    out.dirs = make_directions(corpus, sp, o.max_len, train_set, skipped, o.test_max_len);
    const std::vector<Direction>& dirs = out.dirs;
    int64_t pieces = 0;
    for (const Example& e : train_set) pieces += int64_t(e.tgt.size());
    std::printf("tokenizer: %s, %d pieces; %zu training examples in %zu directions (%lld target tokens, "
                "%lld longer than %d pieces dropped)\n", spm.c_str(), sp.vocab_size(), train_set.size(),
                dirs.size(), (long long)pieces, (long long)skipped, o.max_len);

    out.spm = spm;
    out.data_cfg = data_cfg;
    return out;
}

}  // namespace tsjt
