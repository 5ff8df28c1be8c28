// runs.hpp — the pre-training runs of tcd_bert: the vanilla teacher, the MoE BERT, the MoE BERT
// with TCD (and, with --ablations, the paper's Table 3 terms one by one), and a dry run of the TCD
// loss on the flags' shapes, so that what TCD cannot do (a depth or head mismatch between teacher
// and student, groups larger than a batch) fails before any training.
#pragma once

#include <algorithm>
#include <vector>

#include "cli.hpp"
#include "report.hpp"

namespace tcdb {

/// Fails fast, before any training, on what TCD cannot do with the flags: depth or head mismatch
/// between teacher and student, groups larger than a batch's tokens.
inline void dry_run_tcd(const ModelConfig& student, const ModelConfig& teacher, const PretrainOptions& o, int64_t seq_len) {
    Generator g(7);
    auto s = make_bert(student, true, g), t = make_bert(teacher, false, g);
    tcd::RepresentationCapture<float> cs(*s, tcd::CaptureWhat::from(o.tcd)), ct(*t, tcd::CaptureWhat::from(o.tcd));
    const auto groups = tcd::sample_batch_token_groups(o.batch, seq_len, Tensor<uint8_t>(), o.groups, o.group_size, g);
    NoGrad ng;
    const Tensor<int64_t> ids = Tensor<int64_t>::full({1, seq_len}, kCls);
    s->forward(ids);
    t->forward(ids);
    const Tensor<int64_t> g1 = tcd::sample_batch_token_groups(1, seq_len, Tensor<uint8_t>(), 1, std::min(seq_len, o.group_size), g);
    (void)tcd::tcd_loss(cs, ct, g1, o.tcd);
    (void)groups;
}

/// The runs in order (the teacher first: the TCD runs distil from it).
inline std::vector<RunRecord> plan_runs(const Options& o, const ModelConfig& teacher_cfg, int ranks) {
    const double lambda_t = o.lambda_t, lambda_i = o.lambda_i, lambda_a = o.lambda_a;
    const tcd::TcdWeights full_w{lambda_t, lambda_i, lambda_a};
    std::vector<RunRecord> runs;
    auto add_run = [&](const char* key, const char* label, bool moe, tcd::TcdWeights w) {
        RunRecord r;
        r.key = key, r.label = label, r.moe = moe, r.weights = w;
        runs.push_back(r);
    };
    add_run("teacher", "Vanilla BERT (teacher)", false, {0, 0, 0});
    add_run("moe", "MoE BERT", true, {0, 0, 0});
    auto tcd_run = [&](const char* key, const char* label, tcd::TcdWeights w) { add_run(key, label, true, w); };
    // the ablation adds the terms one by one, as the paper's Table 3 (T, T+I, T+I+A). With the
    // default lambda_A = 0 the main TCD run is T+I, so the ablation adds T+I+A with lambda_A = 1
    // (the paper's larger-scale weight) instead of repeating T+I.
    if (o.ablations) {
        tcd_run("tcd-t", "MoE BERT w/ TCD (T)", {lambda_t, 0, 0});
        if (lambda_a > 0) tcd_run("tcd-ti", "MoE BERT w/ TCD (T+I)", {lambda_t, lambda_i, 0});
    }
    const bool any_tcd = lambda_t > 0 || lambda_i > 0 || lambda_a > 0;
    if (any_tcd) tcd_run("tcd", "MoE BERT w/ TCD", full_w);  // the paper's name at both scales
    if (o.ablations && lambda_a == 0) tcd_run("tcd-tia", "MoE BERT w/ TCD (T+I+A)", {lambda_t, lambda_i, 1.0});
    for (auto& r : runs)
        if (r.key.rfind("tcd", 0) == 0) {
            PretrainOptions po = o.po;
            po.tcd = r.weights;
            po.batch = std::max<int64_t>(1, o.po.batch / ranks);  // a rank's smallest share of a step
            dry_run_tcd(o.mc, teacher_cfg, po, o.seq_len);
        }
    return runs;
}

}  // namespace tcdb
