// finetune.hpp — fine-tuning a pre-trained BERT (vanilla or MoE) on one GLUE-format task and
// scoring it on the dev split with the task's GLUE metrics. Two modes, as the paper: full
// fine-tuning, and Houlsby adapters (only adapters, LayerNorms, pooler and classifier train);
// downstream() reports the better of the two seed means. Cross-entropy for classification, squared error for
// regression (STS-B); the MoE balance loss stays on. AdamW, linear warmup and decay.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/metrics.hpp>

#include "model.hpp"
#include "pretrain.hpp"

namespace tcdb {

struct FinetuneOptions {
    int epochs = 3;
    int64_t batch = 32, max_len = 64;
    double lr_full = 5e-4, lr_adapter = 2e-3, weight_decay = 0.01, warmup_frac = 0.06, clip = 1.0;  // warmup: the paper, l.362
    Device device = Device::CPU;  // where each classifier trains and is evaluated (batches made on the CPU, moved)
    Precision precision = Precision::fp32;  // of the training step's products (evaluation stays fp32)
};

/// A task tokenised once, shared by every model.
struct EncodedTask {
    data::GlueTaskInfo info;
    std::vector<Encoded> train, dev;
    std::vector<int64_t> train_label, dev_label;
    std::vector<double> train_score, dev_score;
};

inline EncodedTask encode_task(const Task& t, const text::SentencePiece& sp, int64_t max_len) {
    EncodedTask e;
    e.info = t.info;
    for (auto* split : {&t.train, &t.dev}) {
        const bool tr = split == &t.train;
        for (const auto& x : *split) {
            (tr ? e.train : e.dev).push_back(encode_example(sp, x, t.info.pair, max_len));
            (tr ? e.train_label : e.dev_label).push_back(x.label);
            (tr ? e.train_score : e.dev_score).push_back(x.score);
        }
    }
    return e;
}

/// Examples idx[from, from + n) padded to their longest: ids, types (B, T) and pad mask (1 = pad).
inline void task_batch(const std::vector<Encoded>& ex, const std::vector<size_t>& idx, size_t from, size_t n,
                       Tensor<int64_t>& ids, Tensor<int64_t>& types, Tensor<uint8_t>& pad) {
    size_t T = 0;
    for (size_t i = 0; i < n; ++i) T = std::max(T, ex[idx[from + i]].ids.size());
    ids = Tensor<int64_t>::zeros({int64_t(n), int64_t(T)});
    types = Tensor<int64_t>::zeros({int64_t(n), int64_t(T)});
    pad = Tensor<uint8_t>::zeros({int64_t(n), int64_t(T)});
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
        const Encoded& e = ex[idx[from + i]];
        for (size_t t = 0; t < T; ++t) {
            const bool real = t < e.ids.size();
            ids.data()[i * T + t] = real ? e.ids[t] : kPad;
            types.data()[i * T + t] = real ? e.types[t] : 0;
            pad.data()[i * T + t] = real ? 0 : 1;
            any = any || !real;
        }
    }
    if (!any) pad = Tensor<uint8_t>();
}

/// Moves a batch made by task_batch to `dev` (an undefined pad mask stays undefined).
inline void batch_to(Device dev, Tensor<int64_t>& ids, Tensor<int64_t>& types, Tensor<uint8_t>& pad) {
    ids = ids.to(dev), types = types.to(dev);
    if (pad.defined()) pad = pad.to(dev);
}

struct FinetuneResult {
    std::map<std::string, double> metrics;
    double score = 0;  // glue_score of the metrics
    bool adapters = false;
    int64_t trainable = 0;
    double seconds = 0;
};

/// Dev-set metrics of a classifier (eval mode, no autograd).
inline std::map<std::string, double> evaluate(SequenceClassifier& clf, const EncodedTask& t, int64_t batch) {
    NoGrad ng;
    clf.eval();
    std::vector<size_t> idx(t.dev.size());
    std::iota(idx.begin(), idx.end(), size_t(0));
    std::vector<int64_t> pred;
    std::vector<double> score;
    for (size_t from = 0; from < idx.size(); from += size_t(batch)) {
        const size_t n = std::min(size_t(batch), idx.size() - from);
        Tensor<int64_t> ids, types;
        Tensor<uint8_t> pad;
        task_batch(t.dev, idx, from, n, ids, types, pad);
        batch_to(clf.device(), ids, types, pad);
        const Tensor<float> logits = clf.forward(ids, types, pad).to(Device::CPU).contiguous();  // (n, C), read here
        const int64_t C = logits.size(1);
        for (size_t i = 0; i < n; ++i) {
            const float* r = logits.data() + int64_t(i) * C;
            if (t.info.regression) score.push_back(double(r[0]));
            else pred.push_back(std::max_element(r, r + C) - r);
        }
    }
    clf.train();
    return t.info.regression ? metrics::glue_metrics(t.info, score, t.dev_score)
                             : metrics::glue_metrics(t.info, pred, t.dev_label);
}

