// expert_parallel.hpp — an MoE layer whose E experts are split across the ranks of a
// Communicator (expert parallelism, GShard / DeepSpeed-MoE style). Rank r of P owns the experts
// [r E/P, (r+1) E/P); the router (gate.weight) is replicated and trained data-parallel like every
// dense parameter. One forward on rank r, for its own N tokens:
//
//   route locally (the same router code as moe::MoELayer) -> dispatch plan over all E experts
//   permute_tokens: rows grouped by expert, hence by owner rank       xs (S, D)
//   exchange the per-expert row counts (all_to_all_v of E/P + 1 int64 per rank)
//   all_to_all_rows: each block of rows to the rank owning its experts xr (R, D), by source rank
//   regroup by local expert (index_select), expert_ffn over the E/P local experts, ungroup
//   all_to_all_rows back to the sources                               ys (S, D)
//   combine_tokens with the gates                                     y (N, D)
//
// all_to_all_rows is its own autograd op: its backward is the reverse all-to-all of the gradient,
// so expert weights get the gradient of every rank's tokens, and input / router gradients come
// home to the rank that sent the tokens. Every rank must run the same forwards and call backward
// on a loss that depends on every layer output (collectives are matched in order, as in MPI).
//
// Capacity: the per-rank rule of MoELayer: each rank applies ceil(k * N_r * factor / E) to its own
// N_r tokens before sending (or dropless), so an expert receives at most P * capacity rows. With
// that rule rank r's outputs are exactly those of moe::MoELayer run on rank r's tokens alone.
// Aux loss and load statistics come from the local routing, as in MoELayer (average them across
// ranks as you average the loss). Gradient scale: expert weights get the SUM over ranks of the
// per-rank loss gradients; when the dense gradients are averaged over P ranks (DataParallel mean),
// call scale_expert_grads(1 / P) so both are gradients of the same mean loss.
//
// Parameters are named as in MoELayer with GLOBAL expert indices: gate.weight and, on rank r,
// only experts.<i>.fc1.weight ... for its own i. Built with the same Generator, every rank draws
// the same weights as MoELayer(cfg, gen) would (all experts drawn, the foreign ones dropped).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "../moe/moe_layer.hpp"
#include "../ops/index.hpp"
#include "communicator.hpp"

