// tsjt_wmt — one-stop training of an MoE translation model and a dense (shared-architecture) or
// small device (indep) model at once (TSJT), with the Single and ConstJT baselines, on real
// multilingual data; BLEU with sacreBLEU's default algorithm.
//
//   tsjt_wmt                                  the built-in default: fr, fi, hi <-> en from the
//                                             gettext catalogs installed here, Single vs ConstJT
//                                             vs TSJT, the BLEU table (about 10 min on 2 cores)
//   tsjt_wmt --data DIR --langs cs,de,...     a WMT-style corpus (DIR/<xx>-en/{train,valid,test}.*),
//                                             e.g. scripts/build_gettext_corpus.sh's output
//   tsjt_wmt --device cuda                    the same runs with both models on the GPU (same flags,
//                                             same outputs; without a GPU: an error saying why)
//   tsjt_wmt score REF HYP                    corpus BLEU of two text files (sacreBLEU default)
//   tsjt_wmt translate --model DIR --to fr    translate stdin with an extracted submodel
//   mpirun -np 2 tsjt_wmt --max-tokens 600    data parallel (run.hpp): each update takes 2 x
//                                             --update-freq batches, one rank each; rank 0 alone
//                                             prints and writes OUT (OUT must be a shared folder)
//   mpirun -np 2 tsjt_wmt --expert-parallel   the same, with each MoE layer's experts split
//                                             over the ranks (run.hpp; --experts a multiple of 2)
//
// Outputs of a training run: OUT/results.{md,json} (BLEU table), OUT/<mode>/log.jsonl (every
// logged update), OUT/{ce_moe,ce_dense,kl}.svg (the paper's Figures 3 and 4, figures.hpp),
// OUT/<mode>/ckpt (resumable, bit-exact), OUT/<mode>/{moe,dense} (extracted submodels).
// Method, flags and measured numbers: docs/tsjt.md.
//
// A rerun with the same --out resumes each run from its newest checkpoint only when everything
// that changes what a step computes is the same (the checked configuration: model and training
// flags, the corpus files' hash, the data flags, the tokenizer's hash; run.hpp, data.hpp). The
// data part is checked first, against OUT/tokenizer/data-config.txt and the runs' checkpoints,
// before anything under OUT is written: a mismatch names what differs and changes nothing; a
// match reuses the saved tokenizer. Every numeric flag is range-checked (an error names the flag
// and the value); every output write is checked (io::atomic_file), so a full disk or an output
// path that is not a regular file is an error naming the file, never "Results in ..." printed.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <tuple>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/read_file.hpp>

#include <moekd/dist/init.hpp>
#if defined(MOEKD_CUDA) && MOEKD_CUDA
#include <moekd/cuda.hpp>  // the CUDA backend (or its emulation): fills the ops' device table
#endif

#include "data.hpp"
#include "figures.hpp"
#include "translate.hpp"
#include "run.hpp"
#include "submodel.hpp"
#include "cli.hpp"
#include "report.hpp"
#include "prepare.hpp"

