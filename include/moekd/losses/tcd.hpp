// tcd.hpp — transfer-capability distillation (TCD, "Improving the Downstream Performance of
// Mixture-of-Experts Transformers via Weak Vanilla Transformers", Lu et al.): the relation losses
// that align a student Transformer encoder (an MoE BERT) with a frozen teacher (a vanilla BERT)
// at every layer, read from the models through forward hooks, so the models know nothing of TCD.
//
// Per encoder layer l the layer's hooks (nn/transformer.hpp, nn/attention.hpp) give:
//   trunk     "attn_trunk", "ffn_trunk"  the normalised hidden states after each sublayer's
//                                        LayerNorm (post-LN BERT)                    (B, T, D)
//   inner     "attn_inner", "ffn_inner"  the sublayer outputs before dropout, residual add and
//                                        LayerNorm (for an MoE layer: the MoE output) (B, T, D)
//   attention "q", "k" of self_attn      per-head queries and keys before scaling  (B, H, T, Dh)
// For L_T and L_I tokens are sampled from the whole batch as G groups of N distinct real
// (non-pad) positions (the paper, line 352: "The relation constraints at the model trunk and
// residual inner required sampling tokens from a batch ... 32 groups, with each group comprising
// 128 representations"), and for each group the N x N cosine-similarity matrices of student and
// teacher are compared (losses/relation.hpp). L_A is not sampled: for each sequence b and head h,
// the M_b x M_b query-key cosines over the sequence's own M_b real tokens (eq. 9-11, lines
// 134-140: "For a single head ... query and key representations {q_k}_{k=1}^M"; the paper does
// not define M, and taking it per sequence is our reading), averaged over the
// heads and sequences of the batch ("the average loss for multiple heads within a batch", line
// 142). The positions are summed, not averaged (line 144: L_T, L_I, L_A are "the total of all
// positions"):
//   L_T = sum over layers l and sublayers s in {attn, ffn} of relation_loss(trunk_s^S, trunk_s^T)
//   L_I = sum over layers l and sublayers s of relation_loss(inner_s^S, inner_s^T)
//   L_A = sum over layers l of mean over (b, h) of the per-sequence q-k relation loss
//   L_TCD = lambda_T L_T + lambda_I L_I + lambda_A L_A
// (Until issue 17 the terms were averaged over the 2L / L positions and L_A used the cross-batch
// groups; at L = 2 the old L_T, L_I are the new ones / 4, so the old lambda_T = lambda_I = 1 are
// lambda_T = lambda_I = 0.25 now.) A term whose lambda is 0 is not computed (the ablations T,
// T+I, T+I+A). Student and teacher may have different widths; they must have the same depth
// (layer l aligned with layer l) and, for L_A, the same number of heads. Teacher tensors get no
// gradient. This file is wiring.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../nn/models.hpp"
#include "relation.hpp"

namespace moekd::tcd {

/// The weights of the three relation terms; 0 switches a term off (it is then not computed).
struct TcdWeights {
    double trunk = 1.0;      // lambda_T
    double inner = 1.0;      // lambda_I
    double attention = 1.0;  // lambda_A
    void validate() const {
        MOEKD_CHECK(trunk >= 0 && inner >= 0 && attention >= 0, "tcd: the weights lambda_T = ", trunk,
                    ", lambda_I = ", inner, ", lambda_A = ", attention, " must be >= 0 (0 switches a term off)");
    }
};

/// Which representations a capture keeps (keep only what a loss will read: they hold memory).
struct CaptureWhat {
    bool trunk = true, inner = true, attention = true;
    static CaptureWhat from(const TcdWeights& w) { return {w.trunk > 0, w.inner > 0, w.attention > 0}; }
};

/// What one encoder layer produced in the last forward (undefined where not captured).
template <class T>
struct LayerReps {
    Tensor<T> attn_trunk, ffn_trunk;  // (B, T, D)
    Tensor<T> attn_inner, ffn_inner;  // (B, T, D)
    Tensor<T> q, k;                   // (B, H, T, Dh)
};

/// Registers forward hooks on every layer (and its self-attention) of a Transformer encoder
/// stack and keeps that layer's trunk / inner / q-k tensors from the latest forward, with their
/// autograd history. The hooks are removed when the capture is destroyed. Not copyable.
template <class T = float>
class RepresentationCapture {
public:
    RepresentationCapture(nn::TransformerEncoder<T>& encoder, CaptureWhat what = {}) : what_(what) { attach(encoder); }
    RepresentationCapture(nn::BertEncoder<T>& bert, CaptureWhat what = {}) : what_(what) { attach(*bert.encoder); }
    RepresentationCapture(const RepresentationCapture&) = delete;
    RepresentationCapture& operator=(const RepresentationCapture&) = delete;
    ~RepresentationCapture() {
        for (auto& [m, id] : hooks_) m->remove_forward_hook(id);
    }

