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
// anything of the run (its log) is touched. Every write is checked: the log is an io::AppendFile,
// hypotheses go through io::write_text_atomic. Decoding that meets non-finite scores (a model
// with NaN weights) is an error naming the run and the model, not empty translations.
//
// Data parallel (RunConfig::comm with N > 1 ranks, started by `mpirun -np N`): every rank holds
// both models and walks the same shuffled batch order; an update takes N * update_freq batches,
// slot j going to rank j % N, so N ranks equal one process with N times --update-freq (up to fp
// summation order and dropout draws). Gradients are averaged (dist::DataParallel) before
// clipping; the logged losses and the KL the stage controller sees are the means over the ranks
// (rank 0's values broadcast, so every rank switches at the same update); a non-finite loss on
// any rank stops every rank with the same error (dist::CollectiveError). Rank 0 alone writes the log,
// checkpoints (with every rank's generator states), hypotheses and submodels; every rank resumes
// from the same checkpoint file. Test translations are sharded over the ranks and gathered.
//
// Expert parallel (RunConfig::expert_parallel, --expert-parallel under mpirun -np P): the MoE
// model's layers are dist::ExpertParallelMoE, so rank r keeps the routers and experts
// [r E/P, (r+1) E/P) of every MoE layer, and a token's hidden state travels to its expert's rank
// and back (all-to-all, forward and backward). Batches, dropout streams and everything else are
// as in data parallel; DataParallel averages the replicated parameters only, the expert gradients
// (summed over the ranks' losses by the all-to-all's backward) are scaled by 1/P, and the clip
// norm is the whole model's (dist/expert_parallel_train.hpp), so a step is the data-parallel step
// of the same model up to fp summation order. Each rank writes its own checkpoints (its experts,
// their Adam moments, its generators) to ckpt/rank<r>/ and resumes from the newest step every
// rank has; the world size is part of the checked configuration. Evaluation and extraction run on
// the whole MoE model gathered onto every rank (dist::gather_experts): decoding is sharded as in
// data parallel, and the extracted moe/ is the same single-process model as without the flag.
// A non-finite loss stops every rank before the backward, whose exchanges need every rank.
#pragma once

#include <bit>
#include <charconv>
#include <chrono>
#include <deque>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/expert_parallel_train.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/checkpoint.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>
#include <moekd/train/log.hpp>
#include <moekd/train/progress.hpp>
#include <moekd/train/rank_generators.hpp>

#include <moekd/text/bleu.hpp>

#include <moekd/dist/collective.hpp>
#include "run_config.hpp"
#include "translate.hpp"
#include "submodel.hpp"
#include "train.hpp"

