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
// A checkpoint is resumed only by a run of the same checked configuration (config_string: the
// model, every training flag that changes what a step computes, and RunConfig::data_config, the
// corpus hash, data flags and tokenizer hash); otherwise the error lists what differs, before
// anything of the run (its log) is touched. Every write is checked (the log is an io::AppendFile).
// The checkpoint layouts: run_checkpoints.hpp; the test-set evaluation: evaluate.hpp.
//
// Data parallel (RunConfig::comm with N > 1 ranks, started by `mpirun -np N`): every rank holds
// both models and walks the same shuffled batch order; an update takes N * update_freq batches,
// slot j going to rank j % N, so N ranks equal one process with N times --update-freq (up to fp
// summation order and dropout draws). Gradients are averaged (dist::DataParallel) before
// clipping; the logged losses and the KL the stage controller sees are the means over the ranks
// (rank 0's values broadcast, so every rank switches at the same update); a non-finite loss on
// any rank stops every rank with the same error (dist::CollectiveError). Rank 0 alone writes the log,
// checkpoints, hypotheses and submodels. Test translations are sharded over the ranks.
//
// Expert parallel (RunConfig::expert_parallel, --expert-parallel under mpirun -np P): the MoE
// model's layers are dist::ExpertParallelMoE, so rank r keeps the routers and experts
// [r E/P, (r+1) E/P) of every MoE layer, and a token's hidden state travels to its expert's rank
// and back (all-to-all, forward and backward). Batches, dropout streams and everything else are
// as in data parallel; DataParallel averages the replicated parameters only, the expert gradients
// (summed over the ranks' losses by the all-to-all's backward) are scaled by 1/P, and the clip
// norm is the whole model's (dist/expert_parallel_train.hpp), so a step is the data-parallel step
// of the same model up to fp summation order. Each rank writes its own checkpoints; the world
// size is part of the checked configuration. Evaluation and extraction run on
// the whole MoE model gathered onto every rank (dist::gather_experts): decoding is sharded as in
// data parallel, and the extracted moe/ is the same single-process model as without the flag.
// A non-finite loss stops every rank before the backward, whose exchanges need every rank.
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/expert_parallel_train.hpp>
#include <moekd/io/checkpoint.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>
#include <moekd/train/log.hpp>
#include <moekd/train/progress.hpp>
#include <moekd/train/rank_generators.hpp>

#include <moekd/dist/collective.hpp>
#include "run_config.hpp"
#include "evaluate.hpp"
#include "run_checkpoints.hpp"
#include "translate.hpp"
#include "submodel.hpp"
#include "train.hpp"

namespace tsjt {

class Run {
public:
    std::shared_ptr<nn::EncoderDecoder<F>> moe_model;
    std::shared_ptr<nn::Module<F>> dense_model;  // SharedDense or nn::EncoderDecoder
    ModelConfig dense_cfg;                        // what the dense model extracts to
    Sub moe_sub, dense_sub;

    explicit Run(const RunConfig& cfg) : cfg_(cfg), ctl_(cfg.mode, cfg.t_sep, cfg.kl_window,
                                                         cfg.min_switch_steps > 0 ? cfg.min_switch_steps : cfg.warmup) {
        if (!cfg_.comm) cfg_.comm = std::make_shared<dist::SingleProcess>();
        ep_ = cfg_.expert_parallel;
        Generator gen(cfg.seed);
        moe_model = make_model(cfg.moe, gen, ep_ ? cfg_.comm : nullptr);
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
        composite_->to(cfg.device);  // the weights of a seed are the same on every device
        params_ = composite_->parameters();
        moe_params_ = moe_model->parameters();
        dense_params_ = dense_model->parameters();
        disjoint_ = count_elements(params_) == count_elements(moe_params_) + count_elements(dense_params_);
        opt_ = std::make_unique<optim::Adam<F>>(std::vector<optim::ParamGroup<F>>{{params_, cfg.lr, 0.0}}, 0.9, 0.98,
                                                cfg.adam_eps);
        std::map<std::string, Generator*> gens;
        for (auto& [name, m] : composite_->named_modules()) {
            if (auto* d = dynamic_cast<nn::Dropout<F>*>(m.get())) gens[name] = &d->generator();
            if (auto* x = dynamic_cast<moe::MoELayerBase<F>*>(m.get())) gens[name] = &x->generator();
        }
        gens_ = std::make_unique<train::RankGenerators>(cfg_.comm, cfg_.seed, std::move(gens));
        if (ranks() > 1) {
            // same model and training options on every rank, rank 0's initial weights everywhere
            // (expert parallel: of the replicated parameters; each rank's experts are its own)
            const auto replicated = ep_ ? dist::dense_parameters(*composite_) : composite_->named_parameters();
            dist::check_same_config(*cfg_.comm, replicated, dist_config_string());
            dp_ = std::make_unique<dist::DataParallel<F>>(cfg_.comm, replicated);
            gens_->reseed_all();  // own dropout/jitter draws per rank
        }
        if (ep_) other_experts_ = dist::global_num_parameters(*cfg_.comm, *moe_model) - moe_model->num_parameters();
    }