namespace moekd::dist {

/// Seconds and bytes moved by all_to_all_rows calls (forward and backward) of one layer.
struct CommStats {
    double seconds = 0;
    int64_t bytes_sent = 0;
    int64_t calls = 0;
};
using CommStatsPtr = std::shared_ptr<CommStats>;

namespace detail {
/// all_to_all_v of whole rows, timed into `stats` (if any).
template <class T>
void exchange_rows(Communicator& comm, const T* send, const std::vector<int64_t>& send_rows, T* recv,
                   const std::vector<int64_t>& recv_rows, int64_t D, CommStats* stats) {
    std::vector<int64_t> sc(send_rows.size()), rc(recv_rows.size());
    int64_t sent = 0;
    for (size_t i = 0; i < sc.size(); ++i) sc[i] = send_rows[i] * D, sent += sc[i];
    for (size_t i = 0; i < rc.size(); ++i) rc[i] = recv_rows[i] * D;
    const auto t0 = std::chrono::steady_clock::now();
    all_to_all_v<T>(comm, send, sc, recv, rc);
    if (stats) {
        stats->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        stats->bytes_sent += sent * static_cast<int64_t>(sizeof(T));
        ++stats->calls;
    }
}
inline int64_t total(const std::vector<int64_t>& v) {
    int64_t s = 0;
    for (int64_t x : v) s += x;
    return s;
}
}  // namespace detail

/// Rows to and from every rank. x: (S, D) with S = sum(send_rows), send_rows[q] rows for rank q,
/// packed in rank order -> (R, D) with R = sum(recv_rows), recv_rows[q] rows from rank q, in rank
/// order. Collective: every rank calls it, with counts that match pairwise (send_rows[q] on rank p
/// == recv_rows[p] on rank q). Backward: the reverse exchange of the gradient (also collective;
/// with `force_record` the op is recorded even when x needs no gradient, so that this rank takes
/// part in the backward exchange that the other ranks run).
template <class T>
Tensor<T> all_to_all_rows(const Tensor<T>& x, const std::vector<int64_t>& send_rows,
                          const std::vector<int64_t>& recv_rows, std::shared_ptr<Communicator> comm,
                          CommStatsPtr stats = nullptr, bool force_record = false) {
    MOEKD_CHECK(comm, "all_to_all_rows: no communicator");
    moekd::detail::require_cpu(x, "all_to_all_rows");
    const int P = comm->size();
    MOEKD_CHECK(x.defined() && x.dim() == 2, "all_to_all_rows: x ", x.defined() ? x.shape() : Shape{},
                " must be (S, D)");
    MOEKD_CHECK(static_cast<int>(send_rows.size()) == P && static_cast<int>(recv_rows.size()) == P,
                "all_to_all_rows: ", send_rows.size(), " send and ", recv_rows.size(), " recv counts for world size ", P);
    for (int q = 0; q < P; ++q)
        MOEKD_CHECK(send_rows[q] >= 0 && recv_rows[q] >= 0, "all_to_all_rows: negative row count for rank ", q);
    MOEKD_CHECK(x.size(0) == detail::total(send_rows), "all_to_all_rows: x ", x.shape(), " has ", x.size(0),
                " rows but the send counts add up to ", detail::total(send_rows));
    const int64_t D = x.size(1), R = detail::total(recv_rows);
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> out = Tensor<T>::empty({R, D});
    detail::exchange_rows(*comm, xc.data(), send_rows, out.data(), recv_rows, D, stats.get());
    Tensor<T> in = x;
    if (force_record && GradMode::enabled() && !x.requires_grad()) in = x.detach().requires_grad_();
    return record<T>(out, "all_to_all_rows", {in}, [send_rows, recv_rows, comm, stats, D](const Tensor<T>& g) {
        const Tensor<T> gc = moekd::detail::contiguous_data(g);
        Tensor<T> dx = Tensor<T>::empty({detail::total(send_rows), D});
        detail::exchange_rows(*comm, gc.data(), recv_rows, dx.data(), send_rows, D, stats.get());
        return std::vector<Tensor<T>>{dx};
    });
}

/// The experts a rank owns: registered under their global index, so parameter names read
/// experts.<global i>.fc1.weight as in moe::MoELayer.
template <class T = float>
class ExpertShard : public nn::Module<T> {
public:
    std::vector<std::shared_ptr<moe::Expert<T>>> local;  // in global order
    std::vector<int64_t> global_index;                   // local l -> global expert
    void add(int64_t global, std::shared_ptr<moe::Expert<T>> e) {
        local.push_back(this->register_module(std::to_string(global), std::move(e)));
        global_index.push_back(global);
    }
};

template <class T = float>
class ExpertParallelMoE : public nn::FFNBase<T> {
public:
    std::shared_ptr<nn::Linear<T>> gate;            // weight (E, D), replicated
    std::shared_ptr<ExpertShard<T>> experts;        // this rank's E / P experts

