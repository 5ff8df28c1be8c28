// run_config.hpp — what one training run of the example is: its configuration (RunConfig), what
// it reports (RunResult), the checked configuration a checkpoint must match to be resumed
// (config_string), and the running means of the log that a checkpoint carries (LogAccumulator).
#pragma once

#include <charconv>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <moekd/dist/communicator.hpp>

#include "model.hpp"
#include "train.hpp"

namespace tsjt {

struct RunConfig {
    Mode mode = Mode::tsjt;
    bool indep = false;          // false: shared architecture; true: independent device model
    ModelConfig moe;             // the MoE model
    ModelConfig dense;           // shared: width = moe's, depth = dense depth; indep: the device model
    double lr = 5e-3, adam_eps = 1e-8, clip_norm = 1.0, label_smoothing = 0.0;  // Eq. 2: plain CE
    int64_t warmup = 100;
    double alpha_moe = 5.0, alpha_dense = 10.0;  // l.410
    // The KL enters the loss as alpha * kl_scale * KL. The paper sets alpha "to maintain an equal
    // magnitude with the balancing loss" (l.410) without saying how its KL is reduced; ours sums
    // over the vocabulary and averages over tokens, which at kl_scale 1 puts alpha * KL 15-30x
    // above the balance loss. kl_scale is our constant that restores the paper's proportion
    // (measured: docs/tsjt.md, "The KL scale").
    double kl_scale = 0.02;
    double t_sep = -1;           // < 0: automatic
    int kl_window = 20;
    int64_t min_switch_steps = 0;  // 0: = warmup
    int64_t max_steps = 1000;
    int update_freq = 1;
    int64_t max_tokens = 1200;
    uint64_t seed = 1;
    int64_t save_every = 200, log_every = 10;
    int keep_last = 2;
    std::string dir;             // run directory: ckpt/, log.jsonl, submodels
    std::string data_config;     // checked too: "key=value ..." of the data (data.hpp data_config + tokenizer hash)
    bool progress = true;
    Device device = Device::CPU;  // where both models train and decode (drawn on the CPU, then moved)
    std::shared_ptr<dist::Communicator> comm;  // data parallel when size() > 1 (null: one process)
    bool expert_parallel = false;  // the MoE layers' experts split over comm's ranks (run.hpp)
    Precision precision = Precision::fp32;  // of the training step's products (the one that runs here)
};

struct RunResult {
    std::string mode;
    std::string precision = "fp32";  // of the products the training ran
    int64_t steps = 0, switch_step = -1, params_moe = 0, params_dense = 0, params_total = 0;
    double t_sep = -1, train_seconds = 0, last_ce_moe = 0, last_ce_dense = 0, last_kl = 0;
    int64_t updates_this_process = 0;  // 0 when a finished run was found and only evaluated
    std::vector<double> bleu_moe, bleu_dense;  // per direction
};

/// What must match for a checkpoint to be resumed: "key=value ..." (keys are the flags where
/// there is one, so that a mismatch names them) of everything that changes what a step
/// computes: the models, the training rule, the data and the tokenizer. Not the number of
/// updates (a finished run is extended with a larger --max-steps), nor logging/saving.
inline std::string run_config_string(const RunConfig& cfg_, const ModelConfig& dense_cfg) {
    auto num = [](double v) {
        char b[40];
        const auto r = std::to_chars(b, b + sizeof b, v);  // shortest exact form
        return std::string(b, r.ptr);
    };
    std::string dense = cfg_.indep ? msg(" --device-d-model=", dense_cfg.d_model, " --device-ffn=", dense_cfg.ffn_dim,
                                         " --device-layers=", dense_cfg.enc_layers, "/", dense_cfg.dec_layers)
                                   : msg(" --dense-layers=", dense_cfg.enc_layers, "/", dense_cfg.dec_layers);
    return msg("mode=", mode_name(cfg_.mode), " --arch=", cfg_.indep ? "indep" : "shared", " vocab=", cfg_.moe.vocab,
               " --d-model=", cfg_.moe.d_model, " --heads=", cfg_.moe.heads, " --ffn=", cfg_.moe.ffn_dim,
               " --layers=", cfg_.moe.enc_layers, "/", cfg_.moe.dec_layers, " --experts=", cfg_.moe.experts, dense,
               " --seed=", cfg_.seed, " --lr=", num(cfg_.lr), " --warmup=", cfg_.warmup, " --max-tokens=",
               cfg_.max_tokens, " --update-freq=", cfg_.update_freq, " --alpha-moe=", num(cfg_.alpha_moe),
               " --alpha-dense=", num(cfg_.alpha_dense),
               " --kl-scale=", num(cfg_.kl_scale), " --t-sep=", cfg_.t_sep < 0 ? std::string("auto") : num(cfg_.t_sep),
               " --kl-window=", cfg_.kl_window, " --label-smoothing=", num(cfg_.label_smoothing), " --dropout=",
               num(cfg_.moe.dropout), " clip_norm=", num(cfg_.clip_norm), " adam_eps=", num(cfg_.adam_eps),
               " min_switch_steps=", cfg_.min_switch_steps,
               cfg_.expert_parallel ? msg(" --expert-parallel=", cfg_.comm ? cfg_.comm->size() : 1) : std::string(),
               // fp32 adds nothing, so that checkpoints from before --precision still resume
               cfg_.precision == Precision::bf16 ? " --precision=bf16" : "",
               cfg_.data_config.empty() ? "" : " ", cfg_.data_config);
}

/// Sums of the logged quantities since the last log line (checkpointed: "log.*").
struct LogAccumulator {
    double ce_moe = 0, ce_dense = 0, kl = 0;
    int64_t n = 0;
    void add(double a, double b, double k) { ce_moe += a, ce_dense += b, kl += k, ++n; }
    std::map<std::string, std::string> save() const {
        auto num = [](double v) {
            char b[40];
            std::snprintf(b, sizeof b, "%.17g", v);
            return std::string(b);
        };
        return {{"log.ce_moe", num(ce_moe)}, {"log.ce_dense", num(ce_dense)}, {"log.kl", num(kl)},
                {"log.n", std::to_string(n)}};
    }
    void load(const std::map<std::string, std::string>& s) {
        *this = {};
        if (!s.count("log.n")) return;  // a checkpoint of an older version: means restart
        ce_moe = std::stod(s.at("log.ce_moe")), ce_dense = std::stod(s.at("log.ce_dense"));
        kl = std::stod(s.at("log.kl")), n = std::stoll(s.at("log.n"));
    }
};

}  // namespace tsjt
