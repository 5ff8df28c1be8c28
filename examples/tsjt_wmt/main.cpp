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

using namespace tsjt;
namespace fs = std::filesystem;

namespace {

/// A flag's value check: a finite number in [lo, hi] (open ends excluded), `want` in the error.
CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open, const std::string& want) {
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
CLI::Validator int_in(long long lo, long long hi, const std::string& want) {
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
const CLI::Validator kPositiveInt = int_in(1, std::numeric_limits<int>::max(), "an integer >= 1");
const CLI::Validator kNonNegInt = int_in(0, std::numeric_limits<int>::max(), "an integer >= 0");
const CLI::Validator kPositiveReal = real_in(0, HUGE_VAL, true, false, "a number > 0");
const CLI::Validator kNonNegReal = real_in(0, HUGE_VAL, false, false, "a number >= 0");
const CLI::Validator kFraction = real_in(0, 1, false, true, "a number in [0, 1)");

int cmd_score(const std::string& ref_path, const std::string& hyp_path) {
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

int cmd_translate(const std::string& dir, const std::string& to, int beam, double lenpen, bool eval_dropless,
                  bool reencode) {
    const LoadedSubmodel m = load_submodel(dir, eval_dropless);
    const text::SentencePiece sp = text::SentencePiece::load((fs::path(dir) / "spm.model").string());
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

std::string fmt2(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

/// The BLEU table (Markdown) and the same as JSON.
void write_results(bool write, const std::string& out, const std::vector<Direction>& dirs, const std::vector<RunResult>& rs,
                   bool indep) {
    std::string md = "| mode | model | params | steps | switch | ";
    for (const auto& d : dirs) md += d.name() + " | ";
    md += "X→En | En→X | avg |\n|---|---|---|---|---|";
    for (size_t i = 0; i < dirs.size() + 3; ++i) md += "---|";
    md += "\n";
    // the paper's macro-averages, X→En and En→X separately (l.398), beside the overall one
    auto side = [&](const std::vector<double>& b, bool to_en) {
        double s = 0;
        int n = 0;
        for (size_t i = 0; i < dirs.size(); ++i)
            if ((dirs[i].tgt_lang == "en") == to_en) s += b[i], ++n;
        return n ? s / n : 0.0;
    };
    std::string js = "[";
    for (const RunResult& r : rs) {
        for (int which = 0; which < 2; ++which) {
            const auto& b = which ? r.bleu_dense : r.bleu_moe;
            double avg = 0;
            for (double x : b) avg += x;
            avg = b.empty() ? 0 : avg / double(b.size());
            md += "| " + r.mode + " | " + (which ? (indep ? "device" : "dense") : "MoE") + " | " +
                  std::to_string(which ? r.params_dense : r.params_moe) + " | " + std::to_string(r.steps) + " | " +
                  (r.switch_step >= 0 ? std::to_string(r.switch_step) : "-") + " | ";
            for (double x : b) md += fmt2(x) + " | ";
            md += fmt2(side(b, true)) + " | " + fmt2(side(b, false)) + " | " + fmt2(avg) + " |\n";
            js += std::string(js.size() > 1 ? ", " : "") + "{\"mode\": \"" + r.mode + "\", \"model\": \"" +
                  (which ? (indep ? "device" : "dense") : "moe") + "\", \"params\": " +
                  std::to_string(which ? r.params_dense : r.params_moe) + ", \"params_total\": " +
                  std::to_string(r.params_total) + ", \"steps\": " + std::to_string(r.steps) +
                  ", \"switch_step\": " + std::to_string(r.switch_step) + ", \"t_sep\": " + std::to_string(r.t_sep) +
                  ", \"train_seconds\": " + std::to_string(r.train_seconds) + ", \"bleu\": {";
            for (size_t i = 0; i < dirs.size(); ++i)
                js += std::string(i ? ", " : "") + "\"" + dirs[i].name() + "\": " + fmt2(b[i]);
            js += "}, \"avg_x_en\": " + fmt2(side(b, true)) + ", \"avg_en_x\": " + fmt2(side(b, false)) +
                  ", \"avg\": " + fmt2(avg) + "}";
        }
    }
    js += "]\n";
    std::printf("\n%s", md.c_str());
    if (!write) return;
    io::write_text_atomic((fs::path(out) / "results.md").string(), md);
    io::write_text_atomic((fs::path(out) / "results.json").string(), js);
}

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

}  // namespace

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
    app.require_subcommand(0, 1);
    // ---- score / translate
    std::string ref_path, hyp_path, model_dir, to_lang;
    auto* score = app.add_subcommand("score", "corpus BLEU of HYP against REF (sacreBLEU's default algorithm)");
    score->add_option("REF", ref_path, "reference file, one sentence per line")->required();
    score->add_option("HYP", hyp_path, "hypothesis file, aligned with REF")->required();
    int beam = 1;
    double lenpen = 1.0;
    auto* tr = app.add_subcommand("translate", "translate stdin with an extracted submodel");
    tr->add_option("--model", model_dir, "submodel directory (RUN_DIR/moe or RUN_DIR/dense)")->required();
    tr->add_option("--to", to_lang, "target language code")->required();
    tr->add_option("--beam", beam, "beam size (1: greedy)")->capture_default_str()->check(kPositiveInt);
    tr->add_option("--lenpen", lenpen, "length penalty of beam search")->capture_default_str()->check(kNonNegReal);
    bool no_eval_dropless = false, reencode = false;
    tr->add_flag("--no-eval-dropless", no_eval_dropless,
                 "MoE: keep the eval capacity limit (a sentence's output may then depend on its batch)");
    tr->add_flag("--reencode-source", reencode, "beam: re-run the encoder at every step (the old, slow path; for timing)");
    // ---- training
    std::string data_dir, catalogs = "/usr/share/locale", langs_s = "fr,fi,hi", out = "tsjt_out",
                modes_s = "single,constjt,tsjt", arch = "shared", t_sep_s = "auto", spm_type = "unigram";
    int vocab = 1000, max_len = 24, test_max_len = 24, test_limit = 100, eval_beam = 1;
    size_t max_train = 0, train_pairs = 16000;
    int64_t max_epochs = 3;
    RunConfig rc;
    rc.moe.d_model = 64;
    rc.moe.heads = 4;
    rc.moe.ffn_dim = 256;
    rc.moe.enc_layers = rc.moe.dec_layers = 4;  // MoE in layers 1, 3: the paper's alternate layers (l.402)
    rc.moe.experts = 8;                         // l.402
    rc.max_steps = 0;                           // 0: from --max-epochs
    int64_t dense_layers = 0, device_d = 32, device_ffn = 128, device_layers = 1;
    double min_bleu = -1;
    app.add_option("--data", data_dir, "WMT-style corpus DIR/<xx>-en/{train,valid,test}.{xx,en}; default: build "
                                       "one from the gettext catalogs under --catalogs");
    app.add_option("--catalogs", catalogs, "root searched for <lang>/LC_MESSAGES/*.mo when --data is not given")->capture_default_str();
    app.add_option("--langs", langs_s, "languages paired with English (both directions are trained)")->capture_default_str();
    app.add_option("--out", out, "output directory (corpus, tokenizer, runs, results)")->capture_default_str();
    app.add_option("--modes", modes_s, "runs to make, in order: single, constjt, tsjt")->capture_default_str();
    app.add_option("--arch", arch, "shared (dense model shares layers with the MoE model) or indep (device model)")
        ->capture_default_str()->check(CLI::IsMember({"shared", "indep"}));
    app.add_option("--vocab", vocab, "SentencePiece vocabulary size")->capture_default_str()->check(CLI::Range(16, 1000000));
    app.add_option("--spm-type", spm_type, "SentencePiece model type")->capture_default_str()->check(CLI::IsMember({"unigram", "bpe"}));
    app.add_option("--max-train", max_train, "at most this many training pairs per language (0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--train-pairs", train_pairs, "training pairs over all languages, drawn in proportion to each "
                   "language's corpus (after --max-train; 0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--max-len", max_len, "drop training pairs longer than this many pieces (0: none)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--test-max-len", test_max_len, "evaluate on test sentences of at most this many source pieces (0: all)")->capture_default_str()->check(kNonNegInt);
    app.add_option("--test-limit", test_limit, "test sentences per direction")->capture_default_str()->check(kPositiveInt);
    app.add_option("--d-model", rc.moe.d_model, "width of the MoE (and shared dense) model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--heads", rc.moe.heads, "attention heads")->capture_default_str()->check(kPositiveInt);
    app.add_option("--ffn", rc.moe.ffn_dim, "FFN width (per expert)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--layers", rc.moe.enc_layers, "encoder = decoder layers of the MoE model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--experts", rc.moe.experts, "experts per MoE layer (top-1)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--dense-layers", dense_layers, "layers of the shared dense model (default: half of --layers, "
                   "the paper's 6 vs 12, l.402-404)")->check(kPositiveInt);
    app.add_option("--device-d-model", device_d, "indep: width of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--device-ffn", device_ffn, "indep: FFN width of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--device-layers", device_layers, "indep: encoder = decoder layers of the device model")->capture_default_str()->check(kPositiveInt);
    app.add_option("--dropout", rc.moe.dropout, "dropout")->capture_default_str()->check(kFraction);
    app.add_option("--label-smoothing", rc.label_smoothing, "label smoothing of the CE")->capture_default_str()->check(kFraction);
    app.add_option("--alpha-moe", rc.alpha_moe, "KL weight of the MoE model")->capture_default_str()->check(kNonNegReal);
    app.add_option("--alpha-dense", rc.alpha_dense, "KL weight of the dense/device model")->capture_default_str()->check(kNonNegReal);
    app.add_option("--kl-scale", rc.kl_scale, "constant the KL is multiplied by in the loss (our reduction of the KL "
                   "differs from the paper's; docs/tsjt.md)")->capture_default_str()->check(kNonNegReal);
    app.add_option("--t-sep", t_sep_s, "KL threshold of the stage switch, or 'auto' (KL plateau, docs/tsjt.md)")->capture_default_str()
        ->check(CLI::Validator([](std::string& v) -> std::string {
            char* end = nullptr;
            const double x = std::strtod(v.c_str(), &end);
            if (v == "auto" || (!v.empty() && *end == '\0' && std::isfinite(x) && x >= 0)) return "";
            return "takes a number >= 0 or 'auto', got '" + v + "'";
        }, "NUMBER|auto"));
    app.add_option("--min-switch-steps", rc.min_switch_steps, "earliest update of the stage switch (0: --warmup)")
        ->capture_default_str()->check(kNonNegInt);
    app.add_option("--kl-window", rc.kl_window, "updates averaged for the KL of the switch rule")->capture_default_str()->check(kPositiveInt);
    app.add_option("--lr", rc.lr, "peak learning rate (Adam 0.9, 0.98)")->capture_default_str()->check(kPositiveReal);
    app.add_option("--warmup", rc.warmup, "inverse-sqrt warmup updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--max-epochs", max_epochs, "epochs per run (the paper's analysis runs: 3, l.436)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--max-steps", rc.max_steps, "updates per run (default: --max-epochs epochs)")->check(kPositiveInt);
    app.add_option("--max-tokens", rc.max_tokens, "tokens per batch (padded)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--update-freq", rc.update_freq, "batches per update (gradient accumulation)")->capture_default_str()->check(kPositiveInt);
    app.add_option("--seed", rc.seed, "seed (init, dropout, batch order)")->capture_default_str()
        ->check(int_in(0, std::numeric_limits<long long>::max(), "an integer >= 0"));
    app.add_option("--save-every", rc.save_every, "checkpoint every N updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--log-every", rc.log_every, "JSONL log line every N updates")->capture_default_str()->check(kPositiveInt);
    app.add_option("--beam", eval_beam, "beam size for the test translations (1: greedy)")->capture_default_str()->check(kPositiveInt);
    app.add_flag("--no-eval-dropless", no_eval_dropless,
                 "MoE: evaluate with the eval capacity factor (2.0) instead of dropless, so a sentence's "
                 "translation may depend on the other sentences of its batch");
    app.add_option("--min-bleu", min_bleu, "exit 2 if the TSJT/last run's MoE average BLEU is lower (smoke tests)")
        ->check(real_in(-HUGE_VAL, HUGE_VAL, true, true, "a number"));
    bool no_progress = false;
    app.add_flag("--no-progress", no_progress, "no progress line on stderr");
    std::string device_name = "cpu";
    app.add_option("--device", device_name, "where the models train and decode: cpu, or cuda (the GPU)")
        ->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda"}));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }
    if (!main_rank && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 alone prints
    rc.device = device_name == "cuda" ? Device::CUDA : Device::CPU;
    if (rc.device == Device::CUDA) {  // refused before any data is read: say why in one line
#if defined(MOEKD_CUDA) && MOEKD_CUDA
        if (cuda::device_count() == 0) {
            if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
            return 1;
        }
        if (comm->size() > 1) {
            if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda runs as one process (data parallel over NCCL is not wired into tsjt_wmt yet)\n");
            return 1;
        }
#else
        if (main_rank) std::fprintf(stderr, "tsjt_wmt: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
        return 1;
#endif
    }

    try {
        if (score->parsed()) return cmd_score(ref_path, hyp_path);
        if (tr->parsed()) return cmd_translate(model_dir, to_lang, beam, lenpen, !no_eval_dropless, reencode);

        const auto t_start = std::chrono::steady_clock::now();
        const std::vector<std::string> langs = parse_langs(langs_s);
        std::vector<Mode> modes;
        for (const std::string& m : split_list(modes_s)) modes.push_back(parse_mode(m));
        rc.t_sep = t_sep_s == "auto" ? -1.0 : std::strtod(t_sep_s.c_str(), nullptr);  // checked by its validator
        MOEKD_CHECK(rc.moe.d_model % rc.moe.heads == 0, "tsjt_wmt: --d-model ", rc.moe.d_model,
                    " is not divisible by --heads ", rc.moe.heads);
        rc.indep = arch == "indep";
        MOEKD_CHECK(!rc.indep || device_d % rc.moe.heads == 0, "tsjt_wmt: --device-d-model ", device_d,
                    " is not divisible by --heads ", rc.moe.heads);
        rc.moe.dec_layers = rc.moe.enc_layers;
        rc.progress = !no_progress;
        rc.comm = comm;
        if (main_rank) fs::create_directories(out);

        // ---- corpus and tokenizer. Rank 0 reads (or builds in memory) the corpus, checks its
        // data configuration against what OUT holds, trains or reuses the tokenizer, and only
        // then writes anything (the built corpus, the tokenizer); under mpirun the other ranks
        // read what it wrote.
        std::vector<LangPair> corpus;
        CatalogCorpus built;
        const std::string corpus_dir = (fs::path(out) / "corpus").string();
        if (!data_dir.empty()) corpus = read_corpus_dir(data_dir, langs);
        else if (main_rank) {
            built = build_catalog_corpus(catalogs, langs, corpus_dir, 0.01, 0.01);
            corpus = built.pairs;
        }
        auto apply_limits = [&](bool print) {
            if (print)
                std::printf("corpus%s: %-4s %8s %6s %6s\n", data_dir.empty() ? "" : (" " + data_dir).c_str(), "lang",
                            "train", "valid", "test");
            std::vector<size_t> full, capped;
            for (LangPair& p : corpus) {
                full.push_back(p.train.size());
                limit(p.train, max_train);
                capped.push_back(p.train.size());
            }
            const std::vector<size_t> keep = proportional_counts(capped, train_pairs);
            for (size_t i = 0; i < corpus.size(); ++i) {
                LangPair& p = corpus[i];
                MOEKD_CHECK(keep[i] > 0 || capped[i] == 0, "tsjt_wmt: --train-pairs ", train_pairs, " leaves language '",
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
        std::string spm, data_cfg;
        if (main_rank) {
            const std::string dcfg = data_config(corpus, max_train, train_pairs, max_len, vocab, spm_type);  // hashes: before limits
            apply_limits(true);
            std::tie(spm, data_cfg) = prepare_tokenizer(out, corpus, dcfg, vocab, spm_type, modes);
            if (data_dir.empty()) write_corpus_files(built.files);
        }
        if (comm->size() > 1) {  // after rank 0's checks and writes
            const auto got = dist::all_gather_strings(*comm, {spm + "\n" + data_cfg}).front();
            spm = got.substr(0, got.find('\n'));
            data_cfg = got.substr(got.find('\n') + 1);
            if (!main_rank) {
                if (data_dir.empty()) corpus = read_corpus_dir(corpus_dir, langs);
                apply_limits(false);
            }
        }
        rc.data_config = data_cfg;
        const text::SentencePiece sp = text::SentencePiece::load(spm);
        std::vector<Example> train_set;
        int64_t skipped = 0;
        const std::vector<Direction> dirs = make_directions(corpus, sp, max_len, train_set, skipped, test_max_len);
        int64_t pieces = 0;
        for (const Example& e : train_set) pieces += int64_t(e.tgt.size());
        std::printf("tokenizer: %s, %d pieces; %zu training examples in %zu directions (%lld target tokens, "
                    "%lld longer than %d pieces dropped)\n", spm.c_str(), sp.vocab_size(), train_set.size(),
                    dirs.size(), (long long)pieces, (long long)skipped, max_len);

        rc.moe.vocab = sp.vocab_size();
        rc.moe.pad = text::kSpPad;
        rc.moe.eval_dropless = !no_eval_dropless;
        rc.dense = rc.moe;
        rc.dense.experts = 0;
        if (rc.indep) {
            rc.dense.d_model = device_d;
            rc.dense.ffn_dim = device_ffn;
            rc.dense.enc_layers = rc.dense.dec_layers = device_layers;
        } else {
            rc.dense.enc_layers = rc.dense.dec_layers = dense_layers > 0 ? dense_layers : std::max<int64_t>(1, rc.moe.enc_layers / 2);
        }
        if (rc.max_steps == 0) {  // --max-epochs: updates per epoch as the trainer walks the batches
            const int64_t nb = int64_t(token_batches(train_set, rc.max_tokens).size());
            const int64_t per_update = int64_t(rc.update_freq) * comm->size();
            rc.max_steps = max_epochs * ((nb + per_update - 1) / per_update);
            std::printf("schedule: %lld epoch(s) of %lld batches = %lld updates\n", (long long)max_epochs, (long long)nb,
                        (long long)rc.max_steps);
        }

        // ---- runs
        std::vector<RunResult> results;
        for (Mode mode : modes) {
            RunConfig c = rc;
            c.mode = mode;
            c.dir = (fs::path(out) / mode_name(mode)).string();
            Run run(c);
            RunResult res;
            res.mode = mode_name(mode);
            res.params_moe = run.params_moe();
            res.params_dense = run.params_dense();
            res.params_total = run.params_total();
            if (comm->size() > 1 && res.mode == mode_name(modes.front()))
                std::printf("data parallel: %d rank(s) (%s), %d batch(es) of at most %lld tokens per rank and update\n",
                            comm->size(), comm->backend().c_str(), rc.update_freq, (long long)rc.max_tokens);
            std::printf("run %s (%s): MoE %lld params, %s %lld params, %lld distinct in total\n", res.mode.c_str(),
                        rc.indep ? "indep" : "shared", (long long)res.params_moe, rc.indep ? "device" : "dense",
                        (long long)res.params_dense, (long long)res.params_total);
            run.train(train_set, res);
            run.evaluate(dirs, sp, size_t(test_limit), eval_beam, 1.0, res);
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
        write_results(main_rank, out, dirs, results, rc.indep);
        if (main_rank) {  // the logs are rank 0's
            std::vector<Curve> curves;
            for (const RunResult& r : results)
                curves.push_back(read_curve((fs::path(out) / r.mode / "log.jsonl").string(), r.mode, r.switch_step));
            const auto figs = write_figures(out, curves, rc.indep);
            std::printf("figures: %s, %s, %s\n", figs[0].c_str(), figs[1].c_str(), figs[2].c_str());
        }
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        std::printf("\nBLEU: sacreBLEU's default (%s), %s decoding, first %d test sentences (of at most %d source pieces) per direction.\n"
                    "Results in %s/results.{md,json}; total %.1f s\n", text::bleu_signature().c_str(), eval_beam > 1 ? "beam" : "greedy", test_limit, test_max_len,
                    out.c_str(), total);
        if (min_bleu >= 0 && !results.empty()) {
            double avg = 0;
            for (double b : results.back().bleu_moe) avg += b;
            avg /= double(std::max<size_t>(1, results.back().bleu_moe.size()));
            if (avg < min_bleu) {  // the same BLEU on every rank: every rank exits 2
                if (main_rank) std::fprintf(stderr, "tsjt_wmt: MoE average BLEU %.2f is below --min-bleu %.2f\n", avg, min_bleu);
                return 2;
            }
        }
    } catch (const std::exception& e) {  // a CollectiveError: printed once; else this rank ends the job
        return dist::report_error(*comm, "tsjt_wmt", e);
    }
    return 0;
}