    /// Draws the same weights as moe::MoELayer(cfg, gen) on every rank (gen seeded alike) and
    /// keeps gate + this rank's experts. E must be a multiple of the world size.
    ExpertParallelMoE(const moe::MoEConfig& cfg, Generator& gen, std::shared_ptr<Communicator> comm)
        : cfg_(cfg), comm_(std::move(comm)), stats_(std::make_shared<CommStats>()) {
        MOEKD_CHECK(comm_, cfg.name, ": expert parallel layer needs a communicator");
        moe::validate(cfg.router, cfg.name);
        MOEKD_CHECK(cfg.d_model > 0 && cfg.ffn_dim > 0, cfg.name, ": d_model ", cfg.d_model, " and ffn_dim ",
                    cfg.ffn_dim, " must be positive");
        MOEKD_CHECK(cfg.balance_weight >= 0 && cfg.z_loss_weight >= 0, cfg.name, ": balance_weight ",
                    cfg.balance_weight, " and z_loss_weight ", cfg.z_loss_weight, " must be >= 0");
        const int64_t E = cfg.router.num_experts, P = comm_->size();
        MOEKD_CHECK(E % P == 0, cfg.name, ": ", E, " experts cannot be split evenly over ", P,
                    " ranks. HINT: use a world size that divides num_experts");
        local_ = E / P;
        first_ = comm_->rank() * local_;
        gate = this->register_module("gate", std::make_shared<nn::Linear<T>>(cfg.d_model, E, gen, false));
        experts = this->register_module("experts", std::make_shared<ExpertShard<T>>());
        for (int64_t e = 0; e < E; ++e) {
            auto ex = std::make_shared<moe::Expert<T>>(cfg.d_model, cfg.ffn_dim, gen);  // drawn on every rank
            if (e >= first_ && e < first_ + local_) experts->add(e, ex);
        }
        gen_.manual_seed(gen.next_u64());
    }

    std::string module_name() const override { return "moe"; }

    /// Copies gate and this rank's experts from a single-process layer of the same config.
    void load_from(const moe::MoELayer<T>& src) {
        MOEKD_CHECK(src.config().router.num_experts == cfg_.router.num_experts && src.config().d_model == cfg_.d_model &&
                        src.config().ffn_dim == cfg_.ffn_dim,
                    cfg_.name, ": load_from: layer sizes differ (E, D, F)");
        auto sd = src.state_dict();
        typename nn::Module<T>::StateDict mine;
        for (auto& [n, t] : this->state_dict()) mine[n] = sd.at(n);
        this->load_state_dict(mine);
    }

    /// x: (B, T, D) or (N, D) -> same shape.
    Tensor<T> forward(const Tensor<T>& x) override { return forward_with_stats(x, padding_mask_).y; }
    Tensor<T> forward(const Tensor<T>& x, const Tensor<uint8_t>& pad) { return forward_with_stats(x, pad).y; }

    /// As MoELayer::forward_with_stats; collective (every rank calls it). pad: (B, T) or (N).
    moe::MoEOutput<T> forward_with_stats(const Tensor<T>& x, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
        const int64_t N = moe::detail::check_moe_input(cfg_, x, pad);
        const int64_t D = cfg_.d_model, E = cfg_.router.num_experts;
        const bool training = this->is_training();
        const Tensor<T> x2 = x.reshape({N, D});
        const Tensor<T> rin =
            training && cfg_.router.input_jitter > 0 ? moe::input_jitter(x2, cfg_.router.input_jitter, gen_) : x2;
        Tensor<T> logits = moe::checked_router_logits(rin, gate->weight, cfg_.name, pad);  // pad rows not checked
        const Tensor<T> clean_logits = logits;
        if (training && cfg_.router.logit_noise) logits = moe::add_logit_noise(logits, gen_);
        moe::MoEOutput<T> out;
        out.routing = moe::softmax_topk(logits, cfg_.router.top_k, cfg_.router.normalize());
        this->emit("router_probs", out.routing.probs);
        const int64_t pads = moe::detail::count_pad(pad);
        const moe::PlanPtr plan = moe::make_dispatch_plan(out.routing.experts, E,
                                                          moe::capacity_for(cfg_.router, N - pads, training), pad);
        out.routing.gates = moe::combine_gates(out.routing, plan, cfg_.router);  // fairseq / GShard gate order
        Tensor<T> y2 = run_experts(x2, out.routing.gates, plan);
        out.stats = moe::load_stats(*plan);
        Tensor<T> aux = Tensor<T>::scalar(T(0));
        if (cfg_.balance != moe::BalanceLoss::None) {
            const Tensor<T> b = cfg_.balance == moe::BalanceLoss::Switch
                                    ? moe::switch_balance_loss(out.routing.probs, out.routing.experts, pad)
                                    : moe::kl_uniform_balance_loss(out.routing.probs, pad);
            out.stats.balance_loss = static_cast<double>(b.item());
            if (cfg_.balance_weight > 0) aux = add(aux, b * static_cast<T>(cfg_.balance_weight));
        }
        if (cfg_.z_loss_weight > 0) {
            const Tensor<T> z = moe::router_z_loss(clean_logits, pad);
            out.stats.z_loss = static_cast<double>(z.item());
            aux = add(aux, z * static_cast<T>(cfg_.z_loss_weight));
        }
        out.aux_loss = aux;
        out.y = y2.reshape(x.shape());
        last_aux_ = out.aux_loss;
        last_stats_ = out.stats;
        this->emit("output", out.y);
        return out;
    }

