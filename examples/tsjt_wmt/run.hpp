// run.hpp — one training run of the example (one mode: single, constjt or tsjt) from fresh
// models to BLEU: builds the MoE model and the dense/device model, trains both with train.hpp's
// rule (Adam (0.9, 0.98), inverse-sqrt schedule with warmup, token-count batches, gradient
// accumulation), writes a JSONL log and rotating checkpoints (resuming from the newest one when
// the run directory has any), decodes the test split of every direction with both models and
// extracts each submodel as a standalone model directory.
//
// Resume is bit-exact: a run stopped after k updates (or killed after its last checkpoint) and
// resumed gives the same parameters, optimizer state, log lines and stage switch as one
// uninterrupted run (smoke_test.sh resume-exact checks it). The checkpoint holds the models,
// Adam's moments and step, every dropout/jitter generator, the data position (epoch, batch),
// the stage controller's KL window, and the log's running means; on resume the log is cut back
// to the checkpoint's step, so updates replayed after a kill are not logged twice.
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/checkpoint.hpp>
#include <moekd/io/json.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>

#include <moekd/text/bleu.hpp>

#include "translate.hpp"
#include "submodel.hpp"
#include "train.hpp"

namespace tsjt {

struct RunConfig {
    Mode mode = Mode::tsjt;
    bool indep = false;          // false: shared architecture; true: independent device model
    ModelConfig moe;             // the MoE model
    ModelConfig dense;           // shared: width = moe's, depth = dense depth; indep: the device model
    double lr = 5e-3, adam_eps = 1e-8, clip_norm = 1.0, label_smoothing = 0.1;
    int64_t warmup = 100;
    double alpha_moe = 5.0, alpha_dense = 10.0;
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
    bool progress = true;
};

struct RunResult {
    std::string mode;
    int64_t steps = 0, switch_step = -1, params_moe = 0, params_dense = 0, params_total = 0;
    double t_sep = -1, train_seconds = 0, last_ce_moe = 0, last_ce_dense = 0, last_kl = 0;
    int64_t updates_this_process = 0;  // 0 when a finished run was found and only evaluated
    std::vector<double> bleu_moe, bleu_dense;  // per direction
};

/// Both submodels under one module ("moe.", "dense."), for checkpoints.
class Composite : public nn::Module<F> {
public:
    Composite(std::shared_ptr<nn::Module<F>> a, std::shared_ptr<nn::Module<F>> b) {
        register_module("moe", std::move(a));
        register_module("dense", std::move(b));
    }
};

class Run {
public:
    std::shared_ptr<nn::EncoderDecoder<F>> moe_model;
    std::shared_ptr<nn::Module<F>> dense_model;  // SharedDense or nn::EncoderDecoder
    ModelConfig dense_cfg;                        // what the dense model extracts to
    Sub moe_sub, dense_sub;

    explicit Run(const RunConfig& cfg) : cfg_(cfg), ctl_(cfg.mode, cfg.t_sep, cfg.kl_window,
                                                         cfg.min_switch_steps > 0 ? cfg.min_switch_steps : cfg.warmup) {
        Generator gen(cfg.seed);
        moe_model = make_model(cfg.moe, gen);
        if (!cfg.indep && cfg.mode != Mode::single) {
            auto d = std::make_shared<SharedDense>(*moe_model, cfg.moe, cfg.dense.enc_layers, cfg.dense.dec_layers, gen);
            dense_cfg = d->config();
            dense_sub = Sub::of(*d, cfg.moe.pad);
            dense_model = d;
        } else {
            // indep: the device model; single + shared: a dense model of the shared one's shape, alone
            dense_cfg = cfg.dense;
            dense_cfg.experts = 0;
            auto d = make_model(dense_cfg, gen);
            dense_sub = Sub::of(*d, cfg.moe.pad);
            dense_model = d;
        }
        moe_sub = Sub::of(*moe_model, cfg.moe.pad);
        composite_ = std::make_shared<Composite>(moe_model, dense_model);
        params_ = composite_->parameters();
        moe_params_ = moe_model->parameters();
        dense_params_ = dense_model->parameters();
        disjoint_ = count_elements(params_) == count_elements(moe_params_) + count_elements(dense_params_);
        opt_ = std::make_unique<optim::Adam<F>>(std::vector<optim::ParamGroup<F>>{{params_, cfg.lr, 0.0}}, 0.9, 0.98,
                                                cfg.adam_eps);
        for (auto& [name, m] : composite_->named_modules()) {
            if (auto* d = dynamic_cast<nn::Dropout<F>*>(m.get())) gens_[name] = &d->generator();
            if (auto* x = dynamic_cast<moe::MoELayer<F>*>(m.get())) gens_[name] = &x->generator();
        }
    }

