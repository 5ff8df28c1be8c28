// cli.hpp — the command line of tcd_bert: every flag, its default and the paper line it follows
// (or why ours differs), its range check; --smoke's tiny configuration (only what the user did not
// set), and the checks and defaults that depend on several flags (resolve, after parsing).
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <moekd/io/json.hpp>

#include "../common/cli_checks.hpp"
#include "finetune.hpp"
#include "model.hpp"
#include "pretrain.hpp"

#ifndef TCD_SOURCE_DIR
#define TCD_SOURCE_DIR "."
#endif

namespace tcdb {

/// Every flag's value.
struct Options {
    std::string data_dir = std::string(TCD_SOURCE_DIR) + "/build/tcd-data", out_dir = "tcd_bert_out";
    std::vector<std::string> corpus_files;
    std::string task_name = "WNPOS", glue_dir, seeds_s = "1,2,3", ft_modes = "both", device_name = "cpu", precision = "fp32";
    std::string pretrain_decay = "adamw";  // or "l2" (PretrainOptions::l2)
    std::string finetune_from;  // an earlier run's --out: fine-tune its checkpoints, no pre-training (pretrained.hpp)
    ModelConfig mc;
    int64_t teacher_layers = -1, seq_len = 128, max_segments = 2500, heldout_segments = 128, ood_segments = 64;
    int64_t spm_lines = 20000, max_train = 2000, max_dev = 600;
    PretrainOptions po;
    // lambda_T = lambda_I = 1; lambda_A = 0 "for smaller-scale models" (line 352; "it harmed
    // transfer capability in the smaller scale", line 180): ours (D = 64) is smaller than the
    // paper's small scale (H = 128). Until issue 17 lambda_A was 1.
    double lambda_t = 1.0, lambda_i = 1.0, lambda_a = 0.0;
    FinetuneOptions fo;
    bool ablations = false, no_trend = false, smoke = false;
    uint64_t seed = 1;

