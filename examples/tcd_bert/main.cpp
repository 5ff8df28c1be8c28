// tcd_bert — transfer-capability distillation ("Improving the Downstream Performance of
// Mixture-of-Experts Transformers via Weak Vanilla Transformers", Lu et al.) on real English text
// from Debian packages: pre-train (masked LM) a vanilla BERT teacher, an MoE BERT (every FFN an
// MoE layer, top-1, KL-uniform balance loss), and the MoE BERT with TCD from the frozen teacher
// (trunk, inner and attention relation losses, moekd/losses/tcd.hpp); track held-out masked-LM
// log-likelihood per epoch; fine-tune each (full and adapters, the better of the two means over
// the seeds reported, the paper's line 182) on a GLUE-format task; evaluate masked LM out of
// distribution; print a main table at equal epochs (not one of the paper's) and tables shaped
// like the paper's Table 3 (ablation), Table 1 (pre-training-performance alignment) and Table 4
// (OOD), and draw its Figure 5 (downstream score vs pre-training epochs).
//
//   tcd_bert                                   the small default (one task, ~11 min on 2 cores)
//   tcd_bert --ablations --task WNGLOSS        + the ablations (T, then T+I+A at the default
//                                              lambda_A = 0, else T+I), another task
//   tcd_bert --glue-dir ~/glue/RTE --task RTE  a real GLUE task
//   tcd_bert --corpus a.txt --corpus b.txt --glue-dir ... --task ...   your own text
//   tcd_bert --device cuda                     the same runs with the models, batches, losses, fine-tuning
//                                              and evaluation on the GPU; the same outputs. Without a GPU
//                                              (or in a build without the CUDA backend): a one-line error
//                                              naming the reason, exit 1. tcd_bert_emu is the same program
//                                              on the emulated device (CI).
//   mpirun -np 2 tcd_bert                      data parallel pre-training (pretrain.hpp): each step's
//                                              --batch segments are split over the ranks; rank 0
//                                              builds the corpus/vocabulary/task files and alone
//                                              prints and writes --out (a folder all ranks see);
//                                              fine-tuning and evaluation run identically on
//                                              every rank
//
// Outputs in --out: log.jsonl, results.md, trend.svg, tasks/ (the built-in task TSVs), spm.model,
// ckpt/<run>.safetensors (each model, rewritten after every epoch). Exit status 1 on any error.
// Every run starts afresh (nothing is resumed: the outputs of an earlier run in --out are
// replaced). Checked before any work (issue 16): every numeric flag (an error names it), the
// output paths (a FIFO / device node / directory where a file goes is refused). Every write is
// checked; a full disk is an error naming the file, and the closing "total ... wrote" line is
// printed only after every output is written.
#include <CLI/CLI.hpp>

#include "../common/cli_checks.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <iostream>
#include <sstream>

#include <moekd/dist/init.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/safetensors.hpp>
#if defined(MOEKD_CUDA) && MOEKD_CUDA
#include <moekd/cuda.hpp>  // the CUDA backend (or its emulation): fills the ops' device table
#endif

#include "data.hpp"
#include "finetune.hpp"
#include "model.hpp"
#include "pretrain.hpp"
#include "report.hpp"

using namespace tcdb;
namespace fs = std::filesystem;

#ifndef TCD_SOURCE_DIR
#define TCD_SOURCE_DIR "."
#endif

