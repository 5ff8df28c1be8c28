// widenet.hpp — the models of the OneS reproduction and the two OneS initialisation steps.
//
// WideNetViT: a ViT whose L blocks share ONE attention module and ONE FFN (WideNet: Xue et al.
// 2021, "Go wider instead of deeper", arXiv:2107.11817, as the OneS paper cites it), each block
// keeping its own two LayerNorms. With experts > 0 the shared FFN is an moe::MoELayer (the MoE
// teacher); with experts = 0 it is a dense nn::FeedForward of the same width (the student).
// Pre-LN blocks:
//   x = x + drop(attn(ln_attn_l(x)));  x = x + drop(ffn(ln_ffn_l(x)))      for l = 0 .. L-1
// (drop: dropout on each residual branch, as ViT's; also after the embeddings)
//   logits = classifier(layer_norm(x)[:, 0])                     (class token)
// Parameter names: embeddings.*, attn.*, moe.* | ffn.*, blocks.<l>.ln_attn.*, blocks.<l>.ln_ffn.*,
// layer_norm.*, classifier.*  — so every name outside moe.* / ffn.* is a "perfectly matched"
// layer between teacher and student (OneS sec. 3).
//
// copy_matched_layers: teacher -> student for every matched tensor (bit-identical copies).
// gather_ffn: SVD knowledge gathering of the teacher's experts into the student's FFN
// (linalg/knowledge_gathering.hpp), fc1 and fc2 separately; biases averaged.
//
// Kept in the example for now: sharing modules across depth is what the library's
// TransformerEncoder cannot do (it builds a new layer per depth).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <moekd/linalg/knowledge_gathering.hpp>
#include <moekd/moe/moe_layer.hpp>
#include <moekd/nn/models.hpp>

namespace ones {

using namespace moekd;

struct WideNetConfig {
    int64_t image_size = 28, patch_size = 7, channels = 1, num_classes = 10;
    int64_t dim = 64, heads = 4, ffn_dim = 128, layers = 4;
    int64_t experts = 4;  // 0: dense FFN (the student)
    int64_t top_k = 2;
    double capacity_train = 1.25, capacity_eval = 2.0, balance_weight = 0.01;
    bool logit_noise = false;  // OneS eq. 2 noise on the router logits while training
    double dropout = 0.0, ln_eps = 1e-6, init_std = 0.02;  // dropout: embeddings and both residual branches

    WideNetConfig dense() const {
        WideNetConfig c = *this;
        c.experts = 0;
        return c;
    }
    nn::ViTConfig vit() const {
        nn::ViTConfig v;
        v.image_size = image_size, v.patch_size = patch_size, v.num_channels = channels;
        v.hidden_size = dim, v.num_heads = heads, v.intermediate_size = ffn_dim, v.num_layers = layers;
        v.num_classes = num_classes, v.hidden_dropout = dropout, v.layer_norm_eps = ln_eps;
        v.initializer_range = init_std;
        return v;
    }
    int64_t tokens() const { return vit().num_patches() + 1; }
};

/// One block's own parameters: the two pre-LN LayerNorms.
template <class T = float>
class BlockNorms : public nn::Module<T> {
public:
    std::shared_ptr<nn::LayerNorm<T>> ln_attn, ln_ffn;
    BlockNorms(int64_t dim, double eps) {
        ln_attn = this->register_module("ln_attn", std::make_shared<nn::LayerNorm<T>>(dim, eps));
        ln_ffn = this->register_module("ln_ffn", std::make_shared<nn::LayerNorm<T>>(dim, eps));
    }
};

/// What one WideNetViT forward returns.
template <class T = float>
struct WideNetOutput {
    Tensor<T> logits;                    // (B, num_classes)
    Tensor<T> aux;                       // the MoE aux loss summed over depth; undefined when dense
    std::vector<int64_t> expert_counts;  // assignments routed to each expert, summed over depth: (E)
};

template <class T = float>
class WideNetViT : public nn::Module<T> {
public:
    std::shared_ptr<nn::ViTEmbeddings<T>> embeddings;
    std::shared_ptr<nn::MultiHeadAttention<T>> attn;  // shared across depth
    std::shared_ptr<moe::MoELayer<T>> moe;            // shared across depth (teacher)
    std::shared_ptr<nn::FeedForward<T>> ffn;          // shared across depth (student)
    std::shared_ptr<nn::ModuleList<BlockNorms<T>, T>> blocks;
    std::shared_ptr<nn::LayerNorm<T>> layer_norm;
    std::shared_ptr<nn::Linear<T>> classifier;
    std::shared_ptr<nn::Dropout<T>> drop;  // on both residual branches of every block

