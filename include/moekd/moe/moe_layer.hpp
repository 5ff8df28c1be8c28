// moe_layer.hpp — MoELayer: a Mixture-of-Experts FFN that drops into a Transformer layer in place
// of the dense FeedForward (it is an nn::FFNBase, registered as "moe").
//
//   y = sum over the token's kept choices j of gate_j(x) * expert_{e_j}(x)
//   expert_i(x) = fc2_i(act(fc1_i(x)))          (ReLU or GELU, as the dense FFN)
//
// Parameters, named as fairseq / Tutel so checkpoints stay readable:
//   gate.weight                 (E, D)   the router (fairseq's `wg`)
//   gate.bias                   (E)      only with router.bias (TCD eq. 1's b_r; fairseq has none)
//   experts.<i>.fc1.weight      (F, D)   experts.<i>.fc1.bias (F)
//   experts.<i>.fc2.weight      (D, F)   experts.<i>.fc2.bias (D)
// A forward routes (router.hpp), sorts tokens by expert (dispatch.hpp: permute_tokens ->
// expert_ffn -> combine_tokens), computes the aux loss (balance.hpp: Switch or KL-uniform balance
// loss plus the optional z-loss, weighted) and the load statistics. forward(x, pad) returns
// {y, aux} as fairseq's MoE layer returns (x, l_aux) (aux carries history: add it to the loss; a
// Transformer layer passes its padding mask and returns the aux up to the stack and the model);
// forward_with_stats returns the statistics and routing too. The layer keeps no loss state (only
// last_stats(), for logging). Pad tokens (mask 1) are not routed, get a zero output (the residual
// carries them) and are left out of the statistics. Hooks: emits "router_probs" (N, E) and
// "output". forward_fixed() runs given routing (experts and gates), which gradient checks use.
// MoELayerBase holds all of it but running the experts, which dist::ExpertParallelMoE does its
// own way. This file is wiring; the work is in the ops it calls.
// On the device (a layer moved with .to(Device::CUDA), CUDA inputs) every part runs there through
// the same ops; a pad mask or fixed routing given on the host is copied over. The host sees the
// per-token finite check, the dispatch plan's index arrays (load statistics) and the pad mask.
//
// Gate order, as fairseq's Top2Gate: with renormalised gates (top-2 by default), a token whose
// choice is dropped by capacity has its remaining gates renormalised over what it kept (gate 1 on
// a lone surviving choice), fairseq's default normalize_gate_prob_before_dropping = false; set
// router.normalize_gate_prob_before_dropping = true for GShard's order (renormalise over the k
// chosen, then drop: the survivor keeps p_i / (p_i + p_j)). Dropless runs are the same either way.
// Capacity is ceil(k * tokens * factor / E) (router.hpp); fairseq's own rule differs slightly.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "../nn/layers.hpp"
#include "../nn/module.hpp"
#include "../nn/transformer.hpp"
#include "balance.hpp"
#include "dispatch.hpp"
#include "expert_ffn.hpp"
#include "plan.hpp"
#include "router.hpp"

