// expert_parallel.hpp — an MoE layer whose E experts are split across the ranks of a
// Communicator (expert parallelism, GShard / DeepSpeed-MoE style). Rank r of P owns the experts
// [r E/P, (r+1) E/P); the router (gate.weight) is replicated and trained data-parallel like every
// dense parameter. One forward on rank r, for its own N tokens:
//
//   route locally (moe::MoELayerBase's forward, as moe::MoELayer) -> dispatch plan over all E experts
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
// The forward (router, plan, gates, aux loss, statistics, hooks) is moe::MoELayerBase's, shared
// with MoELayer; this class only runs the experts (run_experts: the exchange above).
// Parameters are named as in MoELayer with GLOBAL expert indices: gate.weight and, on rank r,
// only experts.<i>.fc1.weight ... for its own i. Built with the same Generator, every rank draws
// the same weights as MoELayer(cfg, gen) would (all experts drawn, the foreign ones dropped).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
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
class ExpertParallelMoE : public moe::MoELayerBase<T> {
public:
    // gate (weight (E, D), replicated) is moe::MoELayerBase's
    std::shared_ptr<ExpertShard<T>> experts;        // this rank's E / P experts

    /// Draws the same weights as moe::MoELayer(cfg, gen) on every rank (gen seeded alike) and
    /// keeps gate + this rank's experts. E must be a multiple of the world size.
    ExpertParallelMoE(const moe::MoEConfig& cfg, Generator& gen, std::shared_ptr<Communicator> comm)
        : moe::MoELayerBase<T>(checked(cfg, comm), gen), comm_(std::move(comm)), stats_(std::make_shared<CommStats>()) {
        const int64_t E = cfg.router.num_experts, P = comm_->size();
        local_ = E / P;
        first_ = comm_->rank() * local_;
        experts = this->register_module("experts", std::make_shared<ExpertShard<T>>());
        for (int64_t e = 0; e < E; ++e) {
            auto ex = std::make_shared<moe::Expert<T>>(cfg.d_model, cfg.ffn_dim, gen);  // drawn on every rank
            if (e >= first_ && e < first_ + local_) experts->add(e, ex);
        }
        this->seed_jitter(gen);
    }

    /// Copies gate and this rank's experts from a single-process layer of the same config.
    void load_from(const moe::MoELayer<T>& src) {
        const moe::MoEConfig& cfg = this->cfg_;
        MOEKD_CHECK(src.config().router.num_experts == cfg.router.num_experts && src.config().d_model == cfg.d_model &&
                        src.config().ffn_dim == cfg.ffn_dim,
                    cfg.name, ": load_from: layer sizes differ (E, D, F)");
        auto sd = src.state_dict();
        typename nn::Module<T>::StateDict mine;
        for (auto& [n, t] : this->state_dict()) mine[n] = sd.at(n);
        this->load_state_dict(mine);
    }

    // forward(x, pad) -> {y, aux} and forward_with_stats(x, pad): moe::MoELayerBase's, collective
    // here (every rank calls them). pad: (B, T) or (N).

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

    Communicator& comm() const { return *comm_; }
    int64_t first_expert() const { return first_; }       // global index of local expert 0
    int64_t num_local_experts() const { return local_; }  // E / P
    /// Time and bytes of this layer's all-to-all exchanges so far (forward and backward).
    const CommStats& comm_stats() const { return *stats_; }
    void reset_comm_stats() { *stats_ = CommStats{}; }

protected:
    /// permute_tokens, the exchange to the owners, the local experts, the exchange back,
    /// combine_tokens (collective).
    Tensor<T> run_experts(const Tensor<T>& x2, const Tensor<T>& gates, const moe::PlanPtr& plan) override {
        const int P = comm_->size();
        const int64_t L = local_, D = this->cfg_.d_model;
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
        Tensor<T> yg = moe::expert_ffn(xg, lp, w, this->cfg_.activation);
        const Tensor<T> yr = inv.defined() ? index_select(yg, 0, inv) : yg;
        const Tensor<T> ys = all_to_all_rows(yr, recv_rows, send_rows, comm_, stats_, true);
        MOEKD_CHECK(ys.size(0) == plan->rows() && D == ys.size(1), this->cfg_.name, ": internal: returned rows ",
                    ys.shape());
        return moe::combine_tokens(ys, gates, plan);
    }

private:
    /// The checks made before the base draws the gate: communicator, config, the split of E.
    static const moe::MoEConfig& checked(const moe::MoEConfig& cfg, const std::shared_ptr<Communicator>& comm) {
        MOEKD_CHECK(comm, cfg.name, ": expert parallel layer needs a communicator");
        moe::MoELayerBase<T>::check_config(cfg);
        const int64_t E = cfg.router.num_experts, P = comm->size();
        MOEKD_CHECK(E % P == 0, cfg.name, ": ", E, " experts cannot be split evenly over ", P,
                    " ranks. HINT: use a world size that divides num_experts");
        return cfg;
    }
    std::shared_ptr<Communicator> comm_;
    CommStatsPtr stats_;
    int64_t local_ = 1, first_ = 0;
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