    Options() {
        // FFN (and expert) width: 4 x D unless --ffn-dim is given (set after parsing), BERT's ratio
        // ("retaining the original structure of the BERT model", line 74; H = 128 -> 6.3M parameters at
        // 12 layers, line 350, needs FFN 512). Until issue 17 the default was 2 x D (128).
        mc.vocab = 2000, mc.dim = 64, mc.layers = 2, mc.heads = 2, mc.ffn_dim = 256, mc.experts = 64;
        po.epochs = 3, po.batch = 16, po.lr = 3e-3, po.groups = 32, po.group_size = 128;  // groups: l.352 (8 until 2026-12-08)
        fo.epochs = 3, fo.max_len = 48, fo.lr_full = 1e-3, fo.lr_adapter = 3e-3;
    }
};

/// Registers every flag of `app` into `o`.
inline void add_flags(CLI::App& app, Options& o) {
    app.add_option("--data", o.data_dir, "output folder of scripts/build_tcd_corpus.sh (built there if it is the default and missing)")
        ->capture_default_str();
    app.add_option("--corpus", o.corpus_files, "pre-train on these UTF-8 text files instead (one text per line; repeatable)");
    app.add_option("--out", o.out_dir, "folder for log.jsonl, results.md, trend.svg, checkpoints")->capture_default_str();
    app.add_option("--task", o.task_name, "downstream task: built-in WNPOS, WNGLOSS, FORTUNE; or a GLUE task with --glue-dir "
                                        "(CoLA, SST-2, MRPC, STS-B, RTE, MNLI, QNLI, QQP, WNLI)")->capture_default_str();
    app.add_option("--glue-dir", o.glue_dir, "folder with the task's train.tsv and dev.tsv (GLUE's layout)");
    app.add_option("--max-train", o.max_train, "fine-tuning examples used (-1: all)")->capture_default_str();
    app.add_option("--max-dev", o.max_dev, "dev examples scored (-1: all)")->capture_default_str();
    app.add_option("--seed", o.seed, "seed of initialisation, data order and masks")->capture_default_str()->check(cli_checks::seed());
    app.add_option("--seeds", o.seeds_s, "fine-tuning seeds, comma list (scores are averaged; the paper: \"the average performance of multiple runs\", l.362)")->capture_default_str();
    app.add_option("--vocab", o.mc.vocab, "SentencePiece vocabulary size")->capture_default_str()->check(cli_checks::in(100, 64000));
    app.add_option("--spm-lines", o.spm_lines, "corpus lines the vocabulary is trained on")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--dim", o.mc.dim, "hidden size D")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--layers", o.mc.layers, "encoder layers (student and teacher)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--teacher-layers", o.teacher_layers, "teacher depth (default: --layers; TCD needs them equal)");
    app.add_option("--heads", o.mc.heads, "attention heads")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ffn-dim", o.mc.ffn_dim, "FFN width (each expert's too); default 4 x --dim")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--experts", o.mc.experts, "experts per MoE layer (the paper: 64)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lambda-b", o.mc.lambda_b, "weight of the KL(uniform || mean router prob) balance loss (the paper: 1000)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--capacity-factor", o.mc.capacity_factor, "expert capacity factor in training, evaluation and fine-tuning "
                   "(0: dropless, no capacity: our choice; the paper names FastMoE, line 350, but no gate or capacity)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_flag("--router-bias,!--no-router-bias", o.mc.router_bias, "router logits W_r x + b_r (eq. 1, line 85; the default), or W_r x without b_r")->capture_default_str();
    app.add_option("--seq-len", o.seq_len, "pre-training segment length (tokens, <= 128 as the paper)")->capture_default_str()->check(cli_checks::in(8, 512));
    app.add_option("--segments", o.max_segments, "pre-training segments per epoch (0: the whole corpus)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--heldout-segments", o.heldout_segments, "held-out segments for the MLM log-likelihood")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ood-segments", o.ood_segments, "segments per out-of-distribution domain (0: skip)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--epochs", o.po.epochs, "pre-training epochs (each model)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--batch", o.po.batch, "pre-training segments per step")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lr", o.po.lr, "pre-training AdamW peak learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--pretrain-decay", o.pretrain_decay,
                   "pre-training weight decay 0.01 (\"an L2 weight of 0.01\", l.356): adamw (decoupled, BERT's) or l2 "
                   "(added to the gradient before Adam, torch.optim.Adam's weight_decay)")
        ->capture_default_str()->check(CLI::IsMember({"adamw", "l2"}));
    app.add_option("--lambda-t", o.lambda_t, "TCD trunk weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--lambda-i", o.lambda_i, "TCD inner weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--lambda-a", o.lambda_a, "TCD attention weight (0: off)")->capture_default_str()->check(cli_checks::non_negative());
    app.add_option("--groups", o.po.groups, "TCD token groups per step (the paper: 32)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--group-size", o.po.group_size, "tokens per TCD group (the paper: 128)")->capture_default_str()->check(cli_checks::positive());
    app.add_flag("--ablations", o.ablations, "also pre-train MoE w/ TCD (T), and (T+I+A) when --lambda-a is 0 (else (T+I)), for the ablation (the paper's Table 3)");
    app.add_option("--ft-epochs", o.fo.epochs, "fine-tuning epochs")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-batch", o.fo.batch, "fine-tuning batch")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-lr", o.fo.lr_full, "full fine-tuning learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-warmup", o.fo.warmup_frac, "fine-tuning warmup, a fraction of its steps (the paper: 0.06, l.362)")
        ->capture_default_str()->check(cli_checks::in(0.0, 1.0, false, true));
    app.add_option("--adapter-lr", o.fo.lr_adapter, "adapter fine-tuning learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--ft-modes", o.ft_modes, "full, adapters or both (then the better of the two seed means is reported)")
        ->capture_default_str()->check(CLI::IsMember({"full", "adapters", "both"}));
    app.add_option("--ft-max-len", o.fo.max_len, "fine-tuning sequence length")->capture_default_str()->check(cli_checks::in(8, 512));
    app.add_option("--adapter-dim", o.mc.adapter_dim, "adapter bottleneck width (the paper: {16, 64, 128} at H = 128, l.364)")
        ->capture_default_str()->check(cli_checks::positive());
    app.add_option("--finetune-from", o.finetune_from,
                   "an earlier run's --out: skip pre-training and fine-tune its last checkpoints (ckpt/, spm.model; the "
                   "pre-training flags must be that run's, checked against its log.jsonl; implies --no-trend)");
    app.add_flag("--no-trend", o.no_trend, "fine-tune only the last checkpoint (no Figure 5 / Table 1 alignment scores)");
    app.add_flag("--smoke", o.smoke, "a tiny configuration for CI (well under a minute)");
    app.add_option("--device", o.device_name, "where the models pre-train, fine-tune and are evaluated: cpu, or cuda (the GPU)")
        ->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--precision", o.precision,
                   "pre-training and fine-tuning products: fp32, or bf16 (moekd::Autocast: matmuls in bf16 with fp32 "
                   "accumulation; weights, gradients, AdamW, norms, the MLM / TCD losses and evaluation in fp32; on the CPU through oneDNN, on a GPU through cublasGemmEx)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16"}));
}