namespace moekd::moe {

/// Sizes and options of one MoE layer.
struct MoEConfig {
    int64_t d_model = 512;                              // D
    int64_t ffn_dim = 2048;                             // F, per expert
    nn::Activation activation = nn::Activation::ReLU;
    RouterConfig router;                                // E, top-k, capacity, jitter
    BalanceLoss balance = BalanceLoss::Switch;          // the balance term of the aux loss (Switch: first choices)
    double balance_weight = 0.01;                       // Switch: 0.01
    double z_loss_weight = 0.0;                         // ST-MoE: 0.001
    std::string name = "moe";                           // names the layer in errors
};

/// Everything one forward produces.
template <class T>
struct MoEOutput {
    Tensor<T> y;         // like x
    Tensor<T> aux_loss;  // scalar, with history: balance_weight * balance + z_loss_weight * z
    LoadStats stats;
    Routing<T> routing;  // logits, probs, gates (as combined: see combine_gates), experts
};

namespace detail {
/// Checks an MoE layer's input x: (B, T, D) or (N, D) and pad mask: (B, T) or (N) against the
/// config; returns N.
template <class T>
int64_t check_moe_input(const MoEConfig& cfg, const Tensor<T>& x, const Tensor<uint8_t>& pad) {
    MOEKD_CHECK(x.defined() && (x.dim() == 2 || x.dim() == 3) && x.size(-1) == cfg.d_model, cfg.name, ": input ",
                x.defined() ? x.shape() : Shape{}, " must be (B, T, ", cfg.d_model, ") or (N, ", cfg.d_model, ")");
    const int64_t N = x.numel() / cfg.d_model;
    if (pad.defined()) {
        Shape want(x.shape().begin(), x.shape().end() - 1);
        MOEKD_CHECK(pad.shape() == want || (pad.dim() == 1 && pad.numel() == N), cfg.name, ": pad mask ", pad.shape(),
                    " does not fit input ", x.shape(), " (expected ", want, ")");
    }
    return N;
}
/// m (E) of the Switch balance loss from a forward's statistics, as the host computes it from
/// the routing: the share of each expert among the real tokens' first choices
/// (first_choice_fraction), or with all_choices among all their k choices, before capacity
/// (choice_fraction).
template <class T>
Tensor<T> choice_fraction_of(const LoadStats& s, bool all_choices, Device dev) {
    const std::vector<int64_t>& c = all_choices ? s.tokens_per_expert : s.first_choice_per_expert;
    const double n = double(s.num_tokens) * double(all_choices ? s.top_k : 1);
    Tensor<T> m = Tensor<T>::zeros({s.num_experts});
    for (int64_t e = 0; e < s.num_experts && s.num_tokens > 0; ++e) m.data()[e] = static_cast<T>(double(c[e]) / n);
    return m.to(dev);
}
/// How many tokens a pad mask marks (0 for an undefined mask).
inline int64_t count_pad(const Tensor<uint8_t>& pad) {
    if (!pad.defined()) return 0;
    const Tensor<uint8_t> pc = pad.device() == Device::CPU ? moekd::detail::contiguous_data(pad)
                                                           : host_copy(pad, "moe", "pad mask");
    int64_t n = 0;
    for (int64_t i = 0; i < pc.numel(); ++i) n += pc.data()[i] != 0;
    return n;
}
}  // namespace detail

/// One expert: the dense FFN's two Linear layers (fc1: D -> F, fc2: F -> D).
template <class T = float>
class Expert : public nn::Module<T> {
public:
    std::shared_ptr<nn::Linear<T>> fc1, fc2;
    Expert(int64_t d_model, int64_t ffn_dim, Generator& gen) {
        fc1 = this->register_module("fc1", std::make_shared<nn::Linear<T>>(d_model, ffn_dim, gen));
        fc2 = this->register_module("fc2", std::make_shared<nn::Linear<T>>(ffn_dim, d_model, gen));
    }
};

/// What MoELayer and dist::ExpertParallelMoE share: the config, the router (gate.weight (E, D))
/// and the whole forward (jitter, router logits, noise, top-k, dispatch plan, gates, aux loss,
/// statistics, hooks); a subclass registers the experts and runs them (run_experts). Subclass
/// constructors register their experts after this one has drawn the gate, then call
/// seed_jitter(gen): the draw order of torch.nn.Linear (gate, experts in order, then the jitter
/// seed).
template <class T = float>
class MoELayerBase : public nn::FFNBase<T> {
public:
    std::shared_ptr<nn::Linear<T>> gate;  // weight (E, D)

    std::string module_name() const override { return "moe"; }

    using nn::FFNBase<T>::forward;  // forward(x): y alone, no pad mask
    /// x: (B, T, D) or (N, D); pad: (B, T) or (N) uint8, 1 = pad, or undefined -> {y like x, aux
    /// loss: a scalar with history on x's device}. What a Transformer layer calls.
    nn::FFNOutput<T> forward(const Tensor<T>& x, const Tensor<uint8_t>& pad) override {
        MoEOutput<T> out = forward_with_stats(x, pad);
        return {std::move(out.y), std::move(out.aux_loss)};
    }