namespace {

std::vector<uint64_t> parse_seeds(const std::string& s) {
    std::vector<uint64_t> out;
    std::stringstream ss(s);
    for (std::string x; std::getline(ss, x, ',');) {
        if (x.empty()) continue;
        // digits only: strtoull alone would take "-1" as 2^64 - 1 and " 7" or "1e3" in part
        MOEKD_CHECK(x.find_first_not_of("0123456789") == std::string::npos, "--seeds: '", x,
                    "' is not a non-negative integer (a comma list, e.g. 1,2,3)");
        errno = 0;
        const unsigned long long v = std::strtoull(x.c_str(), nullptr, 10);
        MOEKD_CHECK(errno == 0, "--seeds: '", x, "' is too large (at most ", UINT64_MAX, ")");
        MOEKD_CHECK(std::find(out.begin(), out.end(), v) == out.end(), "--seeds: seed ", v,
                    " is given twice (its scores would count twice in the average)");
        out.push_back(v);
    }
    MOEKD_CHECK(!out.empty(), "--seeds is empty");
    return out;
}

/// Finds the corpus; for the default location, unpacks it with scripts/build_tcd_corpus.sh first.
std::string ensure_corpus(const std::string& dir, bool is_default) {
    const std::string root = corpus_root(dir);
    if (fs::is_directory(root + "/usr/share/wordnet")) return dir;
    const std::string script = std::string(TCD_SOURCE_DIR) + "/scripts/build_tcd_corpus.sh";
    const std::string cmd = "bash '" + script + "' '" + dir + "'";
    if (is_default && fs::is_regular_file(script)) {
        std::printf("corpus not found in %s; building it: %s\n", dir.c_str(), cmd.c_str());
        std::fflush(stdout);
        MOEKD_CHECK(std::system(cmd.c_str()) == 0, "building the corpus failed; run it yourself: ", cmd);
        if (fs::is_directory(corpus_root(dir) + "/usr/share/wordnet")) return dir;
    }
    MOEKD_CHECK(false, "corpus not found: '", dir, "' holds no usr/share/wordnet (nor root/usr/share/wordnet). ",
                "HINT: build it with: ", cmd, "  (or give your own text with --corpus FILE)");
    return dir;
}

/// Fails fast, before any training, on what TCD cannot do with the flags: depth or head mismatch
/// between teacher and student, groups larger than a batch's tokens.
/// Runs `fn` on rank 0 alone, then every rank waits for it; an error there (or anywhere in `fn`)
/// is raised on every rank together. One process: just fn().
void on_rank0(dist::Communicator& comm, const std::function<void()>& fn) {
    if (comm.size() == 1) return fn();
    std::string err;
    if (comm.rank() == 0) try {
            fn();
        } catch (const std::exception& e) {
            err = e.what();
        }
    dist::stop_together(comm, err);
}

void dry_run_tcd(const ModelConfig& student, const ModelConfig& teacher, const PretrainOptions& o, int64_t seq_len) {
    Generator g(7);
    auto s = make_bert(student, true, g), t = make_bert(teacher, false, g);
    tcd::RepresentationCapture<float> cs(*s, tcd::CaptureWhat::from(o.tcd)), ct(*t, tcd::CaptureWhat::from(o.tcd));
    const auto groups = tcd::sample_batch_token_groups(o.batch, seq_len, Tensor<uint8_t>(), o.groups, o.group_size, g);
    NoGrad ng;
    const Tensor<int64_t> ids = Tensor<int64_t>::full({1, seq_len}, kCls);
    s->forward(ids);
    t->forward(ids);
    const Tensor<int64_t> g1 = tcd::sample_batch_token_groups(1, seq_len, Tensor<uint8_t>(), 1, std::min(seq_len, o.group_size), g);
    (void)tcd::tcd_loss(cs, ct, g1, o.tcd);
    (void)groups;
}

}  // namespace