    WideNetViT(const WideNetConfig& c, Generator& gen) : cfg_(c) {
        MOEKD_CHECK(c.layers > 0 && c.experts >= 0, "WideNetViT: layers ", c.layers, " must be > 0 and experts ",
                    c.experts, " >= 0");
        embeddings = this->register_module("embeddings", std::make_shared<nn::ViTEmbeddings<T>>(c.vit(), gen));
        attn = this->register_module("attn", std::make_shared<nn::MultiHeadAttention<T>>(c.dim, c.heads, gen));
        if (c.experts > 0) {
            moe::MoEConfig m;
            m.d_model = c.dim, m.ffn_dim = c.ffn_dim, m.activation = nn::Activation::GELU;
            m.router.num_experts = c.experts, m.router.top_k = c.top_k;
            m.router.capacity_factor_train = c.capacity_train, m.router.capacity_factor_eval = c.capacity_eval;
            m.router.logit_noise = c.logit_noise;
            m.balance_weight = c.balance_weight;
            moe = this->register_module("moe", std::make_shared<moe::MoELayer<T>>(m, gen));
        } else {
            ffn = this->register_module("ffn",
                                        std::make_shared<nn::FeedForward<T>>(c.dim, c.ffn_dim, gen, nn::Activation::GELU));
        }
        blocks = this->register_module("blocks", std::make_shared<nn::ModuleList<BlockNorms<T>, T>>());
        for (int64_t l = 0; l < c.layers; ++l) blocks->push_back(std::make_shared<BlockNorms<T>>(c.dim, c.ln_eps));
        layer_norm = this->register_module("layer_norm", std::make_shared<nn::LayerNorm<T>>(c.dim, c.ln_eps));
        classifier = this->register_module("classifier", std::make_shared<nn::Linear<T>>(c.dim, c.num_classes, gen));
        nn::init_linears_normal(*this, c.init_std, gen);
        // after the initialisation, so that its draws do not depend on the dropout; no parameters
        drop = this->register_module("drop", std::make_shared<nn::Dropout<T>>(c.dropout, gen));
    }

    /// images: (B, C, H, W) -> {logits (B, num_classes), the MoE aux loss summed over depth
    /// (undefined for the dense student), the routing counts}
    WideNetOutput<T> forward_with_aux(const Tensor<T>& images) {
        Tensor<T> x = embeddings->forward(images);  // (B, N + 1, D)
        WideNetOutput<T> out;
        out.expert_counts.assign(size_t(cfg_.experts), 0);
        for (int64_t l = 0; l < cfg_.layers; ++l) {
            const BlockNorms<T>& b = (*blocks)[size_t(l)];
            x = x + drop->forward(attn->self_attention(b.ln_attn->forward(x)));
            const Tensor<T> h = b.ln_ffn->forward(x);
            if (moe) {
                moe::MoEOutput<T> o = moe->forward_with_stats(h);
                out.aux = nn::add_aux(out.aux, o.aux_loss);
                for (int64_t e = 0; e < cfg_.experts; ++e)
                    out.expert_counts[size_t(e)] += o.stats.tokens_per_expert[size_t(e)];
                x = x + drop->forward(o.y);
            } else {
                x = x + drop->forward(ffn->forward(h));
            }
        }
        const Tensor<T> cls = layer_norm->forward(x).select(1, 0);  // (B, D)
        out.logits = classifier->forward(cls);
        return out;
    }
    /// images: (B, C, H, W) -> logits (B, num_classes)
    Tensor<T> forward(const Tensor<T>& images) { return forward_with_aux(images).logits; }
    const WideNetConfig& config() const { return cfg_; }