    /// The full forward: output, aux loss, statistics and routing.
    MoEOutput<T> forward_with_stats(const Tensor<T>& x, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
        const int64_t N = detail::check_moe_input(cfg_, x, pad);
        const int64_t D = cfg_.d_model, E = cfg_.router.num_experts;
        const bool training = this->is_training();
        const Tensor<T> x2 = x.reshape({N, D});
        // router: logits (N, E) -> probs, top-k gates
        const Tensor<T> rin = training && cfg_.router.input_jitter > 0 ? input_jitter(x2, cfg_.router.input_jitter, gen_) : x2;
        Tensor<T> logits = checked_router_logits(rin, gate->weight, cfg_.name, pad, gate->bias);  // pad rows not checked
        const Tensor<T> clean_logits = logits;
        if (training && cfg_.router.logit_noise) logits = add_logit_noise(logits, gen_);
        MoEOutput<T> out;
        out.routing = softmax_topk(logits, cfg_.router.top_k, cfg_.router.normalize());
        this->emit("router_probs", out.routing.probs);
        // dispatch -> experts -> combine
        const int64_t pads = detail::count_pad(pad);
        const PlanPtr plan = make_dispatch_plan(out.routing.experts, E, capacity_for(cfg_.router, N - pads, training), pad);
        // renormalised gates: over the kept choices (fairseq's default order) or as routed (GShard)
        out.routing.gates = combine_gates(out.routing, plan, cfg_.router);
        Tensor<T> y2 = run_experts(x2, out.routing.gates, plan);
        // aux loss and statistics
        out.stats = load_stats(*plan);
        Tensor<T> aux = Tensor<T>::zeros({}, x.device());
        if (cfg_.balance != BalanceLoss::None) {
            const bool host = x.device() == Device::CPU;
            const bool all = cfg_.balance == BalanceLoss::SwitchAllChoices;
            const Tensor<T> b =
                cfg_.balance == BalanceLoss::KLUniform ? kl_uniform_balance_loss(out.routing.probs, pad)
                : host ? (all ? topk_balance_loss(out.routing.probs, out.routing.experts, pad)
                              : switch_balance_loss(out.routing.probs, out.routing.experts, pad))
                       : detail::switch_balance_loss_with(  // m from the plan's statistics: no copy of the routing
                             out.routing.probs, detail::choice_fraction_of<T>(out.stats, all, x.device()), pad);
            out.stats.balance_loss = static_cast<double>(b.item());
            if (cfg_.balance_weight > 0) aux = add(aux, b * static_cast<T>(cfg_.balance_weight));
        }
        if (cfg_.z_loss_weight > 0) {
            const Tensor<T> z = router_z_loss(clean_logits, pad);
            out.stats.z_loss = static_cast<double>(z.item());
            aux = add(aux, z * static_cast<T>(cfg_.z_loss_weight));
        }
        out.aux_loss = aux;
        out.y = y2.reshape(x.shape());
        last_stats_ = out.stats;
        this->emit("output", out.y);
        return out;
    }

    /// The load statistics of the last forward, for logging only (plain numbers: nothing of a
    /// loss, no history, read by no later forward), as fairseq's MoE layers keep `metadata` for
    /// the criterion's logs. forward_with_stats returns them with the output.
    const LoadStats& last_stats() const { return last_stats_; }
    const MoEConfig& config() const { return cfg_; }
    /// The generator of the training-time jitter (reseed or checkpoint it here).
    Generator& generator() { return gen_; }

