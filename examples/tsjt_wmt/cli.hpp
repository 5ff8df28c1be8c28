// cli.hpp — the command line of tsjt_wmt: every flag, its default (the faithful defaults of
// docs/tsjt.md) and its range check. A rejected value is an error naming the flag, the value and
// what is allowed ("--kl-scale: got -1, want a number >= 0"), before anything is read or written.
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "run.hpp"

namespace tsjt {

/// A flag's value check: a finite number in [lo, hi] (open ends excluded), `want` in the error.
inline CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open, const std::string& want) {
    return CLI::Validator(
        [=](std::string& v) -> std::string {
            char* end = nullptr;
            const double x = std::strtod(v.c_str(), &end);
            if (v.empty() || *end != '\0') return "'" + v + "' is not a number (want " + want + ")";
            if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi))
                return "got " + v + ", want " + want;
            return std::string();
        },
        want);
}
/// An integer in [lo, hi].
inline CLI::Validator int_in(long long lo, long long hi, const std::string& want) {
    return CLI::Validator(
        [=](std::string& v) -> std::string {
            char* end = nullptr;
            errno = 0;
            const long long x = std::strtoll(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || errno == ERANGE) return "'" + v + "' is not an integer (want " + want + ")";
            if (x < lo || x > hi) return "got " + v + ", want " + want;
            return std::string();
        },
        want);
}
inline const CLI::Validator kPositiveInt = int_in(1, std::numeric_limits<int>::max(), "an integer >= 1");
inline const CLI::Validator kNonNegInt = int_in(0, std::numeric_limits<int>::max(), "an integer >= 0");
inline const CLI::Validator kPositiveReal = real_in(0, HUGE_VAL, true, false, "a number > 0");
inline const CLI::Validator kNonNegReal = real_in(0, HUGE_VAL, false, false, "a number >= 0");
inline const CLI::Validator kFraction = real_in(0, 1, false, true, "a number in [0, 1)");


/// Every flag's value (training, and the score / translate subcommands).
struct Options {
    // score / translate
    std::string ref_path, hyp_path, model_dir, to_lang;
    int beam = 1;
    double lenpen = 1.0;
    bool no_eval_dropless = false, reencode = false;
    // training
    std::string data_dir, catalogs = "/usr/share/locale", langs_s = "fr,fi,hi", out = "tsjt_out",
                modes_s = "single,constjt,tsjt", arch = "shared", t_sep_s = "auto", spm_type = "unigram";
    // evaluation on each language's whole test set (l.98); decoding all 2776 test sentences of
    // the default corpus with the six models of a run takes about 11 s (measured 2026-12-04)
    int vocab = 1000, max_len = 24, test_max_len = 0, test_limit = 0, eval_beam = 1;
    size_t max_train = 0, train_pairs = 16000;
    int64_t max_epochs = 3;
    RunConfig rc = defaults();
    int64_t dense_layers = 0, device_d = 32, device_ffn = 128, device_layers = 1;
    double min_bleu = -1;
    bool no_progress = false;
    std::string device_name = "cpu";
    std::string precision = "fp32";

    static RunConfig defaults() {
        RunConfig rc;
        rc.moe.d_model = 64;
        rc.moe.heads = 4;
        rc.moe.ffn_dim = 256;
        rc.moe.enc_layers = rc.moe.dec_layers = 4;  // MoE in layers 1, 3: the paper's alternate layers (l.402)
        rc.moe.experts = 8;                         // l.402
        rc.max_steps = 0;                           // 0: from --max-epochs
        return rc;
    }
};

struct Subcommands {
    CLI::App* score = nullptr;
    CLI::App* translate = nullptr;
};