using namespace tsjt;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear at once in logs, too
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);  // MpiComm under mpirun, else one process
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tsjt_wmt: error: %s\n", e.what());
        return 1;
    }
    const bool main_rank = comm->rank() == 0;
    CLI::App app{"tsjt_wmt: one-stop training of an MoE and a dense/device translation model (TSJT)"};
    Options o;
    const Subcommands sc = add_flags(app, o);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }
    if (!main_rank && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 alone prints
    o.rc.device = o.device_name == "cuda" ? Device::CUDA : Device::CPU;
    o.rc.precision = parse_precision(o.precision);
    if (o.rc.precision == Precision::bf16) {
        const Bf16Support s = bf16_support(o.rc.device);  // oneDNN on the CPU, cuBLAS on a GPU
        if (!s.ok) o.rc.precision = Precision::fp32;
        std::printf(s.ok ? "precision: bf16 (%s)\n" : "precision: bf16 asked for, but %s: training in fp32\n", s.why.c_str());
    }
    if (o.rc.device == Device::CUDA) {  // refused before any data is read: say why in one line
#if defined(MOEKD_CUDA) && MOEKD_CUDA
        if (cuda::device_count() == 0) {
            if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
            return 1;
        }
        if (comm->size() > 1 || o.rc.expert_parallel) {
            if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda runs as one process (data and expert parallel over NCCL are not wired into tsjt_wmt yet)\n");
            return 1;
        }
#else
        if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
        return 1;
#endif
    }

    try {
        if (sc.score->parsed()) return cmd_score(o.ref_path, o.hyp_path);
        if (sc.translate->parsed()) return cmd_translate(o.model_dir, o.to_lang, o.beam, o.lenpen, !o.no_eval_dropless, o.reencode);

        const auto t_start = std::chrono::steady_clock::now();
        const std::vector<std::string> langs = parse_langs(o.langs_s);
        std::vector<Mode> modes;
        for (const std::string& m : split_list(o.modes_s)) modes.push_back(parse_mode(m));
        o.rc.t_sep = o.t_sep_s == "auto" ? -1.0 : std::strtod(o.t_sep_s.c_str(), nullptr);  // checked by its validator
        MOEKD_CHECK(o.rc.moe.d_model % o.rc.moe.heads == 0, "tsjt_wmt: --d-model ", o.rc.moe.d_model,
                    " is not divisible by --heads ", o.rc.moe.heads);
        o.rc.indep = o.arch == "indep";
        MOEKD_CHECK(!o.rc.indep || o.device_d % o.rc.moe.heads == 0, "tsjt_wmt: --device-d-model ", o.device_d,
                    " is not divisible by --heads ", o.rc.moe.heads);
        o.rc.moe.dec_layers = o.rc.moe.enc_layers;
        o.rc.progress = !o.no_progress;
        o.rc.comm = comm;
        if (main_rank) fs::create_directories(o.out);

        const Prepared d = prepare_data(o, *comm, langs, modes);  // corpus, tokenizer, id sequences
        o.rc.data_config = d.data_cfg;
        const text::SentencePiece& sp = *d.sp;
        const std::string& spm = d.spm;
        const std::vector<Direction>& dirs = d.dirs;
        const std::vector<Example>& train_set = d.train_set;

        o.rc.moe.vocab = sp.vocab_size();
        o.rc.moe.pad = text::kSpPad;
        o.rc.moe.eval_dropless = !o.no_eval_dropless;
        o.rc.dense = o.rc.moe;
        o.rc.dense.experts = 0;
        if (o.rc.indep) {
            o.rc.dense.d_model = o.device_d;
            o.rc.dense.ffn_dim = o.device_ffn;
            o.rc.dense.enc_layers = o.rc.dense.dec_layers = o.device_layers;
        } else {
            o.rc.dense.enc_layers = o.rc.dense.dec_layers = o.dense_layers > 0 ? o.dense_layers : std::max<int64_t>(1, o.rc.moe.enc_layers / 2);
        }
        if (o.rc.max_steps == 0) {  // --max-epochs: updates per epoch as the trainer walks the batches
            const int64_t nb = int64_t(token_batches(train_set, o.rc.max_tokens).size());
            const int64_t per_update = int64_t(o.rc.update_freq) * comm->size();
            o.rc.max_steps = o.max_epochs * ((nb + per_update - 1) / per_update);
            std::printf("schedule: %lld epoch(s) of %lld batches = %lld updates\n", (long long)o.max_epochs, (long long)nb,
                        (long long)o.rc.max_steps);
        }

        // ---- runs
        std::vector<RunResult> results;
        for (Mode mode : modes) {
            RunConfig c = o.rc;
            c.mode = mode;
            c.dir = (fs::path(o.out) / mode_name(mode)).string();
            Run run(c);
            RunResult res;
            res.mode = mode_name(mode);
            res.precision = precision_name(c.precision);
            res.params_moe = run.params_moe();
            res.params_dense = run.params_dense();
            res.params_total = run.params_total();
            if (comm->size() > 1 && res.mode == mode_name(modes.front()))
                std::printf("data parallel: %d rank(s) (%s), %d batch(es) of at most %lld tokens per rank and update\n",
                            comm->size(), comm->backend().c_str(), o.rc.update_freq, (long long)o.rc.max_tokens);
            if (o.rc.expert_parallel && res.mode == mode_name(modes.front()))
                std::printf("expert parallel: %lld of the %lld experts of each MoE layer per rank\n",
                            (long long)(o.rc.moe.experts / comm->size()), (long long)o.rc.moe.experts);
            std::printf("run %s (%s): MoE %lld params, %s %lld params, %lld distinct in total\n", res.mode.c_str(),
                        o.rc.indep ? "indep" : "shared", (long long)res.params_moe, o.rc.indep ? "device" : "dense",
                        (long long)res.params_dense, (long long)res.params_total);
            run.train(train_set, res);
            run.evaluate(dirs, sp, o.test_limit > 0 ? size_t(o.test_limit) : std::numeric_limits<size_t>::max(), o.eval_beam, 1.0, res);
            run.extract(spm);
            if (res.updates_this_process > 0)
                std::printf("  %s: %lld updates in %.1f s, last ce moe %.3f dense %.3f kl %.3f%s\n", res.mode.c_str(),
                            (long long)res.updates_this_process, res.train_seconds, res.last_ce_moe, res.last_ce_dense,
                            res.last_kl,
                            res.switch_step >= 0 ? (", stage 2 from update " + std::to_string(res.switch_step)).c_str() : "");
            else
                std::printf("  %s: already trained (%lld updates, checkpoint in %s); evaluated only\n", res.mode.c_str(),
                            (long long)res.steps, c.dir.c_str());
            std::fflush(stdout);
            results.push_back(std::move(res));
        }
        write_results(main_rank, o.out, dirs, results, o.rc.indep);
        if (main_rank) {  // the logs are rank 0's
            std::vector<Curve> curves;
            for (const RunResult& r : results)
                curves.push_back(read_curve((fs::path(o.out) / r.mode / "log.jsonl").string(), r.mode, r.switch_step));
            const auto figs = write_figures(o.out, curves, o.rc.indep);
            std::printf("figures: %s, %s, %s\n", figs[0].c_str(), figs[1].c_str(), figs[2].c_str());
        }
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        const std::string which = (o.test_limit > 0 ? msg("the first ", o.test_limit) : std::string("all")) +
                                  " test sentences" +
                                  (o.test_max_len > 0 ? msg(" of at most ", o.test_max_len, " source pieces") : std::string());
        std::printf("\nBLEU: sacreBLEU's default (%s), %s decoding, %s per direction.\n"
                    "Results in %s/results.{md,json}; total %.1f s\n", text::bleu_signature().c_str(), o.eval_beam > 1 ? "beam" : "greedy",
                    which.c_str(), o.out.c_str(), total);
        if (o.min_bleu >= 0 && !results.empty()) {
            double avg = 0;
            for (double b : results.back().bleu_moe) avg += b;
            avg /= double(std::max<size_t>(1, results.back().bleu_moe.size()));
            if (avg < o.min_bleu) {  // the same BLEU on every rank: every rank exits 2
                if (main_rank) std::fprintf(stderr, "tsjt_wmt: MoE average BLEU %.2f is below --min-bleu %.2f\n", avg, o.min_bleu);
                return 2;
            }
        }
    } catch (const std::exception& e) {  // a CollectiveError: printed once; else this rank ends the job
        return dist::report_error(*comm, "tsjt_wmt", e);
    }
    return 0;
}