    /// FFN FLOPs per image (2 per multiply-add): dense 2 GEMMs of D x F per token and layer; MoE
    /// top_k of them plus the router (D x E).
    double ffn_flops_per_image() const {
        const double per_ffn = 2.0 * 2.0 * double(cfg_.dim) * double(cfg_.ffn_dim);
        const double per_token = moe ? double(cfg_.top_k) * per_ffn + 2.0 * double(cfg_.dim) * double(cfg_.experts)
                                     : per_ffn;
        return per_token * double(cfg_.tokens()) * double(cfg_.layers);
    }

private:
    WideNetConfig cfg_;
};

inline bool is_ffn_name(const std::string& n) { return n.rfind("moe.", 0) == 0 || n.rfind("ffn.", 0) == 0; }

/// Copies every matched tensor (all but moe.* / ffn.*) from teacher to student, bit for bit.
/// Returns the copied names. A name missing in the student, or a shape that differs, is an Error
/// naming the tensor and both shapes.
template <class T>
std::vector<std::string> copy_matched_layers(const nn::Module<T>& teacher, nn::Module<T>& student) {
    const auto src = teacher.state_dict();
    auto dst = student.state_dict();
    std::vector<std::string> copied;
    NoGrad ng;
    for (auto& [name, t] : src) {
        if (is_ffn_name(name)) continue;
        auto it = dst.find(name);
        MOEKD_CHECK(it != dst.end(), "copy_matched_layers: teacher tensor '", name, "' ", t.shape(),
                    " has no counterpart in the student (different depth or architecture?)");
        MOEKD_CHECK(it->second.shape() == t.shape(), "copy_matched_layers: '", name, "' is ", t.shape(),
                    " in the teacher but ", it->second.shape(), " in the student");
        moekd::detail::copy_into(it->second, t);
        copied.push_back(name);
    }
    for (auto& [name, t] : dst)
        MOEKD_CHECK(is_ffn_name(name) || src.count(name), "copy_matched_layers: student tensor '", name, "' ",
                    t.shape(), " has no counterpart in the teacher");
    return copied;
}

/// What gather_ffn did: ranks K_i of fc1 and fc2 per expert.
struct GatherReport {
    std::vector<int64_t> fc1_ranks, fc2_ranks;
    int64_t full_rank = 0;  // min(D, F)
};

/// OneS knowledge gathering: the student's dense FFN from the teacher's experts (eq. 10-14).
/// weights: per-expert scale of the singular values (empty = 1 each, the paper's sum); biases are
/// their weighted mean.
template <class T>
GatherReport gather_ffn(const WideNetViT<T>& teacher, WideNetViT<T>& student, double lambda,
                        const std::vector<double>& weights = {}) {
    MOEKD_CHECK(teacher.moe && student.ffn, "gather_ffn: needs an MoE teacher (experts > 0) and a dense student");
    struct { std::vector<Tensor<T>> w1, b1, w2, b2; } w;  // per expert, straight from the modules
    for (auto& ex : *teacher.moe->experts) {
        w.w1.push_back(ex->fc1->weight), w.b1.push_back(ex->fc1->bias);
        w.w2.push_back(ex->fc2->weight), w.b2.push_back(ex->fc2->bias);
    }
    MOEKD_CHECK(w.w1[0].shape() == student.ffn->fc1->weight.shape() &&
                    w.w2[0].shape() == student.ffn->fc2->weight.shape(),
                "gather_ffn: teacher experts fc1 ", w.w1[0].shape(), " / fc2 ", w.w2[0].shape(),
                " do not match the student FFN fc1 ", student.ffn->fc1->weight.shape(), " / fc2 ",
                student.ffn->fc2->weight.shape());
    const auto g1 = linalg::gather_weights(w.w1, lambda, weights);
    const auto g2 = linalg::gather_weights(w.w2, lambda, weights);
    NoGrad ng;
    moekd::detail::copy_into(student.ffn->fc1->weight, g1.weight);
    moekd::detail::copy_into(student.ffn->fc2->weight, g2.weight);
    moekd::detail::copy_into(student.ffn->fc1->bias, linalg::average_biases(w.b1, weights));
    moekd::detail::copy_into(student.ffn->fc2->bias, linalg::average_biases(w.b2, weights));
    return {g1.ranks, g2.ranks, g1.full.empty() ? 0 : g1.full[0]};
}

}  // namespace ones