/// Registers every flag of `app` into `o`.
inline Subcommands add_flags(CLI::App& app, Options& o) {
    app.require_subcommand(0, 1);
    // ---- score / translate
    Subcommands sc;
    sc.score = app.add_subcommand("score", "corpus BLEU of HYP against REF (sacreBLEU's default algorithm)");
    sc.score->add_option("REF", o.ref_path, "reference file, one sentence per line")->required();
    sc.score->add_option("HYP", o.hyp_path, "hypothesis file, aligned with REF")->required();
    sc.translate = app.add_subcommand("translate", "translate stdin with an extracted submodel");
    sc.translate->add_option("--model", o.model_dir, "submodel directory (RUN_DIR/moe or RUN_DIR/dense)")->required();
    sc.translate->add_option("--to", o.to_lang, "target language code")->required();
    sc.translate->add_option("--beam", o.beam, "beam size (1: greedy)")->capture_default_str()->check(kPositiveInt);
    sc.translate->add_option("--lenpen", o.lenpen, "length penalty of beam search")->capture_default_str()->check(kNonNegReal);
    sc.translate->add_flag("--no-eval-dropless", o.no_eval_dropless,
                 "MoE: keep the eval capacity limit (a sentence's output may then depend on its batch)");
    sc.translate->add_flag("--reencode-source", o.reencode, "beam: re-run the encoder at every step (the old, slow path; for timing)");
    // ---- training
    app.add_option("--data", o.data_dir, "WMT-style corpus DIR/<xx>-en/{train,valid,test}.{xx,en}; default: build "
                                       "one from the gettext catalogs under --catalogs");
    app.add_option("--catalogs", o.catalogs, "root searched for <lang>/LC_MESSAGES/*.mo when --data is not given")->capture_default_str();
    app.add_option("--langs", o.langs_s, "languages paired with English (both directions are trained)")->capture_default_str();
    app.add_option("--out", o.out, "output directory (corpus, tokenizer, runs, results)")->capture_default_str();
    app.add_option("--modes", o.modes_s, "runs to make, in order: single, constjt, tsjt")->capture_default_str();
    app.add_option("--arch", o.arch, "shared (dense model shares layers with the MoE model) or indep (device model)")
        ->capture_default_str()->check(CLI::IsMember({"shared", "indep"}));
    app.add_option("--vocab", o.vocab, "SentencePiece vocabulary size")->capture_default_str()->check(CLI::Range(16, 1000000));
    app.add_option("--spm-type", o.spm_type, "SentencePiece model type")->capture_default_str()->check(CLI::IsMember({"unigram", "bpe"}));
    app.add_option("--max-train", o.max_train, "at most this many training pairs per language (0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--train-pairs", o.train_pairs, "training pairs over all languages, drawn in proportion to each "
                   "language's corpus (after --max-train; 0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--max-len", o.max_len, "drop training pairs longer than this many pieces (0: none)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--test-max-len", o.test_max_len, "evaluate on test sentences of at most this many source pieces (0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--test-limit", o.test_limit, "test sentences per direction (0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--d-model", o.rc.moe.d_model, "width of the MoE (and shared dense) model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--heads", o.rc.moe.heads, "attention heads")->capture_default_str()->check(kPositiveInt);
    app.add_option("--ffn", o.rc.moe.ffn_dim, "FFN width (per expert)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--layers", o.rc.moe.enc_layers, "encoder = decoder layers of the MoE model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--experts", o.rc.moe.experts, "experts per MoE layer (top-1)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--dense-layers", o.dense_layers, "layers of the shared dense model (default: half of --layers, "
                   "the paper's 6 vs 12, l.402-404)")->check(kPositiveInt);
    app.add_option("--device-d-model", o.device_d, "indep: width of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--device-ffn", o.device_ffn, "indep: FFN width of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--device-layers", o.device_layers, "indep: encoder = decoder layers of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--dropout", o.rc.moe.dropout, "dropout")->capture_default_str()->check(kFraction);
    app.add_option("--label-smoothing", o.rc.label_smoothing, "label smoothing of the CE")->capture_default_str()->check(kFraction);
    app.add_option("--alpha-moe", o.rc.alpha_moe, "KL weight of the MoE model")->capture_default_str()->check(kNonNegReal);
    app.add_option("--alpha-dense", o.rc.alpha_dense, "KL weight of the dense/device model")->capture_default_str()->check(kNonNegReal);
    app.add_option("--kl-scale", o.rc.kl_scale, "constant the KL is multiplied by in the loss (our reduction of the KL "
                   "differs from the paper's; docs/tsjt.md)")->capture_default_str()->check(kNonNegReal);
    app.add_option("--t-sep", o.t_sep_s, "KL threshold of the stage switch, or 'auto' (KL plateau, docs/tsjt.md)")->capture_default_str()
        ->check(CLI::Validator([](std::string& v) -> std::string {
            char* end = nullptr;
            const double x = std::strtod(v.c_str(), &end);
            if (v == "auto" || (!v.empty() && *end == '\0' && std::isfinite(x) && x >= 0)) return "";
            return "takes a number >= 0 or 'auto', got '" + v + "'";
        }, "NUMBER|auto"));
    app.add_option("--min-switch-steps", o.rc.min_switch_steps, "earliest update of the stage switch (0: --warmup)")
        ->capture_default_str()->check(kNonNegInt);
    app.add_option("--kl-window", o.rc.kl_window, "updates averaged for the KL of the switch rule")->capture_default_str()->check(kPositiveInt);
    app.add_option("--lr", o.rc.lr, "peak learning rate (Adam 0.9, 0.98)")->capture_default_str()->check(kPositiveReal);
    app.add_option("--warmup", o.rc.warmup, "inverse-sqrt warmup updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--max-epochs", o.max_epochs, "epochs per run (the paper's analysis runs: 3, l.436)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--max-steps", o.rc.max_steps, "updates per run (default: --max-epochs epochs)")->check(kPositiveInt);
    app.add_option("--max-tokens", o.rc.max_tokens, "tokens per batch (padded)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--update-freq", o.rc.update_freq, "batches per update (gradient accumulation)")->capture_default_str()->check(kPositiveInt);
    app.add_flag("--expert-parallel", o.rc.expert_parallel,
                 "under mpirun -np P: each rank keeps E / P experts of every MoE layer (tokens travel by "
                 "all-to-all) instead of all of them; the rest stays data parallel. --experts must be a multiple of P");
    app.add_option("--seed", o.rc.seed, "seed (init, dropout, batch order)")->capture_default_str()
        ->check(int_in(0, std::numeric_limits<long long>::max(), "an integer >= 0"));
    app.add_option("--save-every", o.rc.save_every, "checkpoint every N updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--log-every", o.rc.log_every, "JSONL log line every N updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--beam", o.eval_beam, "beam size for the test translations (1: greedy)")->capture_default_str()->check(kPositiveInt);
    app.add_flag("--no-eval-dropless", o.no_eval_dropless,
                 "MoE: evaluate with the eval capacity factor (2.0) instead of dropless, so a sentence's "
                 "translation may depend on the other sentences of its batch");
    app.add_option("--min-bleu", o.min_bleu, "exit 2 if the TSJT/last run's MoE average BLEU is lower (smoke tests)")
        ->check(real_in(-HUGE_VAL, HUGE_VAL, true, true, "a number"));
    app.add_flag("--no-progress", o.no_progress, "no progress line on stderr");
    app.add_option("--device", o.device_name, "where the models train and decode: cpu, or cuda (the GPU)")
        ->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--precision", o.precision,
                   "training products: fp32, or bf16 (moekd::Autocast: matmuls in bf16 with fp32 accumulation; "
                   "weights, gradients, Adam, softmax, norms and losses in fp32; on the CPU through oneDNN, on a GPU through cublasGemmEx)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16"}));
    return sc;
}

}  // namespace tsjt