inline std::vector<uint64_t> parse_seeds(const std::string& s) {
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

/// The flags that shape the models and their pre-training, as (log.jsonl key, flag, value): what
/// --finetune-from checks against the earlier run's config line (the fine-tuning flags may differ).
inline std::vector<std::tuple<std::string, std::string, json::Value>> pretraining_flags(const Options& o, int64_t teacher_layers) {
    return {{"dim", "--dim", o.mc.dim}, {"layers", "--layers", o.mc.layers}, {"heads", "--heads", o.mc.heads},
            {"ffn_dim", "--ffn-dim", o.mc.ffn_dim}, {"experts", "--experts", o.mc.experts}, {"vocab", "--vocab", o.mc.vocab},
            {"seq_len", "--seq-len", o.seq_len}, {"epochs", "--epochs", o.po.epochs}, {"lambda_b", "--lambda-b", o.mc.lambda_b},
            {"capacity_factor", "--capacity-factor", o.mc.capacity_factor},
            {"router_bias", "--router-bias / --no-router-bias", o.mc.router_bias}, {"lambda_t", "--lambda-t", o.lambda_t},
            {"lambda_i", "--lambda-i", o.lambda_i}, {"lambda_a", "--lambda-a", o.lambda_a}, {"groups", "--groups", o.po.groups},
            {"group_size", "--group-size", o.po.group_size}, {"seed", "--seed", int64_t(o.seed)},
            {"pretrain_decay", "--pretrain-decay", o.pretrain_decay}, {"teacher_layers", "--teacher-layers", teacher_layers},
            {"max_len", "--seq-len / --ft-max-len (the position table holds the larger)", o.mc.max_len}};
}

/// After parsing: --smoke's sizes, the defaults that follow other flags, and the checks across flags.
inline void resolve(const CLI::App& app, Options& o) {
    if (o.smoke) {  // only what the user did not set
        auto unset = [&](const char* f) { return app.count(f) == 0; };
        if (unset("--vocab")) o.mc.vocab = 1000;
        if (unset("--spm-lines")) o.spm_lines = 8000;
        if (unset("--dim")) o.mc.dim = 32;
        if (unset("--experts")) o.mc.experts = 8;
        if (unset("--seq-len")) o.seq_len = 64;
        if (unset("--segments")) o.max_segments = 96;
        if (unset("--heldout-segments")) o.heldout_segments = 16;
        if (unset("--ood-segments")) o.ood_segments = 8;
        if (unset("--epochs")) o.po.epochs = 2;
        if (unset("--batch")) o.po.batch = 8;
        if (unset("--groups")) o.po.groups = 4;
        if (unset("--group-size")) o.po.group_size = 64;
        if (unset("--max-train")) o.max_train = 200;
        if (unset("--max-dev")) o.max_dev = 100;
        if (unset("--ft-epochs")) o.fo.epochs = 1;
        if (unset("--ft-max-len")) o.fo.max_len = 32;
        if (unset("--seeds")) o.seeds_s = "1";
    }
    o.po.l2 = o.pretrain_decay == "l2";
    if (app.count("--ffn-dim") == 0) o.mc.ffn_dim = 4 * o.mc.dim;  // BERT's 4H (see the default above)
    o.mc.max_len = std::max(o.seq_len, o.fo.max_len);
    MOEKD_CHECK(o.max_train == -1 || o.max_train > 0, "--max-train ", o.max_train,
                " must be a positive number of examples, or -1 for all");
    MOEKD_CHECK(o.max_dev == -1 || o.max_dev > 0, "--max-dev ", o.max_dev, " must be a positive number of examples, or -1 for all");
    MOEKD_CHECK(!app.count("--teacher-layers") || o.teacher_layers > 0, "--teacher-layers ", o.teacher_layers,
                " must be positive (leave it out for the default, --layers)");
    if (!o.finetune_from.empty()) {
        namespace fs = std::filesystem;
        MOEKD_CHECK(fs::is_directory(o.finetune_from), "--finetune-from: '", o.finetune_from, "' is not a directory");
        MOEKD_CHECK(!fs::exists(o.out_dir) || !fs::equivalent(o.out_dir, o.finetune_from), "--out '", o.out_dir,
                    "' is the --finetune-from folder: its log.jsonl, the record the checkpoints are checked against, "
                    "would be replaced; write to another folder");
        o.no_trend = true;  // only the last epoch's checkpoint is on disk
    }
    MOEKD_CHECK(o.mc.dim % o.mc.heads == 0, "--heads ", o.mc.heads, " does not divide --dim ", o.mc.dim);
}

}  // namespace tcdb