/// Fine-tunes a fresh classifier on top of `pretrained` and returns its dev metrics after the last epoch.
inline FinetuneResult finetune(const ModelConfig& mc, bool moe, const nn::Module<float>::StateDict& pretrained,
                               const EncodedTask& t, const FinetuneOptions& o, bool adapters, uint64_t seed) {
    const auto t0 = Clock::now();
    Generator gen(seed);
    auto clf = make_classifier(mc, moe, pretrained, t.info.num_labels(), adapters, gen);  // on the CPU
    clf->to(o.device);  // before the optimizer is built
    std::vector<Tensor<float>> params;
    for (auto& p : clf->parameters())
        if (p.requires_grad()) params.push_back(p);
    FinetuneResult res;
    res.adapters = adapters;
    for (auto& p : params) res.trainable += p.numel();
    const double lr = adapters ? o.lr_adapter : o.lr_full;
    optim::AdamW<float> opt(optim::decay_groups(params, lr, o.weight_decay));
    const int64_t steps_per_epoch = (int64_t(t.train.size()) + o.batch - 1) / o.batch, total = steps_per_epoch * o.epochs;
    const int64_t warmup = int64_t(o.warmup_frac * double(total));
    std::vector<size_t> order(t.train.size());
    std::iota(order.begin(), order.end(), size_t(0));
    int64_t step = 0;
    clf->train();
    for (int epoch = 1; epoch <= o.epochs; ++epoch) {
        shuffle(order, gen);
        for (int64_t s = 0; s < steps_per_epoch; ++s) {
            const size_t from = size_t(s * o.batch), n = std::min(size_t(o.batch), order.size() - from);
            Tensor<int64_t> ids, types;
            Tensor<uint8_t> pad;
            task_batch(t.train, order, from, n, ids, types, pad);
            batch_to(o.device, ids, types, pad);
            Autocast autocast(o.precision, o.device);  // this step's products; AdamW stays fp32
            const nn::AuxOutput<float> fwd = clf->forward_with_aux(ids, types, pad);
            const Tensor<float>& logits = fwd.y;
            Tensor<float> loss;
            if (t.info.regression) {
                std::vector<float> y(n);
                for (size_t i = 0; i < n; ++i) y[i] = float(t.train_score[order[from + i]]);
                const Tensor<float> d = logits.reshape({int64_t(n)}) - Tensor<float>::from_vector(y, {int64_t(n)}).to(o.device);
                loss = mean(d * d);
            } else {
                std::vector<int64_t> y(n);
                for (size_t i = 0; i < n; ++i) y[i] = t.train_label[order[from + i]];
                loss = cross_entropy(logits, Tensor<int64_t>::from_vector(y, {int64_t(n)}).to(o.device));
            }
            loss = nn::add_aux(loss, fwd.aux);
            const float l = loss.item();
            MOEKD_CHECK(std::isfinite(l), "fine-tuning on ", t.info.name, ": the loss became ", l, " at epoch ", epoch,
                        " step ", s + 1, "; HINT: lower --ft-lr / --adapter-lr");
            opt.set_lr(optim::linear_warmup_decay_lr(++step, lr, warmup, total));
            opt.zero_grad();
            loss.backward();
            if (o.clip > 0) optim::clip_grad_norm(params, o.clip);
            opt.step();
        }
    }
    res.metrics = evaluate(*clf, t, 64);
    res.score = metrics::glue_score(res.metrics);
    res.seconds = seconds_since(t0);
    return res;
}

/// The mean over seeds of each mode, and the better of the two means (the paper, line 182: "reporting
/// the better result of the two for each model": one mode per model, not the better per seed);
/// `modes`: "full", "adapters" or "both".
struct DownstreamScore {
    double score = 0, full = std::nan(""), adapters = std::nan("");
    std::map<std::string, double> metrics;  // of the chosen mode, averaged over seeds
    std::string chosen;                     // "full" / "adapters"
    double seconds = 0;
};

inline DownstreamScore downstream(const ModelConfig& mc, bool moe, const nn::Module<float>::StateDict& pre,
                                  const EncodedTask& t, const FinetuneOptions& o, const std::string& modes,
                                  const std::vector<uint64_t>& seeds) {
    DownstreamScore d;
    std::map<std::string, double> mf, ma;
    double sf = 0, sa = 0;
    for (uint64_t seed : seeds) {
        if (modes != "adapters") {
            const auto r = finetune(mc, moe, pre, t, o, false, seed);
            sf += r.score, d.seconds += r.seconds;
            for (auto& [k, v] : r.metrics) mf[k] += v / double(seeds.size());
        }
        if (modes != "full") {
            const auto r = finetune(mc, moe, pre, t, o, true, seed);
            sa += r.score, d.seconds += r.seconds;
            for (auto& [k, v] : r.metrics) ma[k] += v / double(seeds.size());
        }
    }
    const double k = double(seeds.size());
    if (modes != "adapters") d.full = sf / k;
    if (modes != "full") d.adapters = sa / k;
    const bool use_adapters = modes == "adapters" || (modes == "both" && d.adapters > d.full);
    d.chosen = use_adapters ? "adapters" : "full";
    d.score = use_adapters ? d.adapters : d.full;
    d.metrics = use_adapters ? ma : mf;
    return d;
}

}  // namespace tcdb
