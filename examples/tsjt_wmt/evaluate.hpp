// evaluate.hpp — the test-set evaluation of a trained pair: corpus BLEU of both submodels on each
// direction's test split (the first `limit` sentences), the hypotheses written to
// RUN/hyp.<moe|dense>.<src>-<tgt> by rank 0. Under mpirun each rank translates a contiguous share
// and every rank gets all hypotheses back. Decoding that meets non-finite scores (a model with NaN
// weights) is an error naming the run and the model, on every rank, not empty translations.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <moekd/dist/collective.hpp>
#include <moekd/dist/data_parallel.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/text/bleu.hpp>

#include "run_config.hpp"
#include "translate.hpp"

namespace tsjt {

inline void evaluate_pair(const Sub& moe, const Sub& dense, const std::vector<Direction>& dirs,
                          const text::SentencePiece& sp, size_t limit, int beam, double lenpen,
                          dist::Communicator& comm, const std::string& run_dir, RunResult& res) {
    const int rank = comm.rank(), ranks = comm.size();
    for (const Direction& d : dirs) {
        const size_t n = std::min(limit, d.test_src.size());
        const std::vector<std::string> src(d.test_src.begin(), d.test_src.begin() + n);
        const std::vector<std::string> ref(d.test_ref.begin(), d.test_ref.begin() + n);
        const dist::Range mine = dist::shard_range(int64_t(n), rank, ranks);
        const std::vector<std::string> my_src(src.begin() + mine.begin, src.begin() + mine.end);
        for (int which = 0; which < 2; ++which) {
            std::vector<std::string> mine_hyp;
            std::string failed;  // non-finite scores on any rank stop every rank
            try {
                if (!my_src.empty()) mine_hyp = translate(which ? dense : moe, sp, d.tgt_lang, my_src, beam, lenpen);
            } catch (const NonFiniteLogits& e) {
                failed = msg("tsjt: evaluating run '", run_dir, "': its ", which ? "dense/device" : "MoE",
                             " model gives non-finite scores on ", d.name(), " (", e.what(),
                             "): its weights are broken (a diverged run?)");
                if (ranks == 1) throw Error(failed);
            } catch (const Error& e) {  // e.g. the MoE router's check of its logits
                failed = msg("tsjt: evaluating run '", run_dir, "': its ", which ? "dense/device" : "MoE",
                             " model failed on ", d.name(), ": ", e.what());
                if (ranks == 1) throw Error(failed);
            }
            if (ranks > 1) dist::stop_together(comm, failed);
            const std::vector<std::string> hyp = dist::all_gather_strings(comm, mine_hyp);
            (which ? res.bleu_dense : res.bleu_moe).push_back(text::corpus_bleu(hyp, ref).score);
            if (rank != 0) continue;
            std::string text;
            for (const auto& h : hyp) text += h + '\n';
            io::write_text_atomic(
                (std::filesystem::path(run_dir) / ("hyp." + std::string(which ? "dense." : "moe.") + d.name())).string(),
                text);
        }
    }
}

}  // namespace tsjt