int main(int argc, char** argv) {
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);  // MpiComm under mpirun, else one process
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tcd_bert: error: %s\n", e.what());
        return 1;
    }
    const bool main_rank = comm->rank() == 0;
    const int R = comm->size();
    CLI::App app{"tcd_bert: transfer-capability distillation from a vanilla BERT into an MoE BERT (masked-LM "
                 "pre-training on WordNet + fortunes, fine-tuning on a GLUE-format task)"};
    std::string data_dir = std::string(TCD_SOURCE_DIR) + "/build/tcd-data", out_dir = "tcd_bert_out";
    std::vector<std::string> corpus_files;
    std::string task_name = "WNPOS", glue_dir, seeds_s = "1", ft_modes = "both";
    ModelConfig mc;
    // FFN (and expert) width: 4 x D unless --ffn-dim is given (set after parsing), BERT's ratio
    // ("retaining the original structure of the BERT model", line 74; H = 128 -> 6.3M parameters at
    // 12 layers, line 350, needs FFN 512). Until issue 17 the default was 2 x D (128).
    mc.vocab = 2000, mc.dim = 64, mc.layers = 2, mc.heads = 2, mc.ffn_dim = 256, mc.experts = 64;
    int64_t teacher_layers = -1, seq_len = 128, max_segments = 2500, heldout_segments = 128, ood_segments = 64;
    int64_t spm_lines = 20000, max_train = 2000, max_dev = 600;
    PretrainOptions po;
    po.epochs = 3, po.batch = 16, po.lr = 3e-3, po.groups = 8, po.group_size = 128;
    // lambda_T = lambda_I = 1; lambda_A = 0 "for smaller-scale models" (line 352; "it harmed
    // transfer capability in the smaller scale", line 180): ours (D = 64) is smaller than the
    // paper's small scale (H = 128). Until issue 17 lambda_A was 1.
    double lambda_t = 1.0, lambda_i = 1.0, lambda_a = 0.0;
    FinetuneOptions fo;
    fo.epochs = 3, fo.max_len = 48, fo.lr_full = 1e-3, fo.lr_adapter = 3e-3;
    bool ablations = false, no_trend = false, smoke = false;
    uint64_t seed = 1;

    app.add_option("--data", data_dir, "output folder of scripts/build_tcd_corpus.sh (built there if it is the default and missing)")
        ->capture_default_str();
    app.add_option("--corpus", corpus_files, "pre-train on these UTF-8 text files instead (one text per line; repeatable)");
    app.add_option("--out", out_dir, "folder for log.jsonl, results.md, trend.svg, checkpoints")->capture_default_str();
    app.add_option("--task", task_name, "downstream task: built-in WNPOS, WNGLOSS, FORTUNE; or a GLUE task with --glue-dir "
                                        "(CoLA, SST-2, MRPC, STS-B, RTE, MNLI, QNLI, QQP, WNLI)")->capture_default_str();
    app.add_option("--glue-dir", glue_dir, "folder with the task's train.tsv and dev.tsv (GLUE's layout)");
    app.add_option("--max-train", max_train, "fine-tuning examples used (-1: all)")->capture_default_str();
    app.add_option("--max-dev", max_dev, "dev examples scored (-1: all)")->capture_default_str();
    app.add_option("--seed", seed, "seed of initialisation, data order and masks")->capture_default_str()->check(cli_checks::seed());
    app.add_option("--seeds", seeds_s, "fine-tuning seeds, comma list (scores are averaged)")->capture_default_str();
    app.add_option("--vocab", mc.vocab, "SentencePiece vocabulary size")->capture_default_str()->check(cli_checks::in(100, 64000));
    app.add_option("--spm-lines", spm_lines, "corpus lines the vocabulary is trained on")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--dim", mc.dim, "hidden size D")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--layers", mc.layers, "encoder layers (student and teacher)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--teacher-layers", teacher_layers, "teacher depth (default: --layers; TCD needs them equal)");
    app.add_option("--heads", mc.heads, "attention heads")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ffn-dim", mc.ffn_dim, "FFN width (each expert's too); default 4 x --dim")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--experts", mc.experts, "experts per MoE layer (the paper: 64)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lambda-b", mc.lambda_b, "weight of the KL(uniform || mean router prob) balance loss (the paper: 1000)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--capacity-factor", mc.capacity_factor, "expert capacity factor in training, evaluation and fine-tuning "
                   "(0: dropless, no capacity: our choice; the paper names FastMoE, line 350, but no gate or capacity)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--seq-len", seq_len, "pre-training segment length (tokens, <= 128 as the paper)")->capture_default_str()->check(cli_checks::in(8, 512));
    app.add_option("--segments", max_segments, "pre-training segments per epoch (0: the whole corpus)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--heldout-segments", heldout_segments, "held-out segments for the MLM log-likelihood")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ood-segments", ood_segments, "segments per out-of-distribution domain (0: skip)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--epochs", po.epochs, "pre-training epochs (each model)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--batch", po.batch, "pre-training segments per step")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lr", po.lr, "pre-training AdamW peak learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lambda-t", lambda_t, "TCD trunk weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--lambda-i", lambda_i, "TCD inner weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--lambda-a", lambda_a, "TCD attention weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--groups", po.groups, "TCD token groups per step (the paper: 32)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--group-size", po.group_size, "tokens per TCD group (the paper: 128)")->capture_default_str()->check(cli_checks::positive());
    app.add_flag("--ablations", ablations, "also pre-train MoE w/ TCD (T), and (T+I+A) when --lambda-a is 0 (else (T+I)), for the ablation (the paper's Table 3)");
    app.add_option("--ft-epochs", fo.epochs, "fine-tuning epochs")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-batch", fo.batch, "fine-tuning batch")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-lr", fo.lr_full, "full fine-tuning learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--adapter-lr", fo.lr_adapter, "adapter fine-tuning learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-modes", ft_modes, "full, adapters or both (then the better of the two seed means is reported)")
        ->capture_default_str()->check(CLI::IsMember({"full", "adapters", "both"}));
    app.add_option("--ft-max-len", fo.max_len, "fine-tuning sequence length")->capture_default_str()->check(cli_checks::in(8, 512));
    app.add_flag("--no-trend", no_trend, "fine-tune only the last checkpoint (no Figure 5 / Table 1 alignment scores)");
    app.add_flag("--smoke", smoke, "a tiny configuration for CI (well under a minute)");
    std::string device_name = "cpu";
    app.add_option("--device", device_name, "where the models pre-train, fine-tune and are evaluated: cpu, or cuda (the GPU)")
        ->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda"}));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }
    const Device dev = device_name == "cuda" ? Device::CUDA : Device::CPU;
    if (dev == Device::CUDA) {  // refused before any data is read: say why in one line
#if defined(MOEKD_CUDA) && MOEKD_CUDA
        if (cuda::device_count() == 0) {
            if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
            return 1;
        }
        if (R > 1) {
            if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda runs as one process (data parallel over NCCL is not wired into tcd_bert yet)\n");
            return 1;
        }
#else
        if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
        return 1;
#endif
    }
    fo.device = dev;
    if (!main_rank && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 alone prints

    try {
        const auto t_start = Clock::now();
        if (smoke) {  // only what the user did not set
            auto unset = [&](const char* f) { return app.count(f) == 0; };
            if (unset("--vocab")) mc.vocab = 1000;
            if (unset("--spm-lines")) spm_lines = 8000;
            if (unset("--dim")) mc.dim = 32;
            if (unset("--experts")) mc.experts = 8;
            if (unset("--seq-len")) seq_len = 64;
            if (unset("--segments")) max_segments = 96;
            if (unset("--heldout-segments")) heldout_segments = 16;
            if (unset("--ood-segments")) ood_segments = 8;
            if (unset("--epochs")) po.epochs = 2;
            if (unset("--batch")) po.batch = 8;
            if (unset("--groups")) po.groups = 4;
            if (unset("--group-size")) po.group_size = 64;
            if (unset("--max-train")) max_train = 200;
            if (unset("--max-dev")) max_dev = 100;
            if (unset("--ft-epochs")) fo.epochs = 1;
            if (unset("--ft-max-len")) fo.max_len = 32;
        }
        if (app.count("--ffn-dim") == 0) mc.ffn_dim = 4 * mc.dim;  // BERT's 4H (see the default above)
        mc.max_len = std::max(seq_len, fo.max_len);
        const std::vector<uint64_t> seeds = parse_seeds(seeds_s);
        MOEKD_CHECK(max_train == -1 || max_train > 0, "--max-train ", max_train,
                    " must be a positive number of examples, or -1 for all");
        MOEKD_CHECK(max_dev == -1 || max_dev > 0, "--max-dev ", max_dev, " must be a positive number of examples, or -1 for all");
        MOEKD_CHECK(!app.count("--teacher-layers") || teacher_layers > 0, "--teacher-layers ", teacher_layers,
                    " must be positive (leave it out for the default, --layers)");
        MOEKD_CHECK(mc.dim % mc.heads == 0, "--heads ", mc.heads, " does not divide --dim ", mc.dim);
        on_rank0(*comm, [&] {  // refuse a FIFO / device node / directory at an output path before any work
            for (const char* f : {"log.jsonl", "results.md", "trend.svg", "spm_train.txt"})
                (void)io::resolve_write_target(out_dir + "/" + f);
        });
        ModelConfig tc = mc;
        tc.layers = teacher_layers > 0 ? teacher_layers : mc.layers;
        po.seed = seed;
        po.comm = comm;
        const tcd::TcdWeights full_w{lambda_t, lambda_i, lambda_a};
        // the runs: teacher, MoE, MoE w/ TCD (+ ablations)
        std::vector<RunRecord> runs;
        auto add_run = [&](const char* key, const char* label, bool moe, tcd::TcdWeights w) {
            RunRecord r;
            r.key = key, r.label = label, r.moe = moe, r.weights = w;
            runs.push_back(r);
        };
        add_run("teacher", "Vanilla BERT (teacher)", false, {0, 0, 0});
        add_run("moe", "MoE BERT", true, {0, 0, 0});
        auto tcd_run = [&](const char* key, const char* label, tcd::TcdWeights w) { add_run(key, label, true, w); };
        // the ablation adds the terms one by one, as the paper's Table 3 (T, T+I, T+I+A). With the
        // default lambda_A = 0 the main TCD run is T+I, so the ablation adds T+I+A with lambda_A = 1
        // (the paper's larger-scale weight) instead of repeating T+I.
        if (ablations) {
            tcd_run("tcd-t", "MoE BERT w/ TCD (T)", {lambda_t, 0, 0});
            if (lambda_a > 0) tcd_run("tcd-ti", "MoE BERT w/ TCD (T+I)", {lambda_t, lambda_i, 0});
        }
        const bool any_tcd = lambda_t > 0 || lambda_i > 0 || lambda_a > 0;
        if (any_tcd) tcd_run("tcd", "MoE BERT w/ TCD", full_w);  // the paper's name at both scales
        if (ablations && lambda_a == 0) tcd_run("tcd-tia", "MoE BERT w/ TCD (T+I+A)", {lambda_t, lambda_i, 1.0});
        for (auto& r : runs)
            if (r.key.rfind("tcd", 0) == 0) {
                PretrainOptions o = po;
                o.tcd = r.weights;
                o.batch = std::max<int64_t>(1, po.batch / R);  // a rank's smallest share of a step
                dry_run_tcd(mc, tc, o, seq_len);
            }

        // ---- data ------------------------------------------------------------------------------
        // under mpirun rank 0 makes the folders, corpus, vocabulary and task files; the others wait
        on_rank0(*comm, [&] { fs::create_directories(out_dir + "/ckpt"); });
        (void)data::glue_task_info(task_name);  // an unknown task name fails here, before any work
        Task task;
        if (!glue_dir.empty()) task = load_task(task_name, glue_dir, Corpus{}, out_dir, seed, max_train, max_dev);
        if (corpus_files.empty()) {
            on_rank0(*comm, [&] { data_dir = ensure_corpus(data_dir, !app.count("--data")); });
            if (!main_rank) data_dir = ensure_corpus(data_dir, false);  // rank 0 has built it
        }
        const Corpus corpus = load_corpus(data_dir, corpus_files, 0.02, seed);
        std::printf("tcd_bert: corpus %s: %zu training / %zu held-out lines\n", corpus.source.c_str(),
                    corpus.train.size(), corpus.heldout.size());
        std::fflush(stdout);
        auto t0 = Clock::now();
        std::optional<text::SentencePiece> sp0;
        on_rank0(*comm, [&] { sp0 = train_vocab(corpus, out_dir, int(mc.vocab), size_t(spm_lines), false); });
        if (!main_rank) sp0 = train_vocab(corpus, out_dir, int(mc.vocab), size_t(spm_lines), true);  // rank 0's file
        const text::SentencePiece& sp = *sp0;
        mc.vocab = tc.vocab = sp.vocab_size();
        const auto train_segs = pack_segments(corpus.train, sp, seq_len, size_t(max_segments), seed);
        const auto held_segs = pack_segments(corpus.heldout, sp, seq_len, size_t(heldout_segments), seed + 1);
        MOEKD_CHECK(!held_segs.empty(), "the held-out text is shorter than one segment of ", seq_len, " tokens");
        std::printf("vocabulary: %lld SentencePiece pieces (%.1f s); pre-training %zu segments of %lld tokens per epoch, "
                    "held-out %zu\n", (long long)mc.vocab, seconds_since(t0), train_segs.size(), (long long)seq_len,
                    held_segs.size());
        if (glue_dir.empty()) task = load_task(task_name, glue_dir, corpus, out_dir, seed, max_train, max_dev, main_rank);
        if (R > 1)
            std::printf("data parallel: %d ranks (%s), %lld pre-training segments per step split over them; "
                        "fine-tuning and evaluation on every rank alike\n",
                        R, comm->backend().c_str(), (long long)po.batch);
        const EncodedTask etask = encode_task(task, sp, fo.max_len);
        std::printf("task %s (%s, %s): %zu train / %zu dev examples, %s\n", task.info.name.c_str(),
                    task.info.pair ? "pairs" : "single sentences",
                    task.info.regression ? "regression" : (std::to_string(task.info.num_labels()) + " classes").c_str(),
                    task.train.size(), task.dev.size(), task.source.c_str());
        // out-of-distribution text (Table 4)
        std::vector<std::string> ood_domains;
        std::map<std::string, std::vector<std::vector<int64_t>>> ood;
        if (ood_segments > 0 && corpus_files.empty()) {
            const std::string root = corpus_root(data_dir);
            const std::vector<std::pair<std::string, std::string>> src{
                {"code", root + "/usr/include"}, {"ui", root + "/usr/share/locale"}, {"prose", root + "/usr/share/doc/git-doc"}};
            for (auto& [dom, path] : src) {
                if (!fs::exists(path)) continue;
                const auto text = english::read_ood_text(path, dom, size_t(ood_segments) * 8);
                auto segs = pack_segments(text, sp, seq_len, size_t(ood_segments), seed + 2);
                if (segs.empty()) continue;
                ood_domains.push_back(dom);
                ood[dom] = std::move(segs);
            }
        }
        const std::string cap = mc.capacity_factor > 0 ? "capacity factor " + std::to_string(mc.capacity_factor) : "dropless";
        std::printf("model: BERT D %lld, %lld layers, %lld heads, FFN %lld; MoE: %lld experts top-%lld, %s, lambda_B %g; "
                    "TCD: lambda_T %g lambda_I %g lambda_A %g, %lld groups x %lld tokens\n",
                    (long long)mc.dim, (long long)mc.layers, (long long)mc.heads, (long long)mc.ffn_dim,
                    (long long)mc.experts, (long long)mc.top_k, cap.c_str(), mc.lambda_b, lambda_t, lambda_i, lambda_a,
                    (long long)po.groups, (long long)po.group_size);
        if (dev == Device::CUDA) std::printf("device: cuda (pre-training, fine-tuning and evaluation on the GPU)\n");
        std::fflush(stdout);

        std::optional<JsonLog> jlog;  // rank 0's
        if (main_rank) jlog.emplace(out_dir + "/log.jsonl");
        auto jwrite = [&](const json::Object& o) {
            if (jlog) jlog->write(o);
        };
        jwrite({{"event", "config"}, {"task", task.info.name}, {"dim", mc.dim}, {"layers", mc.layers},
                  {"heads", mc.heads}, {"ffn_dim", mc.ffn_dim}, {"experts", mc.experts}, {"vocab", mc.vocab},
                  {"seq_len", seq_len}, {"segments", int64_t(train_segs.size())}, {"epochs", po.epochs},
                  {"lambda_b", mc.lambda_b}, {"capacity_factor", mc.capacity_factor}, {"lambda_t", lambda_t}, {"lambda_i", lambda_i}, {"lambda_a", lambda_a},
                  {"groups", po.groups}, {"group_size", po.group_size}, {"seed", int64_t(seed)}});

        // ---- pre-training ------------------------------------------------------------------------
        std::shared_ptr<nn::BertEncoder<float>> teacher;
        for (size_t ri = 0; ri < runs.size(); ++ri) {
            RunRecord& r = runs[ri];
            Generator gen(seed * 1000003ULL + ri);
            auto m = make_bert(r.key == "teacher" ? tc : mc, r.moe, gen);  // drawn on the CPU: the same model on every device
            m->to(dev);
            r.params = m->num_parameters();
            PretrainOptions o = po;
            o.tcd = r.weights;
            std::printf("[%s] pre-training, %lld parameters%s\n", r.label.c_str(), (long long)r.params,
                        r.key.rfind("tcd", 0) == 0 ? ", distilling from the frozen teacher" : "");
            std::fflush(stdout);
            const std::string ckpt = out_dir + "/ckpt/" + r.key + ".safetensors";
            const auto t1 = Clock::now();
            r.epochs = pretrain(r.label, *m, r.key == "teacher" ? nullptr : teacher.get(), train_segs, held_segs, mc.vocab,
                                o, [&](const EpochLog& e) {
                                    r.snapshots.push_back(snapshot(*m));
                                    if (main_rank)
                                        io::write_safetensors(ckpt, m->state_dict(), {{"format", "tcd_bert " + r.key},
                                                                                  {"epoch", std::to_string(e.epoch)}});
                                    std::printf("  epoch %d  mlm %.4f  balance %.3g  L_T %.4f  L_I %.4f  L_A %.4f  "
                                                "held-out LL %.4f  (%.1f s)\n",
                                                e.epoch, e.mlm, e.balance, e.trunk, e.inner, e.attention, e.heldout_ll,
                                                e.seconds);
                                    if (r.moe)
                                        std::printf("           routing: top-1 gate %.4f (uniform 1/E = %.4f), busiest expert "
                                                    "%.2fx the mean load, dropped %.2f%%, KL(uniform || q) %.2e\n",
                                                    e.gate, 1.0 / double(mc.experts), e.max_load, 100 * e.dropped, e.kl);
                                    std::fflush(stdout);
                                    jwrite({{"event", "pretrain_epoch"}, {"run", r.key}, {"epoch", e.epoch},
                                              {"mlm", jnum(e.mlm)}, {"balance", jnum(e.balance)}, {"l_t", jnum(e.trunk)},
                                              {"l_i", jnum(e.inner)}, {"l_a", jnum(e.attention)},
                                              {"heldout_ll", jnum(e.heldout_ll)}, {"seconds", jnum(e.seconds)},
                                              {"gate", jnum(e.gate)}, {"max_load", jnum(e.max_load)},
                                              {"dropped", jnum(e.dropped)}, {"kl", jnum(e.kl)},
                                              {"checkpoint", ckpt}});
                                });
            r.pretrain_seconds = seconds_since(t1);
            for (auto& [dom, segs] : ood) r.ood[dom] = heldout_ll(*m, segs, mc.vocab);
            if (!ood.empty()) {
                json::Object o2{{"event", "ood"}, {"run", r.key}};
                for (auto& [dom, v] : r.ood) o2.push_back({dom, jnum(v)});
                jwrite(o2);
            }
            if (r.key == "teacher") {
                teacher = m;
                teacher->freeze();
                teacher->eval();
            }
        }

        // ---- fine-tuning -------------------------------------------------------------------------
        std::printf("[fine-tuning] %s, %d epochs, seeds %s, modes %s%s\n", task.info.name.c_str(), fo.epochs,
                    seeds_s.c_str(), ft_modes.c_str(), no_trend ? "" : "; full fine-tuning of every epoch's checkpoint for the trend");
        std::fflush(stdout);
        for (auto& r : runs) {
            for (size_t k = 0; k < r.snapshots.size(); ++k) {
                const int epoch = r.epochs[k].epoch;
                const bool last = k + 1 == r.snapshots.size();
                if (!last && no_trend) continue;
                const DownstreamScore d = downstream(mc, r.moe, r.snapshots[k], etask, fo, last ? ft_modes : "full", seeds);
                if (!std::isnan(d.full)) r.trend[epoch] = d.full;
                if (last) r.final = d, r.has_final = true;
                std::printf("  %-26s epoch %d  %s %s  (full %s, adapters %s; %.1f s)\n", r.label.c_str(), epoch,
                            task.info.name.c_str(), pct(d.score).c_str(), pct(d.full).c_str(), pct(d.adapters).c_str(),
                            d.seconds);
                std::fflush(stdout);
                json::Object o{{"event", "finetune"}, {"run", r.key}, {"epoch", epoch}, {"task", task.info.name},
                               {"score", jnum(d.score)}, {"full", jnum(d.full)}, {"adapters", jnum(d.adapters)},
                               {"chosen", d.chosen}, {"seconds", jnum(d.seconds)}};
                for (auto& [mk, mv] : d.metrics) o.push_back({mk, jnum(mv)});
                jwrite(o);
            }
            r.snapshots.clear();
        }

        // ---- report ------------------------------------------------------------------------------
        // the order: main table (equal epochs), the paper's Table 3 (ablation), Table 1 (alignment), Table 4 (OOD)
        std::string md = table_main(runs, task.info) + "\n";
        if (ablations) md += table_ablation(runs, task.info) + "\n";
        if (!no_trend) md += table_alignment(runs, task.info) + "\n";
        if (!ood_domains.empty()) md += table_ood(runs, ood_domains) + "\n";
        std::printf("\n%s", md.c_str());
        if (main_rank) io::write_text_atomic(out_dir + "/results.md", md);  // checked
        if (!no_trend && main_rank) write_trend_svg(out_dir + "/trend.svg", runs, task.info);
        const double total = seconds_since(t_start);
        jwrite({{"event", "done"}, {"seconds", jnum(total)}});
        if (jlog) jlog->close();  // checked, before the line that says it was written
        std::printf("total %.1f s; wrote %s/results.md, log.jsonl%s\n", total, out_dir.c_str(),
                    no_trend ? "" : ", trend.svg");
    } catch (const std::exception& e) {  // a CollectiveError: printed once; else this rank ends the job
        return dist::report_error(*comm, "tcd_bert", e);
    }
    return 0;
}
