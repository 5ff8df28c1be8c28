// widenet.hpp — a depth-shared Transformer block stack (WideNet: Xue et al. 2021, "Go wider
// instead of deeper", arXiv:2107.11817) and the WideNet ViT built on it.
//
// WideNetStack: L pre-LN blocks that share ONE attention module and ONE FFN across depth, each
// block keeping its own two LayerNorms. With experts > 0 the shared FFN is an moe::MoELayer (so
// the MoE layer is "wider", not repeated); with experts = 0 it is a dense nn::FeedForward of the
// same width:
//   x = x + drop(attn(ln_attn_l(x)));  x = x + drop(ffn(ln_ffn_l(x)))      for l = 0 .. L-1
// Parameter names: attn.*, moe.* | ffn.*, blocks.<l>.ln_attn.*, blocks.<l>.ln_ffn.*. The dropout
// module is added by add_dropout() (no dropout without it), so that a model can draw its weights
// first and the dropout stream after them.
//
// WideNetViT: ViT embeddings (class token, patches, positions; dropout after them), a
// WideNetStack "encoder", a final LayerNorm and a classifier on the class token:
//   logits = classifier(layer_norm(encoder(embeddings(images)))[:, 0])
// Names: embeddings.*, encoder.*, layer_norm.*, classifier.* — every name outside encoder.moe.* /
// encoder.ffn.* is the same between an MoE WideNetViT and its dense twin (cfg.dense()): the
// "perfectly matched" layers of OneS (methods/ones.hpp).
//
//   nn::WideNetConfig c;            // 28x28x1 images, patch 7, D 64, 4 heads, F 128, 4 blocks, 4 experts
//   nn::WideNetViT<float> teacher(c, gen), student(c.dense(), gen);
//   nn::WideNetOutput<float> o = teacher.forward_with_aux(images);   // o.logits, o.aux (MoE loss)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../moe/moe_layer.hpp"
#include "models.hpp"

namespace moekd::nn {

/// One block's own parameters: its two pre-LN LayerNorms.
template <class T = float>
class WideNetBlockNorms : public Module<T> {
public:
    std::shared_ptr<LayerNorm<T>> ln_attn, ln_ffn;
    WideNetBlockNorms(int64_t dim, double eps) {
        ln_attn = this->register_module("ln_attn", std::make_shared<LayerNorm<T>>(dim, eps));
        ln_ffn = this->register_module("ln_ffn", std::make_shared<LayerNorm<T>>(dim, eps));
    }
};

/// What a WideNet forward returns.
template <class T = float>
struct WideNetOutput {
    Tensor<T> logits;                    // (B, num_classes) for WideNetViT; the hidden states (B, N, D) for the stack
    Tensor<T> aux;                       // the MoE aux loss summed over depth; undefined when dense
    std::vector<int64_t> expert_counts;  // assignments routed to each expert, summed over depth: (E); empty when dense
};

/// The sizes of a WideNetStack.
struct WideNetStackConfig {
    int64_t dim = 64, heads = 4, ffn_dim = 128, layers = 4;
    Activation activation = Activation::GELU;
    double ln_eps = 1e-6;
    int64_t experts = 4;  // 0: a dense FFN shared across depth
    moe::RouterConfig router;  // num_experts is set from `experts`
    moe::BalanceLoss balance = moe::BalanceLoss::Switch;  // SwitchAllChoices: OneS eq. 3 over every top-k choice
    double balance_weight = 0.01;
};

template <class T = float>
class WideNetStack : public Module<T> {
public:
    std::shared_ptr<MultiHeadAttention<T>> attn;  // shared across depth
    std::shared_ptr<moe::MoELayer<T>> moe;        // shared across depth (experts > 0)
    std::shared_ptr<FeedForward<T>> ffn;          // shared across depth (experts == 0)
    std::shared_ptr<ModuleList<WideNetBlockNorms<T>, T>> blocks;
    std::shared_ptr<Dropout<T>> drop;             // on both residual branches; null until add_dropout

