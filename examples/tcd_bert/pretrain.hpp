// pretrain.hpp — masked-LM pre-training of the three models of the TCD example, and the held-out
// masked-LM log-likelihood used to compare their pre-training performance.
//
// One loop serves all three: the vanilla teacher and the MoE BERT train on
//   L = L_MLM (+ lambda_B L_B for the MoE, inside the MoE layers' aux loss)
// and the MoE BERT with TCD adds, from the frozen teacher run on the same corrupted batch,
//   + lambda_T L_T + lambda_I L_I + lambda_A L_A          (moekd/losses/tcd.hpp)
// Masks are re-drawn every epoch (mask_tokens per batch with one running generator), segments are
// contiguous token runs of fixed length, AdamW with linear warmup then linear decay, gradient
// clipping. The MLM head runs on the masked positions only (the other rows carry no loss).
// Under mpirun (o.comm with size N > 1): every rank shuffles the same order, takes its contiguous
// share of each step's batch (dist::shard_range), draws masks and TCD groups from its own stream,
// and dist::DataParallel averages the gradients once per step before clipping and AdamW; a
// non-finite loss on any rank stops every rank with the same error. One process: unchanged.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/data/mlm.hpp>
#include <moekd/dist/data_parallel.hpp>
#include <moekd/losses/tcd.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>

#include <moekd/dist/collective.hpp>  // stop_together, CollectiveError
#include "data.hpp"
#include "model.hpp"