    int64_t depth() const { return static_cast<int64_t>(reps_.size()); }
    const CaptureWhat& what() const { return what_; }
    const LayerReps<T>& layer(int64_t l) const { return reps_.at(static_cast<size_t>(l)); }
    /// Writable access, e.g. to replace a tensor in tests.
    LayerReps<T>& layer_mut(int64_t l) { return reps_.at(static_cast<size_t>(l)); }
    /// Drops the kept tensors (and so the graph they hold).
    void clear() {
        for (auto& r : reps_) r = LayerReps<T>{};
    }

private:
    void attach(nn::TransformerEncoder<T>& encoder) {
        const size_t L = encoder.layers->size();
        reps_.resize(L);
        for (size_t l = 0; l < L; ++l) {
            auto layer = encoder.layers->ptr(l);
            LayerReps<T>* r = &reps_[l];
            const CaptureWhat w = what_;
            if (w.trunk || w.inner) {
                const int id = layer->add_forward_hook([r, w](const std::string& tag, const Tensor<T>& v) {
                    if (w.trunk && tag == "attn_trunk") r->attn_trunk = v;
                    else if (w.trunk && tag == "ffn_trunk") r->ffn_trunk = v;
                    else if (w.inner && tag == "attn_inner") r->attn_inner = v;
                    else if (w.inner && tag == "ffn_inner") r->ffn_inner = v;
                });
                hooks_.emplace_back(layer, id);
            }
            if (w.attention) {
                auto attn = layer->self_attn;
                const int id = attn->add_forward_hook([r](const std::string& tag, const Tensor<T>& v) {
                    if (tag == "q") r->q = v;
                    else if (tag == "k") r->k = v;
                });
                hooks_.emplace_back(attn, id);
            }
        }
    }

    CaptureWhat what_;
    std::vector<LayerReps<T>> reps_;
    std::vector<std::pair<std::shared_ptr<nn::Module<T>>, int>> hooks_;
};

/// The composed loss and its parts (scalars). A switched-off part is undefined; `total` is
/// always defined (a 0 scalar when every term is off).
template <class T>
struct TcdLoss {
    Tensor<T> total, trunk, inner, attention;
};

/// G groups of N distinct flat token positions b * T + t of the real tokens of a (B, T) batch
/// (pad: (B, T) uint8, 1 = pad, or undefined = no padding). Returns (G, N) int64. A group larger
/// than the batch's real tokens is an error.
inline Tensor<int64_t> sample_batch_token_groups(int64_t B, int64_t T, const Tensor<uint8_t>& pad, int64_t groups,
                                                 int64_t group_size, Generator& gen) {
    MOEKD_CHECK(B > 0 && T > 0, "tcd: the batch must be non-empty, got B = ", B, ", T = ", T);
    MOEKD_CHECK(!pad.defined() || pad.shape() == Shape({B, T}), "tcd: pad mask ", pad.shape(),
                " does not fit the batch (", B, ", ", T, ")");
    std::vector<int64_t> real;
    real.reserve(static_cast<size_t>(B * T));
    // read on the host (a mask on a device is copied back)
    const Tensor<uint8_t> pc = pad.defined() ? moekd::detail::contiguous_data(pad.to(Device::CPU)) : Tensor<uint8_t>();
    for (int64_t i = 0; i < B * T; ++i)
        if (!pad.defined() || pc.data()[i] == 0) real.push_back(i);
    const int64_t n = static_cast<int64_t>(real.size());
    MOEKD_CHECK(group_size <= n, "tcd: group size ", group_size, " is larger than the ", n,
                " real tokens in the batch (", B, " x ", T, "); HINT: lower the group size or use larger batches");
    Tensor<int64_t> g = sample_token_groups(n, groups, group_size, gen);
    for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] = real[static_cast<size_t>(g.data()[i])];
    return g;
}

