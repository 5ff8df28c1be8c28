// ones.hpp — OneS, knowledge integration ("One Student Knows All Experts Know", Xue et al.; text
// in ../shared/papers/): a trained MoE teacher becomes one dense student in two steps.
//
//   copy_matched_layers   the student starts from the teacher's "perfectly matched" layers
//                         (everything outside the FFNs: embeddings, attention, norms, head),
//                         copied bit for bit between any two models whose non-FFN tensors have
//                         the same names and shapes (sec. 3)
//   gather_ffn            SVD knowledge gathering: the student's dense FFN from the teacher's
//                         experts (eq. 10-14, linalg/knowledge_gathering.hpp), fc1 and fc2 each
//                         from the experts' truncated SVDs; biases averaged
//   distill_loss          the refinement objective: alpha * CE(labels) + (1 - alpha) * KD, the
//                         KD soft (temperature-scaled KL, eq. 15) or hard (CE on the teacher's
//                         argmax, eq. 16)
//
// Usage (lines of the complete program in docs/methods.md, which the tests build and run; tests/docs
// checks that every line below is in it):
//
//   nn::WideNetViT<float> teacher(cfg, g1), student(cfg.dense(), g2);
//   // ... train the teacher ...
//   const auto copied = ones::copy_matched_layers(teacher, student);
//   const ones::GatherReport r = ones::gather_ffn(teacher, student, /*lambda=*/0.75);
//   // ...
//   Tensor<float> loss = ones::distill_loss(student.forward(x), teacher_logits, y, /*alpha=*/0.25, /*temperature=*/1.0);
#pragma once

#include <string>
#include <vector>

#include "../linalg/knowledge_gathering.hpp"
#include "../losses/kd.hpp"
#include "../moe/moe_layer.hpp"
#include "../nn/layers.hpp"
#include "../nn/widenet.hpp"
#include "../ops/loss.hpp"