namespace tsjt {

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
        const std::string ckdir = (fs::path(cfg_.dir) / "ckpt").string();
        dist::Communicator& comm = *cfg_.comm;
        const bool main_rank = rank() == 0;
        ckdir_ = ep_ ? (fs::path(ckdir) / ("rank" + std::to_string(rank()))).string() : ckdir;  // this rank's
        if (main_rank || ep_) fs::create_directories(ckdir_);
        const auto batches = token_batches(train_set, cfg_.max_tokens);
        MOEKD_CHECK(!batches.empty(), "tsjt: no training batch (empty training set?)");
        io::TrainState st;
        if (const std::string last = resume_point(ckdir); !last.empty()) {
            const io::CheckpointData<F> ck = io::read_checkpoint<F>(last);
            const std::string diff = config_diff(ck.state.config, config_string());
            MOEKD_CHECK(diff.empty(), "tsjt: checkpoint '", last, "' was written by another configuration than this run: ",
                        diff, ". Nothing was changed. HINT: rerun with the flags it was written with, or use another "
                        "--out directory (or delete it)");
            st = io::apply_checkpoint<F>(ck, last, *composite_, opt_.get(),
                                         ep_ ? gens_->own() : gens_->to_load(ck.generators, ck.state.step));
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
            std::string failed;  // this rank's error (a non-finite loss): every rank stops with it
            // slots of this update: N * update_freq batches of the common order, slot j to rank j % N
            for (int64_t j = 0; j < int64_t(cfg_.update_freq) * ranks(); ++j) {
                if (st.batch_index >= int64_t(order.size())) {
                    ++st.epoch;
                    st.batch_index = 0;
                    order = epoch_order(batches.size(), st.epoch);
                }
                const int64_t slot = st.batch_index++;
                if (j % ranks() != rank() || !failed.empty()) continue;  // (expert parallel: failed stays empty)
                const Batch b = on_device(make_batch(train_set, batches[order[slot]]), cfg_.device);
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

    /// BLEU of both submodels on each direction's test split (first `limit` sentences);
    /// hypotheses go to dir/hyp.<moe|dense>.<src>-<tgt>.
    void evaluate(const std::vector<Direction>& dirs, const text::SentencePiece& sp, size_t limit, int beam,
                  double lenpen, RunResult& res) {
        composite_->train(false);
        const Sub moe_eval = ep_ ? Sub::of(gathered_moe(), cfg_.moe.pad) : moe_sub;  // collective
        for (const Direction& d : dirs) {
            const size_t n = std::min(limit, d.test_src.size());
            const std::vector<std::string> src(d.test_src.begin(), d.test_src.begin() + n);
            const std::vector<std::string> ref(d.test_ref.begin(), d.test_ref.begin() + n);
            // each rank translates its contiguous share; every rank gets all hypotheses back
            const dist::Range mine = dist::shard_range(int64_t(n), rank(), ranks());
            const std::vector<std::string> my_src(src.begin() + mine.begin, src.begin() + mine.end);
            for (int which = 0; which < 2; ++which) {
                std::vector<std::string> mine_hyp;
                std::string failed;  // non-finite scores on any rank stop every rank
                try {
                    if (!my_src.empty())
                        mine_hyp = translate(which ? dense_sub : moe_eval, sp, d.tgt_lang, my_src, beam, lenpen);
                } catch (const NonFiniteLogits& e) {
                    failed = msg("tsjt: evaluating run '", cfg_.dir, "': its ", which ? "dense/device" : "MoE",
                                 " model gives non-finite scores on ", d.name(), " (", e.what(),
                                 "): its weights are broken (a diverged run?)");
                    if (ranks() == 1) throw Error(failed);
                } catch (const Error& e) {  // e.g. the MoE router's check of its logits
                    failed = msg("tsjt: evaluating run '", cfg_.dir, "': its ", which ? "dense/device" : "MoE",
                                 " model failed on ", d.name(), ": ", e.what());
                    if (ranks() == 1) throw Error(failed);
                }
                if (ranks() > 1) dist::stop_together(*cfg_.comm, failed);
                const std::vector<std::string> hyp = dist::all_gather_strings(*cfg_.comm, mine_hyp);
                const double bleu = text::corpus_bleu(hyp, ref).score;
                (which ? res.bleu_dense : res.bleu_moe).push_back(bleu);
                if (rank() != 0) continue;
                std::string text;
                for (const auto& h : hyp) text += h + '\n';
                io::write_text_atomic(
                    (std::filesystem::path(cfg_.dir) / ("hyp." + std::string(which ? "dense." : "moe.") + d.name())).string(),
                    text);
            }
        }
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
    std::vector<int64_t> epoch_order(size_t n, int64_t epoch) const {
        std::vector<int64_t> o(n);
        for (size_t i = 0; i < n; ++i) o[i] = int64_t(i);
        Generator g(cfg_.seed * 1000003ULL + uint64_t(epoch) + 17);
        shuffle(o, g);
        return o;
    }
    /// Rank 0 writes the checkpoint (rank r > 0's generators as "rank<r>.<name>"); expert
    /// parallel: every rank writes its own (its experts, moments and generators). Collective.
    void save(io::TrainState st) {
        st.config = config_string();
        st.extra.clear();
        for (auto& [k, v] : ctl_.save()) st.extra["stage." + k] = v;
        for (auto& [k, v] : acc_.save()) st.extra[k] = v;
        if (ep_) {
            const std::map<std::string, const Generator*> g(gens_->own().begin(), gens_->own().end());
            io::save_checkpoint_rotating<F>(ckdir_, cfg_.keep_last, *composite_, opt_.get(), g, st);
        } else {
            const std::map<std::string, const Generator*> g = gens_->for_save();  // collective
            if (rank() == 0) io::save_checkpoint_rotating<F>(ckdir_, cfg_.keep_last, *composite_, opt_.get(), g, st);
        }
        cfg_.comm->barrier();  // the file is there before any rank may read it
    }

    /// The checkpoint to resume from ("" = a fresh run). Expert parallel: the newest step every
    /// rank has (a kill between two ranks' writes leaves them one checkpoint apart). A checkpoint
    /// of the other layout (with / without --expert-parallel) is returned too, so that the
    /// configuration check refuses it instead of a fresh run overwriting the log. Collective.
    std::string resume_point(const std::string& ckdir) const {
        std::string last = io::latest_checkpoint(ckdir_);
        if (ep_ && ranks() > 1) {
            const auto all = io::list_checkpoints(ckdir_);
            int64_t mine = -1;
            for (const auto& [step, path] : all)
                if (path == last) mine = step;
            int64_t m[2] = {-mine, mine};  // {-min, max} by one Max
            cfg_.comm->all_reduce(m, 2, dist::ReduceOp::Max);
            const int64_t lo = -m[0], hi = m[1];
            std::string failed;
            if (lo < 0 && hi >= 0)
                failed = msg("tsjt: expert-parallel run '", cfg_.dir, "': some ranks have checkpoints and some none (",
                             ckdir_, ": ", mine < 0 ? "none" : last, "). HINT: resume with the number of ranks it was "
                             "written with, or use another --out directory");
            else if (lo != mine) {
                last = io::checkpoint_path(ckdir_, lo);
                if (!std::filesystem::is_regular_file(last))
                    failed = msg("tsjt: expert-parallel run '", cfg_.dir, "': no checkpoint of step ", lo,
                                 " (the newest every rank has) in ", ckdir_);
            }
            dist::stop_together(*cfg_.comm, failed);
        }
        if (last.empty())  // the other layout's newest, for the configuration check only
            last = io::latest_checkpoint(ep_ ? ckdir : (std::filesystem::path(ckdir) / "rank0").string());
        return last;
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
    std::string ckdir_;                            // this rank's checkpoint folder
    std::shared_ptr<nn::EncoderDecoder<F>> full_moe_;  // gathered_moe()
};

}  // namespace tsjt