    /// The config checks every MoE layer makes (router, sizes, weights); errors name cfg.name.
    static void check_config(const MoEConfig& cfg) {
        validate(cfg.router, cfg.name);
        MOEKD_CHECK(cfg.d_model > 0 && cfg.ffn_dim > 0, cfg.name, ": d_model ", cfg.d_model, " and ffn_dim ",
                    cfg.ffn_dim, " must be positive");
        MOEKD_CHECK(cfg.balance_weight >= 0 && cfg.z_loss_weight >= 0, cfg.name, ": balance_weight ",
                    cfg.balance_weight, " and z_loss_weight ", cfg.z_loss_weight, " must be >= 0");
    }

protected:
    /// Checks cfg and draws the gate from `gen` (as torch.nn.Linear: weight, then the bias if
    /// cfg.router.bias).
    MoELayerBase(const MoEConfig& cfg, Generator& gen) : cfg_(cfg) {
        check_config(cfg);
        gate = this->register_module(
            "gate", std::make_shared<nn::Linear<T>>(cfg.d_model, cfg.router.num_experts, gen, cfg.router.bias));
    }
    /// Seeds the jitter generator from one more draw of `gen` (after the experts).
    void seed_jitter(Generator& gen) { gen_.manual_seed(gen.next_u64()); }
    /// The experts between dispatch and combine: x2 (N, D), gates (N, k) (as combined), the plan
    /// -> y2 (N, D) = combine_tokens(experts(permute_tokens(x2)), gates).
    virtual Tensor<T> run_experts(const Tensor<T>& x2, const Tensor<T>& gates, const PlanPtr& plan) = 0;

    MoEConfig cfg_;
    Generator gen_;
    LoadStats last_stats_;
};

template <class T = float>
class MoELayer : public MoELayerBase<T> {
public:
    std::shared_ptr<nn::ModuleList<Expert<T>, T>> experts;        // E experts

    /// Parameters are drawn from `gen` as torch.nn.Linear does (gate first, then experts in
    /// order); the jitter generator is seeded from one more draw.
    MoELayer(const MoEConfig& cfg, Generator& gen) : MoELayerBase<T>(cfg, gen) {
        experts = this->register_module("experts", std::make_shared<nn::ModuleList<Expert<T>, T>>());
        for (int64_t e = 0; e < cfg.router.num_experts; ++e)
            experts->push_back(std::make_shared<Expert<T>>(cfg.d_model, cfg.ffn_dim, gen));
        this->seed_jitter(gen);
    }

    /// Fixed routing, no router: experts (N, k) int64 and gates (N, k) (with history, if wanted)
    /// given. capacity: rows per expert (-1: dropless). x: (B, T, D) or (N, D) -> same shape.
    /// No aux loss (no router); last_stats() describes this plan.
    Tensor<T> forward_fixed(const Tensor<T>& x, const Tensor<int64_t>& expert_idx, const Tensor<T>& gates,
                            const Tensor<uint8_t>& pad = Tensor<uint8_t>(), int64_t capacity = -1) {
        const MoEConfig& cfg = this->cfg_;
        const int64_t N = detail::check_moe_input(cfg, x, pad);
        MOEKD_CHECK(expert_idx.dim() == 2 && expert_idx.size(0) == N && gates.defined() &&
                        gates.shape() == expert_idx.shape(),
                    cfg.name, ": forward_fixed: experts ", expert_idx.shape(), " and gates ",
                    gates.defined() ? gates.shape() : Shape{}, " must both be (N, k) with N = ", N);
        const Tensor<int64_t> idx = x.device() == Device::CPU ? expert_idx
                                                              : detail::on_device(expert_idx, x.device(), cfg.name.c_str(), "experts");
        const PlanPtr plan = make_dispatch_plan(idx, cfg.router.num_experts, capacity, pad);
        Tensor<T> y = run_experts(x.reshape({N, cfg.d_model}), gates, plan).reshape(x.shape());
        this->last_stats_ = load_stats(*plan);
        this->emit("output", y);
        return y;
    }

    /// The experts' parameters as handles, in the per-expert form expert_ffn takes.
    ExpertWeights<T> expert_weights() const {
        ExpertWeights<T> w;
        for (auto& ex : *experts) {
            w.w1.push_back(ex->fc1->weight);
            w.b1.push_back(ex->fc1->bias);
            w.w2.push_back(ex->fc2->weight);
            w.b2.push_back(ex->fc2->bias);
        }
        return w;
    }

protected:
    Tensor<T> run_experts(const Tensor<T>& x2, const Tensor<T>& gates, const PlanPtr& plan) override {
        const Tensor<T> xs = permute_tokens(x2, plan);
        const Tensor<T> ys = expert_ffn(xs, plan, expert_weights(), this->cfg_.activation);
        return combine_tokens(ys, gates, plan);
    }
};

}  // namespace moekd::moe