    int64_t params_moe() const { return moe_model->num_parameters(); }
    int64_t params_dense() const { return count_elements(dense_model->parameters()); }
    int64_t params_total() const { return count_elements(params_); }
    const StageController& controller() const { return ctl_; }

    /// Trains up to cfg.max_steps updates, resuming from the newest checkpoint in cfg.dir/ckpt.
    void train(const std::vector<Example>& train_set, RunResult& res) {
        namespace fs = std::filesystem;
        const std::string ckdir = (fs::path(cfg_.dir) / "ckpt").string();
        fs::create_directories(ckdir);
        const auto batches = token_batches(train_set, cfg_.max_tokens);
        MOEKD_CHECK(!batches.empty(), "tsjt: no training batch (empty training set?)");
        io::TrainState st;
        if (const std::string last = io::latest_checkpoint(ckdir); !last.empty()) {
            const io::CheckpointData<F> ck = io::read_checkpoint<F>(last);
            MOEKD_CHECK(ck.state.config == config_string(), "tsjt: checkpoint '", last, "' was written by another ",
                        "configuration (", ck.state.config, ") than this run (", config_string(),
                        "). HINT: use another --out directory or delete it");
            std::map<std::string, Generator*> g(gens_.begin(), gens_.end());
            st = io::apply_checkpoint<F>(ck, last, *composite_, opt_.get(), g);
            ctl_.load(st.extra);
            acc_.load(st.extra);
            std::printf("  resumed from %s (step %lld)\n", last.c_str(), (long long)st.step);
        }
        const std::string log_path = (fs::path(cfg_.dir) / "log.jsonl").string();
        // drop what was logged after the checkpoint (or all: fresh), and the end-of-run line of a
        // run that stopped there and now goes on (an uninterrupted run has no line there)
        truncate_log(log_path, st.step, st.step < cfg_.max_steps);
        std::ofstream log(log_path, std::ios::app);
        auto order = epoch_order(batches.size(), st.epoch);
        composite_->train(true);
        const auto t0 = std::chrono::steady_clock::now();
        int64_t tokens_done = 0, start_step = st.step;
        double ce_a = 0, ce_b = 0, kl = 0;
        while (st.step < cfg_.max_steps) {
            const double lr = optim::inverse_sqrt_lr(st.step + 1, cfg_.lr, cfg_.warmup);
            opt_->set_lr(lr);
            composite_->zero_grad();
            double sa = 0, sb = 0, sk = 0, sx = 0;
            int64_t toks = 0;
            const bool use_kl = ctl_.use_kl();
            for (int k = 0; k < cfg_.update_freq; ++k) {
                if (st.batch_index >= int64_t(order.size())) {
                    ++st.epoch;
                    st.batch_index = 0;
                    order = epoch_order(batches.size(), st.epoch);
                }
                const Batch b = make_batch(train_set, batches[order[st.batch_index++]]);
                const JointLoss jl = joint_loss(moe_sub, dense_sub, b, use_kl, cfg_.alpha_moe, cfg_.alpha_dense,
                                                cfg_.label_smoothing);
                MOEKD_CHECK(std::isfinite(jl.ce_moe) && std::isfinite(jl.ce_dense) && std::isfinite(jl.kl),
                            "tsjt: loss is not finite at step ", st.step + 1, " (ce_moe ", jl.ce_moe, ", ce_dense ",
                            jl.ce_dense, ", kl ", jl.kl, "). HINT: lower --lr");
                (jl.total * F(1.0 / cfg_.update_freq)).backward();
                sa += jl.ce_moe; sb += jl.ce_dense; sk += jl.kl; sx += jl.aux;
                toks += b.tokens;
            }
            if (cfg_.clip_norm > 0) {
                // separate models (indep, single) are clipped separately, so that each trains as
                // it would alone; models sharing layers take one combined step, clipped as one
                if (disjoint_) {
                    optim::clip_grad_norm(moe_params_, cfg_.clip_norm);
                    optim::clip_grad_norm(dense_params_, cfg_.clip_norm);
                } else {
                    optim::clip_grad_norm(params_, cfg_.clip_norm);
                }
            }
            opt_->step();
            ++st.step;
            tokens_done += toks;
            ce_a = sa / cfg_.update_freq;
            ce_b = sb / cfg_.update_freq;
            kl = sk / cfg_.update_freq;
            acc_.add(ce_a, ce_b, kl);
            const bool switched = ctl_.observe(st.step, kl);
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (switched)
                std::printf("%s  stage 2 from step %lld (KL window mean %.4f %s t_sep%s)\n", cfg_.progress ? "\n" : "",
                            (long long)st.step, ctl_.switch_mean(), ctl_.automatic() ? "=" : "<=",
                            ctl_.automatic() ? ", auto" : (" " + std::to_string(ctl_.t_sep())).c_str());
            const bool regular = st.step % cfg_.log_every == 0 || switched;  // else: the run's last update
            if (regular || st.step == cfg_.max_steps) {
                // values of this update, and (_avg) means over the updates since the last line;
                // %.17g: the logged numbers are the doubles themselves (resume tests compare them)
                char line[768];
                std::snprintf(line, sizeof line,
                              "{\"mode\": \"%s\", \"step\": %lld, \"epoch\": %lld, \"lr\": %.17g, \"ce_moe\": %.17g, "
                              "\"ce_dense\": %.17g, \"kl\": %.17g, \"aux\": %.17g, \"ce_moe_avg\": %.17g, "
                              "\"ce_dense_avg\": %.17g, \"kl_avg\": %.17g, \"stage\": %d, \"used_kl\": %s, "
                              "\"tokens\": %lld, \"end_only\": %s, \"seconds\": %.3f}",
                              mode_name(cfg_.mode), (long long)st.step, (long long)st.epoch, lr, ce_a, ce_b, kl,
                              sx / cfg_.update_freq, acc_.ce_moe / acc_.n, acc_.ce_dense / acc_.n, acc_.kl / acc_.n,
                              ctl_.stage(), use_kl ? "true" : "false", (long long)toks, regular ? "false" : "true", secs);
                if (regular) acc_ = {};  // an end-only line leaves the means running (resume goes on)
                log << line << '\n';
                log.flush();
            }
            if (cfg_.progress) {
                const double rate = double(st.step - start_step) / std::max(secs, 1e-9);
                std::fprintf(stderr, "\r  [%s] step %lld/%lld  ce moe %.3f dense %.3f  kl %.3f  stage %d  %.0f tok/s  ETA %.0fs   ",
                             mode_name(cfg_.mode), (long long)st.step, (long long)cfg_.max_steps, ce_a, ce_b, kl,
                             ctl_.stage(), tokens_done / std::max(secs, 1e-9),
                             double(cfg_.max_steps - st.step) / std::max(rate, 1e-9));
            }
            if (st.step % cfg_.save_every == 0 || st.step == cfg_.max_steps) save(ckdir, st);
        }
        if (cfg_.progress) std::fprintf(stderr, "\n");
        res.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        res.steps = st.step;
        res.updates_this_process = st.step - start_step;
        res.switch_step = ctl_.switch_step();
        res.t_sep = ctl_.t_sep();
        res.last_ce_moe = ce_a;
        res.last_ce_dense = ce_b;
        res.last_kl = kl;
    }