    WideNetStack(const WideNetStackConfig& c, Generator& gen) : cfg_(c) {
        MOEKD_CHECK(c.layers > 0 && c.experts >= 0, "WideNetStack: layers ", c.layers, " must be > 0 and experts ",
                    c.experts, " >= 0");
        attn = this->register_module("attn", std::make_shared<MultiHeadAttention<T>>(c.dim, c.heads, gen));
        if (c.experts > 0) {
            moe::MoEConfig m;
            m.d_model = c.dim, m.ffn_dim = c.ffn_dim, m.activation = c.activation;
            m.router = c.router;
            m.router.num_experts = c.experts;
            m.balance = c.balance, m.balance_weight = c.balance_weight;
            moe = this->register_module("moe", std::make_shared<moe::MoELayer<T>>(m, gen));
        } else {
            ffn = this->register_module("ffn", std::make_shared<FeedForward<T>>(c.dim, c.ffn_dim, gen, c.activation));
        }
        blocks = this->register_module("blocks", std::make_shared<ModuleList<WideNetBlockNorms<T>, T>>());
        for (int64_t l = 0; l < c.layers; ++l) blocks->push_back(std::make_shared<WideNetBlockNorms<T>>(c.dim, c.ln_eps));
    }
    /// Dropout with probability p on both residual branches of every block (once).
    void add_dropout(double p, Generator& gen) {
        MOEKD_CHECK(!drop, "WideNetStack: add_dropout called twice");
        drop = this->register_module("drop", std::make_shared<Dropout<T>>(p, gen));
    }

    /// x: (B, N, D) -> {hidden states (B, N, D) in .logits, the MoE aux loss summed over depth, counts}
    WideNetOutput<T> forward_with_aux(Tensor<T> x) const {
        MOEKD_CHECK(x.defined() && x.dim() == 3 && x.size(2) == cfg_.dim, "WideNetStack(dim=", cfg_.dim, "): input ",
                    x.defined() ? x.shape() : Shape{}, " must be (B, N, ", cfg_.dim, ")");
        WideNetOutput<T> out;
        out.expert_counts.assign(size_t(cfg_.experts), 0);
        auto branch = [&](const Tensor<T>& y) { return drop ? drop->forward(y) : y; };
        for (int64_t l = 0; l < cfg_.layers; ++l) {
            const WideNetBlockNorms<T>& b = (*blocks)[size_t(l)];
            x = x + branch(attn->self_attention(b.ln_attn->forward(x)));
            const Tensor<T> h = b.ln_ffn->forward(x);
            if (moe) {
                moe::MoEOutput<T> o = moe->forward_with_stats(h);
                out.aux = add_aux(out.aux, o.aux_loss);
                for (int64_t e = 0; e < cfg_.experts; ++e) out.expert_counts[size_t(e)] += o.stats.tokens_per_expert[size_t(e)];
                x = x + branch(o.y);
            } else {
                x = x + branch(ffn->forward(h));
            }
        }
        out.logits = x;
        return out;
    }
    Tensor<T> forward(const Tensor<T>& x) const { return forward_with_aux(x).logits; }
    const WideNetStackConfig& config() const { return cfg_; }

private:
    WideNetStackConfig cfg_;
};

/// The sizes of a WideNetViT.
struct WideNetConfig {
    int64_t image_size = 28, patch_size = 7, channels = 1, num_classes = 10;
    int64_t dim = 64, heads = 4, ffn_dim = 128, layers = 4;
    int64_t experts = 4;  // 0: dense FFN (a OneS student)
    int64_t top_k = 2;
    double capacity_train = 1.25, capacity_eval = 2.0, balance_weight = 0.01;
    bool logit_noise = false;  // noise on the router logits while training
    bool renormalize_gates = true;  // top-k (k > 1) gates renormalised to sum 1; false: the softmax values (OneS eq. 2)
    bool balance_all_choices = false;  // the balance loss's m_i over every top-k choice (OneS eq. 3), not first choices
    double dropout = 0.0, ln_eps = 1e-6, init_std = 0.02;  // dropout: embeddings and both residual branches