    /// Multiplies the .grad of this rank's expert parameters by s (see the header: 1/P to match
    /// DataParallel's mean of the dense gradients).
    void scale_expert_grads(T s) {
        NoGrad ng;
        for (auto& t : experts->parameters()) {
            Tensor<T> g = t.grad();
            if (!g.defined()) continue;
            Tensor<T> gc = moekd::detail::contiguous_data(g);
            for (int64_t i = 0; i < gc.numel(); ++i) gc.data()[i] *= s;
            if (!g.is_contiguous()) t.set_grad(gc);
        }
    }

    void set_padding_mask(const Tensor<uint8_t>& pad) { padding_mask_ = pad; }
    const Tensor<T>& last_aux_loss() const { return last_aux_; }
    const moe::LoadStats& last_stats() const { return last_stats_; }
    const moe::MoEConfig& config() const { return cfg_; }
    Generator& generator() { return gen_; }
    Communicator& comm() const { return *comm_; }
    int64_t first_expert() const { return first_; }       // global index of local expert 0
    int64_t num_local_experts() const { return local_; }  // E / P
    /// Time and bytes of this layer's all-to-all exchanges so far (forward and backward).
    const CommStats& comm_stats() const { return *stats_; }
    void reset_comm_stats() { *stats_ = CommStats{}; }

private:
    Tensor<T> run_experts(const Tensor<T>& x2, const Tensor<T>& gates, const moe::PlanPtr& plan) {
        const int P = comm_->size();
        const int64_t L = local_, D = cfg_.d_model;
        // rows per destination rank, and the per-local-expert counts they carry (+ a grad flag)
        std::vector<int64_t> send_rows(P), msg(static_cast<size_t>(P) * (L + 1));
        const bool want_grad = GradMode::enabled() && x2.requires_grad();
        for (int q = 0; q < P; ++q) {
            send_rows[q] = plan->offsets[(q + 1) * L] - plan->offsets[q * L];
            for (int64_t l = 0; l < L; ++l) msg[q * (L + 1) + l] = plan->kept[q * L + l];
            msg[q * (L + 1) + L] = want_grad ? 1 : 0;
        }
        std::vector<int64_t> got(msg.size()), per(P, L + 1);
        const auto t0 = std::chrono::steady_clock::now();
        all_to_all_v<int64_t>(*comm_, msg.data(), per, got.data(), per);
        stats_->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::vector<int64_t> recv_rows(P, 0);
        bool any_grad = want_grad;
        for (int s = 0; s < P; ++s) {
            for (int64_t l = 0; l < L; ++l) recv_rows[s] += got[s * (L + 1) + l];
            any_grad = any_grad || got[s * (L + 1) + L] != 0;
        }
        const Tensor<T> xs = moe::permute_tokens(x2, plan);
        const Tensor<T> xr = all_to_all_rows(xs, send_rows, recv_rows, comm_, stats_, any_grad);
        // xr rows come as (source s, local expert l, row); the experts want (l, s, row)
        auto lp = std::make_shared<moe::DispatchPlan>();
        lp->num_experts = L;
        lp->kept.assign(L, 0);
        for (int s = 0; s < P; ++s)
            for (int64_t l = 0; l < L; ++l) lp->kept[l] += got[s * (L + 1) + l];
        lp->counts = lp->kept;
        lp->offsets.assign(L + 1, 0);
        for (int64_t l = 0; l < L; ++l) lp->offsets[l + 1] = lp->offsets[l] + lp->kept[l];
        const int64_t R = lp->offsets[L];
        Tensor<T> xg = xr;
        Tensor<int64_t> perm, inv;
        if (P > 1 && R > 0) {
            perm = Tensor<int64_t>::empty({R});
            inv = Tensor<int64_t>::empty({R});
            std::vector<int64_t> src_start(P, 0);  // first row of source s in xr
            for (int s = 1; s < P; ++s) src_start[s] = src_start[s - 1] + recv_rows[s - 1];
            int64_t at = 0;
            for (int64_t l = 0; l < L; ++l)
                for (int s = 0; s < P; ++s) {
                    int64_t r0 = src_start[s];
                    for (int64_t m = 0; m < l; ++m) r0 += got[s * (L + 1) + m];
                    for (int64_t i = 0; i < got[s * (L + 1) + l]; ++i, ++at) {
                        perm.data()[at] = r0 + i;
                        inv.data()[r0 + i] = at;
                    }
                }
            xg = index_select(xr, 0, perm);
        }
        moe::ExpertWeights<T> w;
        for (auto& ex : experts->local) {
            w.w1.push_back(ex->fc1->weight);
            w.b1.push_back(ex->fc1->bias);
            w.w2.push_back(ex->fc2->weight);
            w.b2.push_back(ex->fc2->bias);
        }
        Tensor<T> yg = moe::expert_ffn(xg, lp, w, cfg_.activation);
        const Tensor<T> yr = inv.defined() ? index_select(yg, 0, inv) : yg;
        const Tensor<T> ys = all_to_all_rows(yr, recv_rows, send_rows, comm_, stats_, true);
        MOEKD_CHECK(ys.size(0) == plan->rows() && D == ys.size(1), cfg_.name, ": internal: returned rows ", ys.shape());
        return moe::combine_tokens(ys, gates, plan);
    }
    moe::MoEConfig cfg_;
    std::shared_ptr<Communicator> comm_;
    CommStatsPtr stats_;
    int64_t local_ = 1, first_ = 0;
    Generator gen_;
    Tensor<uint8_t> padding_mask_;
    Tensor<T> last_aux_ = Tensor<T>::scalar(T(0));
    moe::LoadStats last_stats_;
};

/// True for a parameter name that lives on one rank only under expert parallelism
/// ("...experts.<i>.<...>"): data-parallel gradient averaging must skip these.
inline bool is_expert_parameter(const std::string& name) {
    const std::string key = "experts.";
    for (size_t at = name.find(key); at != std::string::npos; at = name.find(key, at + 1)) {
        if (at > 0 && name[at - 1] != '.') continue;
        size_t i = at + key.size(), j = i;
        while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
        if (j > i && j < name.size() && name[j] == '.') return true;
    }
    return false;
}

/// The parameters every rank holds alike (all but the expert-parallel ones), by name: what
/// DataParallel averages and check_same_config compares under expert parallelism.
template <class T>
std::vector<std::pair<std::string, Tensor<T>>> dense_parameters(const nn::Module<T>& model) {
    std::vector<std::pair<std::string, Tensor<T>>> out;
    for (auto& [n, t] : model.named_parameters())
        if (!is_expert_parameter(n)) out.emplace_back(n, t);
    return out;
}

}  // namespace moekd::dist