    // parameter counts of the whole models (expert parallel: every rank's experts)
    int64_t params_moe() const { return moe_model->num_parameters() + other_experts_; }
    int64_t params_dense() const { return count_elements(dense_model->parameters()); }
    int64_t params_total() const { return count_elements(params_) + other_experts_; }
    const StageController& controller() const { return ctl_; }
    int rank() const { return cfg_.comm->rank(); }
    int ranks() const { return cfg_.comm->size(); }

    /// Trains up to cfg.max_steps updates, resuming from the newest checkpoint in cfg.dir/ckpt.
    void train(const std::vector<Example>& train_set, RunResult& res) {
        namespace fs = std::filesystem;
        dist::Communicator& comm = *cfg_.comm;
        const bool main_rank = rank() == 0;
        ckpts_ = RunCheckpoints(cfg_.comm, ep_, cfg_.dir, cfg_.keep_last);
        ckpts_.create();
        const auto batches = token_batches(train_set, cfg_.max_tokens);
        MOEKD_CHECK(!batches.empty(), "tsjt: no training batch (empty training set?)");
        io::TrainState st;
        if (const std::string last = ckpts_.resume_point(); !last.empty()) {
            const io::CheckpointData<F> ck = io::read_checkpoint<F>(last);
            const std::string diff = config_diff(ck.state.config, config_string());
            MOEKD_CHECK(diff.empty(), "tsjt: checkpoint '", last, "' was written by another configuration than this run: ",
                        diff, ". Nothing was changed. HINT: rerun with the flags it was written with, or use another "
                        "--out directory (or delete it)");
            st = io::apply_checkpoint<F>(ck, last, *composite_, opt_.get(), ckpts_.generators_to_load(*gens_, ck));
            ctl_.load(st.extra);
            acc_.load(st.extra);
            std::printf("  resumed from %s (step %lld)\n", last.c_str(), (long long)st.step);
        }
        const std::string log_path = (fs::path(cfg_.dir) / "log.jsonl").string();
        // drop what was logged after the checkpoint (or all: fresh), and the end-of-run line of a
        // run that stopped there and now goes on (an uninterrupted run has no line there)
        train::JsonlLog log;  // rank 0's; the other ranks' stays closed (writes nothing)
        if (main_rank) log.open_resumed(log_path, st.step, /*drop_end_only=*/st.step < cfg_.max_steps);
        train::Progress progress(mode_name(cfg_.mode), cfg_.progress && main_rank, /*force=*/true);
        auto order = epoch_order(batches.size(), cfg_.seed, st.epoch);
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
            std::string failed;  // this rank's error (a non-finite loss): every rank stops with it
            // slots of this update: N * update_freq batches of the common order, slot j to rank j % N
            for (int64_t j = 0; j < int64_t(cfg_.update_freq) * ranks(); ++j) {
                if (st.batch_index >= int64_t(order.size())) {
                    ++st.epoch;
                    st.batch_index = 0;
                    order = epoch_order(batches.size(), cfg_.seed, st.epoch);
                }
                const int64_t slot = st.batch_index++;
                if (j % ranks() != rank() || !failed.empty()) continue;  // (expert parallel: failed stays empty)
                const Batch b = on_device(make_batch(train_set, batches[order[slot]]), cfg_.device);
                Autocast precision(cfg_.precision, cfg_.device);  // forward and backward; the update stays fp32
                JointLoss jl;
                try {  // N > 1: an error here (the MoE router's NaN check) must stop every rank
                    jl = joint_loss(moe_sub, dense_sub, b, use_kl, cfg_.alpha_moe * cfg_.kl_scale,
                                    cfg_.alpha_dense * cfg_.kl_scale, cfg_.label_smoothing);
                } catch (const Error& e) {
                    if (ranks() == 1) throw;
                    failed = e.what();
                }
                if (failed.empty() && !(std::isfinite(jl.ce_moe) && std::isfinite(jl.ce_dense) && std::isfinite(jl.kl))) {
                    failed = msg("tsjt: loss is not finite at step ", st.step + 1, " (ce_moe ", jl.ce_moe, ", ce_dense ",
                                 jl.ce_dense, ", kl ", jl.kl, "). HINT: lower --lr");
                    if (ranks() == 1) throw Error(failed);
                }
                if (ep_ && ranks() > 1) dist::stop_together(*cfg_.comm, failed);  // before the backward's exchanges
                if (!failed.empty()) continue;
                (jl.total * F(1.0 / cfg_.update_freq)).backward();
                sa += jl.ce_moe; sb += jl.ce_dense; sk += jl.kl; sx += jl.aux;
                toks += b.tokens;
            }
            if (ranks() > 1) dist::stop_together(*cfg_.comm, failed);
            if (dp_) {
                dp_->average_gradients();
                if (ep_) dist::scale_expert_grads<F>(*composite_, F(1.0 / ranks()));  // sum over ranks -> mean
                // means over the ranks, rank 0's result on every rank: the stage switch (and the
                // log) must be the same everywhere
                double m[4] = {sa, sb, sk, sx};
                comm.all_reduce(m, 4, dist::ReduceOp::Mean);
                comm.broadcast(m, sizeof m, 0);
                sa = m[0], sb = m[1], sk = m[2], sx = m[3];
                comm.all_reduce(&toks, 1, dist::ReduceOp::Sum);
            }
            if (cfg_.clip_norm > 0) {
                // separate models (indep, single) are clipped separately, so that each trains as
                // it would alone; models sharing layers take one combined step, clipped as one
                if (disjoint_) {
                    clip(*moe_model, moe_params_);
                    clip(*dense_model, dense_params_);
                } else {
                    clip(*composite_, params_);
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
            if (switched && main_rank)
                std::printf("%s  stage 2 from step %lld (KL window mean %.4f %s t_sep%s)\n", progress.enabled() ? "\n" : "",
                            (long long)st.step, ctl_.switch_mean(), ctl_.automatic() ? "=" : "<=",
                            ctl_.automatic() ? ", auto" : (" " + std::to_string(ctl_.t_sep())).c_str());
            const bool regular = st.step % cfg_.log_every == 0 || switched;  // else: the run's last update
            if (regular || st.step == cfg_.max_steps) {
                // values of this update, and (_avg) means over the updates since the last line;
                // the doubles are written exactly (the resume tests compare them)
                log.write({{"mode", mode_name(cfg_.mode)}, {"step", st.step}, {"epoch", st.epoch}, {"lr", lr},
                           {"ce_moe", ce_a}, {"ce_dense", ce_b}, {"kl", kl}, {"aux", sx / cfg_.update_freq},
                           {"ce_moe_avg", acc_.ce_moe / acc_.n}, {"ce_dense_avg", acc_.ce_dense / acc_.n},
                           {"kl_avg", acc_.kl / acc_.n}, {"stage", ctl_.stage()}, {"used_kl", use_kl},
                           {"tokens", toks}, {"end_only", !regular}, {"seconds", secs}});
                if (regular) acc_ = {};  // an end-only line leaves the means running (resume goes on)
            }
            char tail[160];
            std::snprintf(tail, sizeof tail, "ce moe %.3f dense %.3f  kl %.3f  stage %d  %.0f tok/s", ce_a, ce_b, kl,
                          ctl_.stage(), tokens_done / std::max(secs, 1e-9));
            progress.steps(st.step, cfg_.max_steps, secs, start_step, tail);
            if (st.step % cfg_.save_every == 0 || st.step == cfg_.max_steps) save(st);
        }
        log.close();  // checked
        progress.newline();
        res.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        res.steps = st.step;
        res.updates_this_process = st.step - start_step;
        res.switch_step = ctl_.switch_step();
        res.t_sep = ctl_.t_sep();
        res.last_ce_moe = ce_a;
        res.last_ce_dense = ce_b;
        res.last_kl = kl;
    }

    /// BLEU of both submodels on each direction's test split (evaluate.hpp). Collective.
    void evaluate(const std::vector<Direction>& dirs, const text::SentencePiece& sp, size_t limit, int beam,
                  double lenpen, RunResult& res) {
        composite_->train(false);
        const Sub moe_eval = ep_ ? Sub::of(gathered_moe(), cfg_.moe.pad) : moe_sub;  // collective
        evaluate_pair(moe_eval, dense_sub, dirs, sp, limit, beam, lenpen, *cfg_.comm, cfg_.dir, res);
    }

    /// Writes dir/moe and dir/dense as standalone models (rank 0; collective under expert parallel).
    void extract(const std::string& spm_model) {
        const nn::Module<F>& moe = ep_ ? gathered_moe() : *moe_model;
        if (rank() != 0) return;
        save_submodel((std::filesystem::path(cfg_.dir) / "moe").string(), moe, cfg_.moe, spm_model);
        save_submodel((std::filesystem::path(cfg_.dir) / "dense").string(), *dense_model, dense_cfg, spm_model);
    }

    /// What must match for a checkpoint to be resumed (run_config.hpp).
    std::string config_string() const { return run_config_string(cfg_, dense_cfg); }

private:
    /// Writes the checkpoint after st.step updates (run_checkpoints.hpp). Collective.
    void save(io::TrainState st) {
        st.config = config_string();
        st.extra.clear();
        for (auto& [k, v] : ctl_.save()) st.extra["stage." + k] = v;
        for (auto& [k, v] : acc_.save()) st.extra[k] = v;
        ckpts_.save(*composite_, opt_.get(), *gens_, st);
    }

    /// Gradient clipping of one model's parameters (expert parallel: the norm over all ranks).
    void clip(const nn::Module<F>& m, const std::vector<Tensor<F>>& ps) {
        if (ep_) dist::clip_grad_norm(*cfg_.comm, m.named_parameters(), cfg_.clip_norm);
        else optim::clip_grad_norm(ps, cfg_.clip_norm);
    }

    /// The whole MoE model (moe::MoELayer layers) on every rank, for evaluation and extraction
    /// under expert parallel; gathered once. Collective.
    nn::EncoderDecoder<F>& gathered_moe() {
        if (!full_moe_) {
            Generator g(cfg_.seed);
            full_moe_ = make_model(cfg_.moe, g);
            dist::gather_experts(*cfg_.comm, *moe_model, *full_moe_);
        }
        full_moe_->train(false);
        return *full_moe_;
    }

    /// What every rank must agree on to train together (checked at start under mpirun).
    std::string dist_config_string() const {
        return msg(config_string(), " steps=", cfg_.max_steps, " save_every=", cfg_.save_every);
    }

    RunConfig cfg_;
    StageController ctl_;
    LogAccumulator acc_;
    std::shared_ptr<Composite> composite_;
    std::vector<Tensor<F>> params_, moe_params_, dense_params_;
    bool disjoint_ = false;
    std::unique_ptr<optim::Adam<F>> opt_;
    std::unique_ptr<train::RankGenerators> gens_;  // every dropout / router generator, per rank
    std::unique_ptr<dist::DataParallel<F>> dp_;    // N > 1 ranks only
    bool ep_ = false;                              // expert parallel
    int64_t other_experts_ = 0;                    // parameters of the other ranks' experts
    RunCheckpoints ckpts_;                         // where this rank's checkpoints go
    std::shared_ptr<nn::EncoderDecoder<F>> full_moe_;  // gathered_moe()
};

}  // namespace tsjt