    /// BLEU of both submodels on each direction's test split (first `limit` sentences);
    /// hypotheses go to dir/hyp.<moe|dense>.<src>-<tgt>.
    void evaluate(const std::vector<Direction>& dirs, const text::SentencePiece& sp, size_t limit, int beam,
                  double lenpen, RunResult& res) {
        composite_->train(false);
        for (const Direction& d : dirs) {
            const size_t n = std::min(limit, d.test_src.size());
            const std::vector<std::string> src(d.test_src.begin(), d.test_src.begin() + n);
            const std::vector<std::string> ref(d.test_ref.begin(), d.test_ref.begin() + n);
            for (int which = 0; which < 2; ++which) {
                const std::vector<std::string> hyp = translate(which ? dense_sub : moe_sub, sp, d.tgt_lang, src, beam, lenpen);
                const double bleu = text::corpus_bleu(hyp, ref).score;
                (which ? res.bleu_dense : res.bleu_moe).push_back(bleu);
                std::ofstream f(std::filesystem::path(cfg_.dir) / ("hyp." + std::string(which ? "dense." : "moe.") + d.name()));
                for (const auto& h : hyp) f << h << '\n';
            }
        }
    }

    /// Writes dir/moe and dir/dense as standalone models.
    void extract(const std::string& spm_model) const {
        save_submodel((std::filesystem::path(cfg_.dir) / "moe").string(), *moe_model, cfg_.moe, spm_model);
        save_submodel((std::filesystem::path(cfg_.dir) / "dense").string(), *dense_model, dense_cfg, spm_model);
    }