    /// The dense twin: the same model with a dense FFN.
    WideNetConfig dense() const {
        WideNetConfig c = *this;
        c.experts = 0;
        return c;
    }
    ViTConfig vit() const {
        ViTConfig v;
        v.image_size = image_size, v.patch_size = patch_size, v.num_channels = channels;
        v.hidden_size = dim, v.num_heads = heads, v.intermediate_size = ffn_dim, v.num_layers = layers;
        v.num_classes = num_classes, v.hidden_dropout = dropout, v.layer_norm_eps = ln_eps;
        v.initializer_range = init_std;
        return v;
    }
    WideNetStackConfig stack() const {
        WideNetStackConfig s;
        s.dim = dim, s.heads = heads, s.ffn_dim = ffn_dim, s.layers = layers, s.ln_eps = ln_eps;
        s.activation = Activation::GELU;
        s.experts = experts;
        s.router.top_k = top_k;
        s.router.capacity_factor_train = capacity_train, s.router.capacity_factor_eval = capacity_eval;
        s.router.logit_noise = logit_noise;
        if (!renormalize_gates) s.router.normalize_gates = false;  // else the router's default (k > 1)
        s.balance = balance_all_choices ? moe::BalanceLoss::SwitchAllChoices : moe::BalanceLoss::Switch;
        s.balance_weight = balance_weight;
        return s;
    }
    int64_t tokens() const { return vit().num_patches() + 1; }
};

template <class T = float>
class WideNetViT : public Module<T> {
public:
    std::shared_ptr<ViTEmbeddings<T>> embeddings;
    std::shared_ptr<WideNetStack<T>> encoder;
    std::shared_ptr<LayerNorm<T>> layer_norm;
    std::shared_ptr<Linear<T>> classifier;

    WideNetViT(const WideNetConfig& c, Generator& gen) : cfg_(c) {
        embeddings = this->register_module("embeddings", std::make_shared<ViTEmbeddings<T>>(c.vit(), gen));
        encoder = this->register_module("encoder", std::make_shared<WideNetStack<T>>(c.stack(), gen));
        layer_norm = this->register_module("layer_norm", std::make_shared<LayerNorm<T>>(c.dim, c.ln_eps));
        classifier = this->register_module("classifier", std::make_shared<Linear<T>>(c.dim, c.num_classes, gen));
        init_linears_normal(*this, c.init_std, gen);
        // after the initialisation, so that its draws do not depend on the dropout; no parameters
        encoder->add_dropout(c.dropout, gen);
    }

    /// images: (B, C, H, W) -> {logits (B, num_classes), the MoE aux loss summed over depth
    /// (undefined when dense), the routing counts}
    WideNetOutput<T> forward_with_aux(const Tensor<T>& images) const {
        WideNetOutput<T> out = encoder->forward_with_aux(embeddings->forward(images));  // (B, N + 1, D)
        const Tensor<T> cls = layer_norm->forward(out.logits).select(1, 0);               // (B, D)
        out.logits = classifier->forward(cls);
        return out;
    }
    /// images: (B, C, H, W) -> logits (B, num_classes)
    Tensor<T> forward(const Tensor<T>& images) const { return forward_with_aux(images).logits; }
    const WideNetConfig& config() const { return cfg_; }
    /// The shared MoE layer (null when dense) and the shared dense FFN (null with experts).
    moe::MoELayer<T>* moe() const { return encoder->moe.get(); }
    FeedForward<T>* ffn() const { return encoder->ffn.get(); }

    /// FFN FLOPs per image (2 per multiply-add): dense 2 GEMMs of D x F per token and layer; MoE
    /// top_k of them plus the router (D x E).
    double ffn_flops_per_image() const {
        const double per_ffn = 2.0 * 2.0 * double(cfg_.dim) * double(cfg_.ffn_dim);
        const double per_token = encoder->moe ? double(cfg_.top_k) * per_ffn + 2.0 * double(cfg_.dim) * double(cfg_.experts)
                                              : per_ffn;
        return per_token * double(cfg_.tokens()) * double(cfg_.layers);
    }

private:
    WideNetConfig cfg_;
};

}  // namespace moekd::nn