namespace detail {

/// The rows of a (B, T, D) tensor at flat positions idx (G, N) -> (G, N, D).
template <class T>
Tensor<T> gather_tokens(const Tensor<T>& x, const Tensor<int64_t>& idx) {
    return gather_token_groups(x.reshape({x.size(0) * x.size(1), x.size(2)}), idx);
}

/// q or k (B, H, T, Dh) at flat positions idx (G, N) -> (G, H, N, Dh).
template <class T>
Tensor<T> gather_heads(const Tensor<T>& x, const Tensor<int64_t>& idx) {
    const int64_t B = x.size(0), H = x.size(1), Tn = x.size(2), Dh = x.size(3);
    const Tensor<T> rows = x.permute({0, 2, 1, 3}).reshape({B * Tn, H * Dh});  // (B*T, H*Dh)
    return gather_token_groups(rows, idx).reshape({idx.size(0), idx.size(1), H, Dh}).permute({0, 2, 1, 3});
}

template <class T>
void check_pair(const Tensor<T>& s, const Tensor<T>& t, int64_t l, const char* what, int64_t rank) {
    MOEKD_CHECK(s.defined() && t.defined(), "tcd: layer ", l, ": no ", what, " representation captured for the ",
                s.defined() ? "teacher" : "student",
                "; HINT: run a forward of both models after building the captures, with that term enabled");
    MOEKD_CHECK(s.dim() == rank && t.dim() == rank, "tcd: layer ", l, ": ", what, " of student ", s.shape(),
                " and teacher ", t.shape(), " must have rank ", rank);
    MOEKD_CHECK(s.size(0) == t.size(0) && s.size(-2) == t.size(-2), "tcd: layer ", l, ": ", what, " of student ",
                s.shape(), " and teacher ", t.shape(), " come from batches of different shapes; HINT: feed both ",
                "models the same (B, T) batch");
}

}  // namespace detail

