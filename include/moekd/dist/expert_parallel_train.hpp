// expert_parallel_train.hpp — the steps of a training loop around dist::ExpertParallelMoE layers
// (expert_parallel.hpp) that differ from plain data parallelism. Every rank holds the replicated
// ("dense") parameters and its own experts; DataParallel keeps the dense ones in sync:
//
//   dist::DataParallel<float> dp(comm, dist::dense_parameters(model));  // experts are not averaged
//   ... forward on this rank's batch; loss.backward();                 // collective (all-to-all)
//   dp.average_gradients();                                            // dense: mean over ranks
//   dist::scale_expert_grads(model, 1.0f / comm->size());              // experts: sum -> mean
//   dist::clip_grad_norm(*comm, model.named_parameters(), 1.0);        // one norm over all ranks
//   opt.step();
//   auto full = make_plain_model();                                    // MoELayer, same config
//   dist::gather_experts(*comm, model, *full);                         // every rank: the whole model
//
// clip_grad_norm computes torch.nn.utils.clip_grad_norm_'s norm of the whole model: the
// replicated gradients (equal on every rank after averaging) once, the expert gradients summed
// over the ranks, so every rank scales by the same factor and the step equals the one of a
// data-parallel run of the same model. global_num_parameters counts the same way.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../optim/optimizer.hpp"
#include "expert_parallel.hpp"

namespace moekd::dist {

/// Multiplies the gradients of every ExpertParallelMoE layer's own experts in `model` by s
/// (1 / world size: the experts received the sum of every rank's loss gradients).
template <class T>
void scale_expert_grads(nn::Module<T>& model, T s) {
    if (auto* ep = dynamic_cast<ExpertParallelMoE<T>*>(&model)) ep->scale_expert_grads(s);  // the layer itself
    for (auto& [name, m] : model.named_modules())
        if (auto* ep = dynamic_cast<ExpertParallelMoE<T>*>(m.get()); ep && ep != &model) ep->scale_expert_grads(s);
}

namespace detail {
/// Each distinct tensor once, split into replicated and expert-parallel (by name).
template <class T>
void split_by_kind(const std::vector<std::pair<std::string, Tensor<T>>>& named, std::vector<Tensor<T>>& replicated,
                   std::vector<Tensor<T>>& sharded) {
    std::vector<const TensorImpl<T>*> seen;
    for (const auto& [n, t] : named) {
        if (std::find(seen.begin(), seen.end(), t.impl()) != seen.end()) continue;
        seen.push_back(t.impl());
        (is_expert_parameter(n) ? sharded : replicated).push_back(t);
    }
}
}  // namespace detail

/// Clips the gradients of `named` (this rank's parameters, by name) to a global L2 norm of at
/// most max_norm, the norm taken over the whole model: replicated parameters once, expert
/// parameters ("...experts.<i>...") summed over the ranks. Returns that norm (the same on every
/// rank). Collective. A non-finite norm is the same error on every rank.
template <class T>
double clip_grad_norm(Communicator& comm, const std::vector<std::pair<std::string, Tensor<T>>>& named,
                      double max_norm) {
    std::vector<Tensor<T>> replicated, sharded, all;
    detail::split_by_kind(named, replicated, sharded);
    double sq = optim::grad_sq_sum(sharded);
    comm.all_reduce(&sq, 1, ReduceOp::Sum);
    sq += optim::grad_sq_sum(replicated);
    const double norm = std::sqrt(sq);
    all = replicated;
    all.insert(all.end(), sharded.begin(), sharded.end());
    optim::clip_to_norm(all, norm, max_norm);
    return norm;
}

/// Elements of the whole model: replicated parameters once, expert parameters summed over the
/// ranks (what model.num_parameters() gives for the single-process model). Collective.
template <class T>
int64_t global_num_parameters(Communicator& comm, const nn::Module<T>& model) {
    std::vector<Tensor<T>> replicated, sharded;
    detail::split_by_kind(model.named_parameters(), replicated, sharded);
    int64_t n = 0, e = 0;
    for (const auto& t : replicated) n += t.numel();
    for (const auto& t : sharded) e += t.numel();
    comm.all_reduce(&e, 1, ReduceOp::Sum);
    return n + e;
}

/// Loads into `full` (a single-process model of the same architecture: moe::MoELayer where
/// `sharded` has ExpertParallelMoE) the whole state of the expert-parallel `sharded`: its own
/// replicated tensors, and every expert tensor broadcast from the rank that owns it. Every rank
/// ends with the whole model (for evaluation on any rank, or export by rank 0). Collective; an
/// expert tensor that no rank holds, or a replicated one this rank lacks, is an error naming it.
template <class T>
void gather_experts(Communicator& comm, const nn::Module<T>& sharded, nn::Module<T>& full) {
    const typename nn::Module<T>::StateDict mine = sharded.state_dict();
    typename nn::Module<T>::StateDict out;
    for (const auto& [name, t] : full.state_dict()) {  // name order: the same on every rank
        const auto it = mine.find(name);
        if (!is_expert_parameter(name)) {
            MOEKD_CHECK(it != mine.end(), "gather_experts: '", name, "' of the full model is not in the sharded one");
            out[name] = it->second;
            continue;
        }
        int64_t owner[2] = {it != mine.end() ? comm.rank() : -1, it != mine.end() && it->second.shape() != t.shape()};
        comm.all_reduce(owner, 2, ReduceOp::Max);  // {the owner, whether some holder's shape differs}
        MOEKD_CHECK(owner[0] >= 0, "gather_experts: no rank holds the expert tensor '", name, "' ", t.shape());
        MOEKD_CHECK(owner[1] == 0, "gather_experts: the expert tensor '", name, "' has another shape than ",
                    t.shape(), " of the full model on some rank");
        Tensor<T> v = owner[0] == comm.rank() ? it->second.contiguous().clone() : Tensor<T>::empty(t.shape());
        broadcast(comm, v, int(owner[0]), name);
        out[name] = v;
    }
    full.load_state_dict(out, /*strict=*/true);
}

}  // namespace moekd::dist