    /// What must match for a checkpoint to be resumed.
    std::string config_string() const {
        char b[512];
        std::snprintf(b, sizeof b, "mode=%s indep=%d vocab=%lld d=%lld h=%lld f=%lld L=%lld/%lld E=%lld dense=%lld/%lld/%lld seed=%llu",
                      mode_name(cfg_.mode), int(cfg_.indep), (long long)cfg_.moe.vocab, (long long)cfg_.moe.d_model,
                      (long long)cfg_.moe.heads, (long long)cfg_.moe.ffn_dim, (long long)cfg_.moe.enc_layers,
                      (long long)cfg_.moe.dec_layers, (long long)cfg_.moe.experts, (long long)dense_cfg.d_model,
                      (long long)dense_cfg.enc_layers, (long long)dense_cfg.dec_layers, (unsigned long long)cfg_.seed);
        return b;
    }

private:
    std::vector<int64_t> epoch_order(size_t n, int64_t epoch) const {
        std::vector<int64_t> o(n);
        for (size_t i = 0; i < n; ++i) o[i] = int64_t(i);
        Generator g(cfg_.seed * 1000003ULL + uint64_t(epoch) + 17);
        shuffle(o, g);
        return o;
    }
    void save(const std::string& ckdir, io::TrainState st) {
        st.config = config_string();
        st.extra.clear();
        for (auto& [k, v] : ctl_.save()) st.extra["stage." + k] = v;
        for (auto& [k, v] : acc_.save()) st.extra[k] = v;
        std::map<std::string, const Generator*> g(gens_.begin(), gens_.end());
        io::save_checkpoint_rotating<F>(ckdir, cfg_.keep_last, *composite_, opt_.get(), g, st);
    }

    /// Keeps the lines of log.jsonl with "step" <= step (a resumed run's history), drops the rest
    /// and any half-written line a kill left (step 0: empties it); drop_end_only: also the lines
    /// written only because an earlier process stopped at that update ("end_only": true).
    static void truncate_log(const std::string& path, int64_t step, bool drop_end_only) {
        if (!std::filesystem::exists(path)) return;
        std::ifstream in(path);
        std::string keep;
        for (std::string line; std::getline(in, line);) {
            try {
                const json::Value v = json::parse(line);
                const json::Value* e = v.find("end_only");
                if (drop_end_only && e && e->is_bool() && e->as_bool()) continue;
                if (v.at("step").as_int("step") <= step) keep += line + "\n";
            } catch (const Error&) {  // an incomplete last line
            }
        }
        io::write_file_atomic(path, std::vector<uint8_t>(keep.begin(), keep.end()));
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

    RunConfig cfg_;
    StageController ctl_;
    LogAccumulator acc_;
    std::shared_ptr<Composite> composite_;
    std::vector<Tensor<F>> params_, moe_params_, dense_params_;
    bool disjoint_ = false;
    std::unique_ptr<optim::Adam<F>> opt_;
    std::map<std::string, Generator*> gens_;
};

}  // namespace tsjt