/// The TCD relation losses between the latest forwards of `student` and `teacher` on the same
/// batch: L_T and L_I over token groups `groups` (G, N) of flat positions b * T + t
/// (sample_batch_token_groups), L_A per sequence over its real tokens (pad: the batch's (B, T)
/// mask, 1 = pad, or undefined = no padding).
template <class T>
TcdLoss<T> tcd_loss(const RepresentationCapture<T>& student, const RepresentationCapture<T>& teacher,
                    const Tensor<int64_t>& groups, const TcdWeights& w, const Tensor<uint8_t>& pad = Tensor<uint8_t>()) {
    w.validate();
    MOEKD_CHECK(student.depth() == teacher.depth(), "tcd: student has ", student.depth(), " layers but teacher has ",
                teacher.depth(), "; HINT: TCD aligns layer l of the student with layer l of the teacher, so both ",
                "encoders need the same depth");
    MOEKD_CHECK(student.depth() > 0, "tcd: the encoders have no layers");
    MOEKD_CHECK(groups.dim() == 2 && groups.numel() > 0, "tcd: token groups must be (G, N), got ", groups.shape());
    TcdLoss<T> out;
    out.total = Tensor<T>::scalar(T(0));
    const int64_t L = student.depth();
    const Tensor<int64_t> gc = moekd::detail::contiguous_data(groups.to(Device::CPU));  // positions checked on the host
    auto check_positions = [&](const Tensor<T>& x, int64_t l, const char* what) {
        const int64_t n = x.size(0) * x.size(-2);
        for (int64_t i = 0; i < gc.numel(); ++i)
            MOEKD_CHECK(gc.data()[i] >= 0 && gc.data()[i] < n, "tcd: layer ", l, ": token position ", gc.data()[i],
                        " is outside the batch's ", n, " tokens (", what, " ", x.shape(), ")");
    };
    auto pair_term = [&](bool on, auto pick, const char* what) {
        if (!on) return Tensor<T>();
        Tensor<T> acc;
        for (int64_t l = 0; l < L; ++l)
            for (int s = 0; s < 2; ++s) {
                const Tensor<T>& xs = pick(student.layer(l), s);
                const Tensor<T>& xt = pick(teacher.layer(l), s);
                detail::check_pair(xs, xt, l, what, 3);
                check_positions(xs, l, what);
                const Tensor<int64_t> gi = groups.to(xs.device());  // host groups index device rows too
                const Tensor<T> r = relation_loss(detail::gather_tokens(xs, gi), detail::gather_tokens(xt, gi));
                acc = acc.defined() ? acc + r : r;
            }
        return acc;  // the total over the 2L positions (line 144)
    };
    out.trunk = pair_term(w.trunk > 0, [](const LayerReps<T>& r, int s) -> const Tensor<T>& {
        return s == 0 ? r.attn_trunk : r.ffn_trunk;
    }, "trunk");
    out.inner = pair_term(w.inner > 0, [](const LayerReps<T>& r, int s) -> const Tensor<T>& {
        return s == 0 ? r.attn_inner : r.ffn_inner;
    }, "inner");
    if (w.attention > 0) {
        Tensor<T> acc;
        for (int64_t l = 0; l < L; ++l) {
            const LayerReps<T>&rs = student.layer(l), &rt = teacher.layer(l);
            detail::check_pair(rs.q, rt.q, l, "attention query", 4);
            detail::check_pair(rs.k, rt.k, l, "attention key", 4);
            MOEKD_CHECK(rs.q.size(1) == rt.q.size(1), "tcd: layer ", l, ": student has ", rs.q.size(1),
                        " attention heads (q ", rs.q.shape(), "), teacher has ", rt.q.size(1), " (q ", rt.q.shape(),
                        "); HINT: L_A compares heads one to one, so both need the same head count");
            const int64_t B = rs.q.size(0), Tn = rs.q.size(2);
            MOEKD_CHECK(!pad.defined() || pad.shape() == Shape({B, Tn}), "tcd: layer ", l, ": pad mask ", pad.shape(),
                        " does not fit the batch (", B, ", ", Tn, ") of the attention q/k ", rs.q.shape());
            const Tensor<uint8_t> pc =
                pad.defined() ? moekd::detail::contiguous_data(pad.to(Device::CPU)) : Tensor<uint8_t>();
            bool any_pad = false;
            for (int64_t i = 0; pad.defined() && i < B * Tn && !any_pad; ++i) any_pad = pc.data()[i] != 0;
            Tensor<T> r;
            if (!any_pad) {  // every sequence has T real tokens: one batched call, a (b, h) pair per "group"
                r = qk_relation_loss(rs.q, rs.k, rt.q, rt.k);
            } else {  // sequence by sequence over its own real tokens, then the mean over sequences
                int64_t seqs = 0;
                for (int64_t b = 0; b < B; ++b) {
                    std::vector<int64_t> pos;
                    for (int64_t t = 0; t < Tn; ++t)
                        if (pc.data()[b * Tn + t] == 0) pos.push_back(b * Tn + t);
                    if (pos.empty()) continue;  // an all-pad row has no attention to align
                    const Tensor<int64_t> idx =
                        Tensor<int64_t>::from_vector(pos, {1, int64_t(pos.size())}).to(rs.q.device());
                    const Tensor<T> rb = qk_relation_loss(detail::gather_heads(rs.q, idx), detail::gather_heads(rs.k, idx),
                                                          detail::gather_heads(rt.q, idx), detail::gather_heads(rt.k, idx));
                    r = r.defined() ? r + rb : rb;
                    ++seqs;
                }
                MOEKD_CHECK(seqs > 0, "tcd: layer ", l, ": every sequence of the batch is padding; L_A has no tokens");
                r = r * static_cast<T>(1.0 / double(seqs));
            }
            acc = acc.defined() ? acc + r : r;
        }
        out.attention = acc;  // the total over the L layers (line 144)
    }
    if (out.trunk.defined()) out.total = out.total + out.trunk * static_cast<T>(w.trunk);
    if (out.inner.defined()) out.total = out.total + out.inner * static_cast<T>(w.inner);
    if (out.attention.defined()) out.total = out.total + out.attention * static_cast<T>(w.attention);
    return out;
}

}  // namespace moekd::tcd
