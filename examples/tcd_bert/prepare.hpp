// prepare.hpp — the data of a tcd_bert run: the pre-training corpus (WordNet + fortunes, built on
// first use, or --corpus files), the SentencePiece vocabulary, the pre-training and held-out
// segments, the downstream task (built-in or GLUE) and the out-of-distribution text of the
// paper's Table 4. Under mpirun rank 0 makes the folders, corpus, vocabulary and task files; the
// others wait for it (on_rank0) and read what it wrote.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <moekd/dist/collective.hpp>

#include "cli.hpp"
#include "data.hpp"
#include "finetune.hpp"

namespace tcdb {

/// Runs `fn` on every rank; an error on any of them is raised on every rank together (printed once,
/// not once per rank). One process: just fn().
inline void on_every_rank(dist::Communicator& comm, const std::function<void()>& fn) {
    if (comm.size() == 1) return fn();
    std::string err;
    try {
        fn();
    } catch (const std::exception& e) {
        err = e.what();
    }
    dist::stop_together(comm, err);
}

/// Runs `fn` on rank 0 alone, then every rank waits for it; an error there (or anywhere in `fn`)
/// is raised on every rank together. One process: just fn().
inline void on_rank0(dist::Communicator& comm, const std::function<void()>& fn) {
    on_every_rank(comm, [&] {
        if (comm.rank() == 0) fn();
    });
}

/// Finds the corpus; for the default location, unpacks it with scripts/build_tcd_corpus.sh first.
inline std::string ensure_corpus(const std::string& dir, bool is_default) {
    const std::string root = corpus_root(dir);
    if (std::filesystem::is_directory(root + "/usr/share/wordnet")) return dir;
    const std::string script = std::string(TCD_SOURCE_DIR) + "/scripts/build_tcd_corpus.sh";
    const std::string cmd = "bash '" + script + "' '" + dir + "'";
    if (is_default && std::filesystem::is_regular_file(script)) {
        std::printf("corpus not found in %s; building it: %s\n", dir.c_str(), cmd.c_str());
        std::fflush(stdout);
        MOEKD_CHECK(std::system(cmd.c_str()) == 0, "building the corpus failed; run it yourself: ", cmd);
        if (std::filesystem::is_directory(corpus_root(dir) + "/usr/share/wordnet")) return dir;
    }
    MOEKD_CHECK(false, "corpus not found: '", dir, "' holds no usr/share/wordnet (nor root/usr/share/wordnet). ",
                "HINT: build it with: ", cmd, "  (or give your own text with --corpus FILE)");
    return dir;
}

struct Prepared {
    Task task;
    Corpus corpus;
    std::optional<text::SentencePiece> sp;
    std::vector<std::vector<int64_t>> train_segs, held_segs;  // pre-training / held-out segments
    EncodedTask etask;                                        // the task, tokenized
    std::vector<std::string> ood_domains;                     // Table 4's domains found here
    std::map<std::string, std::vector<std::vector<int64_t>>> ood;
};

/// default_data: --data was not given (the default corpus folder may be built).
inline Prepared prepare(Options& o, dist::Communicator& comm, bool default_data) {
    // under mpirun rank 0 makes the folders, corpus, vocabulary and task files; the others wait
    on_rank0(comm, [&] { std::filesystem::create_directories(o.out_dir + "/ckpt"); });
    (void)data::glue_task_info(o.task_name);  // an unknown task name fails here, before any work
    Prepared p;
    Task& task = p.task;
    if (!o.glue_dir.empty()) task = load_task(o.task_name, o.glue_dir, Corpus{}, o.out_dir, o.seed, o.max_train, o.max_dev);
    if (o.corpus_files.empty()) {
        on_rank0(comm, [&] { o.data_dir = ensure_corpus(o.data_dir, default_data); });
        if (comm.rank() != 0) o.data_dir = ensure_corpus(o.data_dir, false);  // rank 0 has built it
    }
    p.corpus = load_corpus(o.data_dir, o.corpus_files, 0.02, o.seed);
    const Corpus& corpus = p.corpus;
    std::printf("tcd_bert: corpus %s: %zu training / %zu held-out lines\n", corpus.source.c_str(),
                corpus.train.size(), corpus.heldout.size());
    std::fflush(stdout);
    auto t0 = Clock::now();
    std::optional<text::SentencePiece>& sp0 = p.sp;
    if (!o.finetune_from.empty()) {  // the vocabulary the checkpoints were pre-trained with, read on every rank
        const std::string model = o.finetune_from + "/spm.model";
        MOEKD_CHECK(std::filesystem::is_regular_file(model), "--finetune-from: no vocabulary '", model,
                    "' (the SentencePiece model the checkpoints were pre-trained with)");
        sp0 = text::SentencePiece::load(model);
    } else {
        on_rank0(comm, [&] { sp0 = train_vocab(corpus, o.out_dir, int(o.mc.vocab), size_t(o.spm_lines), false); });
        if (comm.rank() != 0) sp0 = train_vocab(corpus, o.out_dir, int(o.mc.vocab), size_t(o.spm_lines), true);  // rank 0's file
    }
    const text::SentencePiece& sp = *sp0;
    o.mc.vocab = sp.vocab_size();
    p.train_segs = pack_segments(corpus.train, sp, o.seq_len, size_t(o.max_segments), o.seed);
    p.held_segs = pack_segments(corpus.heldout, sp, o.seq_len, size_t(o.heldout_segments), o.seed + 1);
    const auto& train_segs = p.train_segs;
    const auto& held_segs = p.held_segs;
    MOEKD_CHECK(!held_segs.empty(), "the held-out text is shorter than one segment of ", o.seq_len, " tokens");
    std::printf("vocabulary: %lld SentencePiece pieces (%.1f s); pre-training %zu segments of %lld tokens per epoch, "
                "held-out %zu\n", (long long)o.mc.vocab, seconds_since(t0), train_segs.size(), (long long)o.seq_len,
                held_segs.size());
    if (o.glue_dir.empty()) task = load_task(o.task_name, o.glue_dir, corpus, o.out_dir, o.seed, o.max_train, o.max_dev, comm.rank() == 0);
    if (comm.size() > 1)
        std::printf("data parallel: %d ranks (%s), %lld pre-training segments per step split over them; "
                    "fine-tuning and evaluation on every rank alike\n",
                    comm.size(), comm.backend().c_str(), (long long)o.po.batch);
    p.etask = encode_task(task, sp, o.fo.max_len);
    std::printf("task %s (%s, %s): %zu train / %zu dev examples, %s\n", task.info.name.c_str(),
                task.info.pair ? "pairs" : "single sentences",
                task.info.regression ? "regression" : (std::to_string(task.info.num_labels()) + " classes").c_str(),
                task.train.size(), task.dev.size(), task.source.c_str());
    // out-of-distribution text (Table 4)
    std::vector<std::string>& ood_domains = p.ood_domains;
    auto& ood = p.ood;
    if (o.ood_segments > 0 && o.corpus_files.empty()) {
        const std::string root = corpus_root(o.data_dir);
        const std::vector<std::pair<std::string, std::string>> src{
            {"code", root + "/usr/include"}, {"ui", root + "/usr/share/locale"}, {"prose", root + "/usr/share/doc/git-doc"}};
        for (auto& [dom, path] : src) {
            if (!std::filesystem::exists(path)) continue;
            const auto text = english::read_ood_text(path, dom, size_t(o.ood_segments) * 8);
            auto segs = pack_segments(text, sp, o.seq_len, size_t(o.ood_segments), o.seed + 2);
            if (segs.empty()) continue;
            ood_domains.push_back(dom);
            ood[dom] = std::move(segs);
        }
    }
    return p;
}

}  // namespace tcdb