namespace tcdb {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct PretrainOptions {
    int epochs = 3;
    int64_t batch = 16;
    double lr = 1e-3, weight_decay = 0.01, warmup_frac = 0.1, clip = 1.0;
    // "Adam ... an L2 weight of 0.01" (l.356): AdamW's decoupled decay (false, our default: BERT's
    // and HF's optimizer), or Adam with the L2 term added to the gradient (true: torch.optim.Adam's
    // weight_decay, the phrase read literally)
    bool l2 = false;
    tcd::TcdWeights tcd{0.0, 0.0, 0.0};  // all 0: no distillation
    int64_t groups = 32, group_size = 128;
    uint64_t seed = 1;
    Precision precision = Precision::fp32;  // of the training step's products (the one that runs here)
    std::shared_ptr<dist::Communicator> comm;  // null or size 1: one process
    // The device is the model's (main.cpp moves it with .to(device) before pretrain): batches and
    // masks are made on the CPU and moved there; losses come back with .item().
};

/// What one pre-training epoch did (means over its steps) and the held-out log-likelihood after it.
struct EpochLog {
    int epoch = 0;
    double mlm = 0, balance = 0, trunk = 0, inner = 0, attention = 0;
    double heldout_ll = 0;  // mean log p(original token) over masked held-out positions (nats)
    // MoE routing over the epoch's training steps (means over steps and MoE layers; 0 for a dense
    // model): the top-1 gate p_i(x) that scales the expert output (eq. 3), the busiest expert's
    // load over the mean load, the fraction of tokens dropped by capacity, the unweighted KL
    double gate = 0, max_load = 0, dropped = 0, kl = 0;
    double seconds = 0;
};

inline data::MlmConfig mlm_config(int64_t vocab) {
    data::MlmConfig c;
    c.mask_id = kMask, c.vocab_size = vocab, c.special_ids = {kPad, kUnk, kCls, kSep};
    return c;
}

/// Segments idx[from, from + n) as a (n, T) batch.
inline Tensor<int64_t> segment_batch(const std::vector<std::vector<int64_t>>& segs, const std::vector<size_t>& idx,
                                     size_t from, size_t n) {
    const int64_t T = int64_t(segs[idx[from]].size());
    Tensor<int64_t> x = Tensor<int64_t>::empty({int64_t(n), T});
    for (size_t i = 0; i < n; ++i) std::copy(segs[idx[from + i]].begin(), segs[idx[from + i]].end(), x.data() + i * T);
    return x;
}

/// The MLM logits at the masked positions only and their labels.
/// hidden: (B, T, D); labels: (B, T) with -100 where not masked -> logits (1, M, V), labels (1, M)
inline Tensor<float> masked_logits(nn::BertEncoder<float>& m, const Tensor<float>& hidden, const Tensor<int64_t>& labels,
                                   Tensor<int64_t>& picked) {
    const int64_t N = labels.numel(), D = hidden.size(2);
    std::vector<int64_t> pos, lab;
    const Tensor<int64_t> lc = labels.to(Device::CPU);  // read on the host (labels may be on the device)
    const int64_t* ld = lc.data();
    for (int64_t i = 0; i < N; ++i)
        if (ld[i] >= 0) pos.push_back(i), lab.push_back(ld[i]);
    picked = Tensor<int64_t>::from_vector(lab, {1, int64_t(lab.size())}).to(hidden.device());
    const Tensor<int64_t> p = Tensor<int64_t>::from_vector(pos, {int64_t(pos.size())}).to(hidden.device());
    return m.mlm_logits(index_select(hidden.reshape({N, D}), 0, p).unsqueeze(0));
}

/// Held-out masked-LM log-likelihood: the same masks for every model and checkpoint (fixed seed),
/// eval mode, mean log-probability of the original token at the masked positions.
inline double heldout_ll(nn::BertEncoder<float>& m, const std::vector<std::vector<int64_t>>& segs, int64_t vocab,
                         int64_t batch = 32, uint64_t mask_seed = 12345) {
    if (segs.empty()) return std::nan("");
    NoGrad ng;
    const bool was = m.is_training();
    m.eval();
    Generator gen(mask_seed);
    const auto cfg = mlm_config(vocab);
    std::vector<size_t> idx(segs.size());
    std::iota(idx.begin(), idx.end(), size_t(0));
    double total = 0;
    int64_t count = 0;
    for (size_t from = 0; from < segs.size(); from += size_t(batch)) {
        const size_t n = std::min(size_t(batch), segs.size() - from);
        const auto mb = data::mask_tokens(segment_batch(segs, idx, from, n), cfg, gen);
        if (mb.num_chosen == 0) continue;
        Tensor<int64_t> lab;
        const Tensor<float> logits = masked_logits(m, m.forward(mb.input_ids.to(m.device())), mb.labels, lab);
        total -= double(cross_entropy(logits, lab, -100, 0.0, Reduction::Sum).item());
        count += lab.numel();
    }
    m.train(was);
    return count ? total / double(count) : std::nan("");
}

/// Pre-trains `m` for o.epochs epochs over `train` segments; with `teacher` and some TCD weight > 0,
/// distils from the frozen teacher. After each epoch: held-out log-likelihood, then
/// on_epoch(log) (save a checkpoint, log). A non-finite loss is an error naming the step.
inline std::vector<EpochLog> pretrain(const std::string& name, nn::BertEncoder<float>& m, nn::BertEncoder<float>* teacher,
                                      const std::vector<std::vector<int64_t>>& train,
                                      const std::vector<std::vector<int64_t>>& heldout, int64_t vocab,
                                      const PretrainOptions& o, const std::function<void(const EpochLog&)>& on_epoch) {
    const bool distil = teacher && (o.tcd.trunk > 0 || o.tcd.inner > 0 || o.tcd.attention > 0);
    const int64_t steps_per_epoch = int64_t(train.size()) / o.batch, total = steps_per_epoch * o.epochs;
    MOEKD_CHECK(o.epochs == 0 || steps_per_epoch > 0, name, ": ", train.size(),
                " pre-training segments are fewer than one batch of ", o.batch, "; HINT: more text or a smaller --batch");
    const int R = o.comm ? o.comm->size() : 1, rank = o.comm ? o.comm->rank() : 0;
    MOEKD_CHECK(o.batch >= R, name, ": --batch ", o.batch, " is smaller than the ", R, " ranks; HINT: a larger --batch");
    // data parallel: rank 0's initial weights everywhere, gradients averaged once per step
    std::unique_ptr<dist::DataParallel<float>> dp;
    if (R > 1) dp = std::make_unique<dist::DataParallel<float>>(o.comm, m);
    const dist::Range share = dist::shard_range(o.batch, rank, R);
    optim::Adam<float> opt(optim::decay_groups(m.parameters(), o.lr, o.weight_decay), 0.9, 0.999, 1e-8,
                           /*decoupled_weight_decay=*/!o.l2);
    const int64_t warmup = int64_t(o.warmup_frac * double(total));
    const auto cfg = mlm_config(vocab);
    Generator gen(o.seed);  // data order (the same on every rank); one process: masks and groups too
    Generator rank_gen(o.seed * 0x9E3779B97F4A7C15ull + uint64_t(rank) + 1);  // this rank's masks and groups
    Generator& mgen = R > 1 ? rank_gen : gen;
    std::vector<size_t> order(train.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::unique_ptr<tcd::RepresentationCapture<float>> cs, ct;
    if (distil) {
        teacher->eval();
        cs = std::make_unique<tcd::RepresentationCapture<float>>(m, tcd::CaptureWhat::from(o.tcd));
        ct = std::make_unique<tcd::RepresentationCapture<float>>(*teacher, tcd::CaptureWhat::from(o.tcd));
    }
    const bool tty = rank == 0 && isatty(fileno(stderr));
    std::vector<EpochLog> logs;
    // routing statistics (issue 17: is the gate scale or token dropping what holds the MoE back?)
    const auto moes = moe_layers(m);
    double gate_sum = 0;
    int64_t gate_rows = 0;
    std::vector<std::pair<moe::MoELayer<float>*, int>> gate_hooks;
    for (auto* x : moes)
        gate_hooks.emplace_back(x, x->add_forward_hook([&](const std::string& tag, const Tensor<float>& v) {
            if (tag != "router_probs" || !m.is_training()) return;
            const Tensor<float> pc = moekd::detail::contiguous_data(v.to(Device::CPU));  // read on the host
            const int64_t N = v.size(0), E = v.size(1);
            for (int64_t t = 0; t < N; ++t) gate_sum += *std::max_element(pc.data() + t * E, pc.data() + (t + 1) * E);
            gate_rows += N;
        }));
    m.train();
    const Device dev = m.device();  // segments are full: no padding mask
    int64_t step = 0;
    for (int epoch = 1; epoch <= o.epochs; ++epoch) {
        shuffle(order, gen);
        const auto t0 = Clock::now();
        EpochLog log;
        log.epoch = epoch;
        for (int64_t s = 0; s < steps_per_epoch; ++s) {
            const auto mb = data::mask_tokens(
                segment_batch(train, order, size_t(s * o.batch + share.begin), size_t(share.size())), cfg, mgen);
            const int64_t B = mb.input_ids.size(0), T = mb.input_ids.size(1);
            Tensor<int64_t> lab;
            const Tensor<int64_t> ids = mb.input_ids.to(dev);
            Autocast autocast(o.precision, dev);  // this step's products (the teacher's too); AdamW stays fp32
            const nn::AuxOutput<float> fwd = m.forward_with_aux(ids);
            const Tensor<float>& hidden = fwd.y;
            const Tensor<float> mlm = cross_entropy(masked_logits(m, hidden, mb.labels, lab), lab);
            const Tensor<float>& bal = fwd.aux;  // undefined for the vanilla BERT
            Tensor<float> loss = nn::add_aux(mlm, bal);
            if (distil) {
                {
                    NoGrad ng;
                    teacher->forward(ids);
                }
                const auto groups =
                    tcd::sample_batch_token_groups(B, T, Tensor<uint8_t>(), o.groups, o.group_size, mgen).to(dev);
                const auto t = tcd::tcd_loss(*cs, *ct, groups, o.tcd);
                loss = loss + t.total;
                if (t.trunk.defined()) log.trunk += t.trunk.item();
                if (t.inner.defined()) log.inner += t.inner.item();
                if (t.attention.defined()) log.attention += t.attention.item();
            }
            const float l = loss.item();
            const std::string bad = std::isfinite(l) ? std::string()
                                                      : msg(name, ": the loss became ", l, " at epoch ", epoch, " step ", s + 1,
                                                            " (MLM ", mlm.item(), ", balance ", aux_value(bal),
                                                            "). Checkpoints of finished epochs are kept; ",
                                                            "HINT: lower --lr or the TCD weights");
            if (R > 1) dist::stop_together(*o.comm, bad);  // every rank stops together
            MOEKD_CHECK(bad.empty(), bad);
            opt.set_lr(optim::linear_warmup_decay_lr(++step, o.lr, warmup, total));
            opt.zero_grad();
            loss.backward();
            if (dp) dp->average_gradients();
            if (o.clip > 0) optim::clip_grad_norm(m.parameters(), o.clip);
            opt.step();
            if (cs) cs->clear(), ct->clear();
            log.mlm += mlm.item();
            log.balance += aux_value(bal);
            for (auto* x : moes) {
                const moe::LoadStats& st = x->last_stats();
                int64_t mx = 0;
                for (int64_t c : st.tokens_per_expert) mx = std::max(mx, c);
                if (st.num_tokens > 0) log.max_load += double(mx) * double(st.num_experts) / double(st.num_tokens * st.top_k);
                log.dropped += st.dropped_fraction;
                log.kl += st.balance_loss;
            }
            if (tty && (s % 5 == 0 || s + 1 == steps_per_epoch)) {
                const int w = 30, done = int(w * (s + 1) / steps_per_epoch);
                std::fprintf(stderr, "\r  %-10s epoch %d/%d [%s%s] mlm %.3f ", name.c_str(), epoch, o.epochs,
                             std::string(size_t(done), '#').c_str(), std::string(size_t(w - done), '.').c_str(),
                             log.mlm / double(s + 1));
            }
        }
        if (tty) std::fprintf(stderr, "\r%90s\r", "");
        const double k = double(std::max<int64_t>(steps_per_epoch, 1));
        log.mlm /= k, log.balance /= k, log.trunk /= k, log.inner /= k, log.attention /= k;
        if (!moes.empty()) {
            const double kl_ = k * double(moes.size());
            log.max_load /= kl_, log.dropped /= kl_, log.kl /= kl_;
            log.gate = gate_rows ? gate_sum / double(gate_rows) : 0;
        }
        gate_sum = 0, gate_rows = 0;
        if (R > 1) {  // the logged means: over the ranks too (the held-out LL is the same on every rank)
            double v[5] = {log.mlm, log.balance, log.trunk, log.inner, log.attention};
            o.comm->all_reduce(v, 5, dist::ReduceOp::Sum);
            log.mlm = v[0] / R, log.balance = v[1] / R, log.trunk = v[2] / R, log.inner = v[3] / R, log.attention = v[4] / R;
        }
        log.heldout_ll = heldout_ll(m, heldout, vocab);
        if (R > 1) {  // the same weights on every rank give the same held-out LL: a check of the sync
            double mm[2] = {log.heldout_ll, -log.heldout_ll};
            o.comm->all_reduce(mm, 2, dist::ReduceOp::Max);
            if (rank == 0 && mm[0] != -mm[1])
                std::printf("WARNING: %s: the ranks' models differ after epoch %d (held-out LL %.6f .. %.6f)\n",
                            name.c_str(), epoch, -mm[1], mm[0]);
        }
        log.seconds = seconds_since(t0);
        logs.push_back(log);
        on_epoch(log);
    }
    for (auto& [x, id] : gate_hooks) x->remove_forward_hook(id);
    return logs;
}

/// A detached copy of a model's state (a checkpoint kept in memory).
inline nn::Module<float>::StateDict snapshot(const nn::Module<float>& m) {
    nn::Module<float>::StateDict out;
    for (auto& [n, t] : m.state_dict()) out[n] = t.detach().clone();
    return out;
}

}  // namespace tcdb