namespace moekd::ones {

/// Whether a state-dict name belongs to an FFN: one of its dotted components is "moe" or "ffn"
/// (nn's FFN modules are registered under those names: nn::TransformerLayerBase, WideNetStack).
inline bool is_ffn_name(const std::string& n) {
    size_t from = 0;
    while (from <= n.size()) {
        const size_t dot = n.find('.', from);
        const std::string part = n.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
        if (part == "moe" || part == "ffn") return true;
        if (dot == std::string::npos) break;
        from = dot + 1;
    }
    return false;
}

/// Copies every matched tensor (each name for which skip(name) is false) from teacher to
/// student, bit for bit. Returns the copied names. A name missing on either side, or a shape
/// that differs, is an Error naming the tensor and both shapes, and then nothing is copied.
template <class T, class Skip = bool (*)(const std::string&)>
std::vector<std::string> copy_matched_layers(const nn::Module<T>& teacher, nn::Module<T>& student, Skip skip = is_ffn_name) {
    const auto src = teacher.state_dict();
    auto dst = student.state_dict();
    for (auto& [name, t] : src) {
        if (skip(name)) continue;
        auto it = dst.find(name);
        MOEKD_CHECK(it != dst.end(), "copy_matched_layers: teacher tensor '", name, "' ", t.shape(),
                    " has no counterpart in the student (different depth or architecture?)");
        MOEKD_CHECK(it->second.shape() == t.shape(), "copy_matched_layers: '", name, "' is ", t.shape(),
                    " in the teacher but ", it->second.shape(), " in the student");
    }
    for (auto& [name, t] : dst)
        MOEKD_CHECK(skip(name) || src.count(name), "copy_matched_layers: student tensor '", name, "' ", t.shape(),
                    " has no counterpart in the teacher");
    std::vector<std::string> copied;
    NoGrad ng;
    for (auto& [name, t] : src) {
        if (skip(name)) continue;
        moekd::detail::copy_into(dst.at(name), t);
        copied.push_back(name);
    }
    return copied;
}

/// What gather_ffn did: ranks K_i of fc1 and fc2 per expert.
struct GatherReport {
    std::vector<int64_t> fc1_ranks, fc2_ranks;
    int64_t full_rank = 0;  // min(D, F)
};

/// SVD knowledge gathering (eq. 10-14): the dense FFN's fc1 and fc2 from the MoE layer's experts'
/// (MoELayer::expert_weights) truncated SVDs, keeping a fraction lambda of each spectrum;
/// weights: a per-expert scale of the singular values (empty = 1 each: the paper's sum); the
/// biases are their weighted mean. The FFN must have the experts' shapes.
template <class T>
GatherReport gather_ffn(const moe::MoELayer<T>& experts, nn::FeedForward<T>& ffn, double lambda,
                        const std::vector<double>& weights = {}) {
    const moe::ExpertWeights<T> w = experts.expert_weights();
    MOEKD_CHECK(!w.w1.empty(), "gather_ffn: the MoE layer has no experts");
    MOEKD_CHECK(w.w1[0].shape() == ffn.fc1->weight.shape() && w.w2[0].shape() == ffn.fc2->weight.shape(),
                "gather_ffn: teacher experts fc1 ", w.w1[0].shape(), " / fc2 ", w.w2[0].shape(),
                " do not match the student FFN fc1 ", ffn.fc1->weight.shape(), " / fc2 ", ffn.fc2->weight.shape());
    const auto g1 = linalg::gather_weights(w.w1, lambda, weights);
    const auto g2 = linalg::gather_weights(w.w2, lambda, weights);
    NoGrad ng;
    moekd::detail::copy_into(ffn.fc1->weight, g1.weight);
    moekd::detail::copy_into(ffn.fc2->weight, g2.weight);
    moekd::detail::copy_into(ffn.fc1->bias, linalg::average_biases(w.b1, weights));
    moekd::detail::copy_into(ffn.fc2->bias, linalg::average_biases(w.b2, weights));
    return {g1.ranks, g2.ranks, g1.full.empty() ? 0 : g1.full[0]};
}

/// gather_ffn between an MoE WideNetViT and its dense twin.
template <class T>
GatherReport gather_ffn(const nn::WideNetViT<T>& teacher, nn::WideNetViT<T>& student, double lambda,
                        const std::vector<double>& weights = {}) {
    MOEKD_CHECK(teacher.moe() && student.ffn(), "gather_ffn: needs an MoE teacher (experts > 0) and a dense student");
    return gather_ffn(*teacher.moe(), *student.ffn(), lambda, weights);
}

/// The OneS refinement objective: alpha * task_loss + (1 - alpha) * KD, with KD the soft
/// distillation at temperature `temperature` (losses/kd.hpp soft_distill) or, hard = true, the
/// cross-entropy on the teacher's argmax (hard_distill); teacher_logits get no gradient.
/// task_loss: the student's own loss (a scalar: cross-entropy, or a mixup of two);
/// student_logits, teacher_logits: (B, C).
template <class T>
Tensor<T> distill_objective(const Tensor<T>& task_loss, const Tensor<T>& student_logits, const Tensor<T>& teacher_logits,
                            double alpha, double temperature = 1.0, bool hard = false) {
    MOEKD_CHECK(alpha >= 0 && alpha <= 1, "ones::distill_objective: alpha ", alpha, " must be in [0, 1]");
    const Tensor<T> tl = teacher_logits.detach();
    const Tensor<T> kd = hard ? hard_distill(student_logits, tl) : soft_distill(student_logits, tl, temperature);
    return task_loss * T(alpha) + kd * T(1.0 - alpha);
}

/// distill_objective with the task loss the cross-entropy on labels (B).
template <class T>
Tensor<T> distill_loss(const Tensor<T>& student_logits, const Tensor<T>& teacher_logits, const Tensor<int64_t>& labels,
                       double alpha, double temperature = 1.0, bool hard = false, double label_smoothing = 0.0) {
    return distill_objective(cross_entropy(student_logits, labels, -100, label_smoothing), student_logits, teacher_logits,
                             alpha, temperature, hard);
}

}  // namespace moekd::ones
