// models.hpp — the two encoder-only models of the methods: BertEncoder (HF BertForMaskedLM's
// structure: embeddings, post-LN GELU encoder, masked-LM head tied to the word embeddings) and
// ViT (HF ViTForImageClassification's: patch embedding, class token, learned positions, pre-LN
// encoder, final LayerNorm, classifier on the class token).
//
// Parameter names follow HF for the parts outside the layers (embeddings.word_embeddings,
// embeddings.LayerNorm, cls.predictions.transform.dense, cls.predictions.bias,
// embeddings.cls_token, classifier ...); the layers themselves use our fairseq-style names
// (encoder.layers.0.self_attn.q_proj ...). Differences from HF, on purpose: the padding mask is
// 1 = pad (HF's attention_mask is 1 = keep); the ViT patch projection is a Linear over flattened
// patches, weight (D, C*P*P) = HF's conv weight (D, C, P, P) flattened; ViT positions are a
// (N + 1, D) table (HF: a (1, N + 1, D) parameter); the ViT final norm is encoder.layer_norm.
// With MoE FFNs (an FFN factory), forward_with_aux also returns the summed aux loss of the MoE
// layers (transformer.hpp: AuxOutput; undefined for a dense model); the padding mask reaches them
// through the layers.
#pragma once

#include <memory>

#include "../ops/join.hpp"
#include "transformer.hpp"

namespace moekd::nn {

/// HF-style init: every Linear weight N(0, std^2) and bias 0, except adapters (kept near
/// identity) and Linears whose weight is `skip` (a tied projection).
template <class T>
void init_linears_normal(Module<T>& m, double std, Generator& gen, const Tensor<T>& skip = Tensor<T>()) {
    NoGrad ng;
    for (auto& [name, mod] : m.named_modules()) {
        auto* l = dynamic_cast<Linear<T>*>(mod.get());
        if (!l || name.find("adapter") != std::string::npos || (skip.defined() && l->weight.is_same(skip))) continue;
        moekd::detail::copy_into(l->weight, Tensor<T>::randn(l->weight.shape(), gen, 0.0, std));
        if (l->bias.defined()) std::fill_n(l->bias.data(), l->bias.numel(), T(0));
    }
}

// ---- BERT --------------------------------------------------------------------------------------
struct BertConfig {
    int64_t vocab_size = 30522, hidden_size = 768, num_layers = 12, num_heads = 12, intermediate_size = 3072;
    int64_t max_position_embeddings = 512, type_vocab_size = 2, pad_token_id = 0;
    double hidden_dropout = 0.1, attention_dropout = 0.1, layer_norm_eps = 1e-12, initializer_range = 0.02;
    bool adapters = false;
    int64_t adapter_dim = 64;

    LayerConfig layer() const {
        LayerConfig c;
        c.d_model = hidden_size, c.num_heads = num_heads, c.ffn_dim = intermediate_size;
        c.activation = Activation::GELU, c.pre_norm = false;
        c.dropout = hidden_dropout, c.attention_dropout = attention_dropout, c.activation_dropout = 0.0;
        c.ln_eps = layer_norm_eps, c.adapters = adapters, c.adapter_dim = adapter_dim;
        return c;
    }
};

/// word + token type + position embeddings, LayerNorm, dropout.
template <class T = float>
class BertEmbeddings : public Module<T> {
public:
    std::shared_ptr<Embedding<T>> word_embeddings, token_type_embeddings;
    std::shared_ptr<LearnedPositions<T>> position_embeddings;
    std::shared_ptr<LayerNorm<T>> LayerNorm_;  // registered as "LayerNorm" (HF's name)
    std::shared_ptr<Dropout<T>> dropout_module;

    BertEmbeddings(const BertConfig& c, Generator& gen) {
        const double s = c.initializer_range;
        word_embeddings = this->register_module(
            "word_embeddings", std::make_shared<Embedding<T>>(c.vocab_size, c.hidden_size, gen, c.pad_token_id, s));
        position_embeddings = this->register_module(
            "position_embeddings", std::make_shared<LearnedPositions<T>>(c.max_position_embeddings, c.hidden_size, gen, s));
        token_type_embeddings = this->register_module(
            "token_type_embeddings", std::make_shared<Embedding<T>>(c.type_vocab_size, c.hidden_size, gen, -1, s));
        LayerNorm_ = this->register_module("LayerNorm", std::make_shared<LayerNorm<T>>(c.hidden_size, c.layer_norm_eps));
        dropout_module = this->register_module("dropout_module", std::make_shared<Dropout<T>>(c.hidden_dropout, gen));
    }
    /// ids, token_type_ids: (B, T) int64 (token types undefined: all 0) -> (B, T, D)
    Tensor<T> forward(const Tensor<int64_t>& ids, const Tensor<int64_t>& token_type_ids = Tensor<int64_t>()) const {
        MOEKD_CHECK(ids.dim() == 2, "BertEmbeddings: input_ids must be (B, T), got ", ids.shape());
        MOEKD_CHECK(!token_type_ids.defined() || token_type_ids.shape() == ids.shape(), "BertEmbeddings: token_type_ids ",
                    token_type_ids.shape(), " must match input_ids ", ids.shape());
        const Tensor<int64_t> tt =
            token_type_ids.defined() ? token_type_ids : Tensor<int64_t>::zeros(ids.shape(), ids.device());
        Tensor<T> x = word_embeddings->forward(ids) + token_type_embeddings->forward(tt);
        x = x + position_embeddings->forward(ids.size(1));  // (T, D) broadcast over B
        Tensor<T> y = dropout_module->forward(LayerNorm_->forward(x));
        this->emit("output", y);
        return y;
    }
};

/// dense D -> D, GELU, LayerNorm (HF BertPredictionHeadTransform).
template <class T = float>
class BertPredictionHeadTransform : public Module<T> {
public:
    std::shared_ptr<Linear<T>> dense;
    std::shared_ptr<LayerNorm<T>> LayerNorm_;  // "LayerNorm"
    BertPredictionHeadTransform(const BertConfig& c, Generator& gen) {
        dense = this->register_module("dense", std::make_shared<Linear<T>>(c.hidden_size, c.hidden_size, gen));
        LayerNorm_ = this->register_module("LayerNorm", std::make_shared<LayerNorm<T>>(c.hidden_size, c.layer_norm_eps));
    }
    // x: (B, T, D) -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& x) const {
        Tensor<T> y = LayerNorm_->forward(gelu(dense->forward(x)));
        this->emit("output", y);
        return y;
    }
};

/// transform, then decoder (weight tied to the word embeddings, bias = this module's "bias").
template <class T = float>
class BertLMPredictionHead : public Module<T> {
public:
    std::shared_ptr<BertPredictionHeadTransform<T>> transform;
    Tensor<T> bias;  // (V)
    std::shared_ptr<Linear<T>> decoder;
    BertLMPredictionHead(const BertConfig& c, const Tensor<T>& word_embeddings, Generator& gen) {
        transform = this->register_module("transform", std::make_shared<BertPredictionHeadTransform<T>>(c, gen));
        bias = this->register_parameter("bias", Tensor<T>::zeros({c.vocab_size}));
        decoder = this->register_module("decoder", Linear<T>::tied(word_embeddings, bias));
    }
    // h: (B, T, D) -> (B, T, V)
    Tensor<T> forward(const Tensor<T>& h) const {
        Tensor<T> y = decoder->forward(transform->forward(h));
        this->emit("output", y);
        return y;
    }
};

template <class T = float>
class BertOnlyMLMHead : public Module<T> {
public:
    std::shared_ptr<BertLMPredictionHead<T>> predictions;
    BertOnlyMLMHead(const BertConfig& c, const Tensor<T>& word_embeddings, Generator& gen) {
        predictions = this->register_module("predictions", std::make_shared<BertLMPredictionHead<T>>(c, word_embeddings, gen));
    }
};

/// BERT with its masked-LM head. Names: embeddings.*, encoder.layers.N.*, cls.predictions.*.
template <class T = float>
class BertEncoder : public Module<T> {
public:
    std::shared_ptr<BertEmbeddings<T>> embeddings;
    std::shared_ptr<TransformerEncoder<T>> encoder;
    std::shared_ptr<BertOnlyMLMHead<T>> cls;

    BertEncoder(const BertConfig& c, Generator& gen, const FFNFactory<T>& ffn_factory = {}) : cfg_(c) {
        MOEKD_CHECK(c.vocab_size > 0 && c.type_vocab_size > 0 && c.max_position_embeddings > 0 && c.num_layers >= 0,
                    "BertEncoder: vocab_size ", c.vocab_size, ", type_vocab_size ", c.type_vocab_size,
                    ", max_position_embeddings ", c.max_position_embeddings, " must be positive");
        embeddings = this->register_module("embeddings", std::make_shared<BertEmbeddings<T>>(c, gen));
        encoder = this->register_module(
            "encoder", std::make_shared<TransformerEncoder<T>>(c.layer(), c.num_layers, gen, nullptr, ffn_factory));
        cls = this->register_module("cls", std::make_shared<BertOnlyMLMHead<T>>(c, embeddings->word_embeddings->weight, gen));
        init_linears_normal(*this, c.initializer_range, gen, embeddings->word_embeddings->weight);
    }
    /// ids, token_type_ids: (B, T) (token types undefined: all 0); padding_mask: (B, T) uint8,
    /// 1 = pad (note: HF's attention_mask is the opposite), or undefined.  -> {hidden (B, T, D),
    /// the FFNs' aux loss (undefined for a dense BERT)}
    AuxOutput<T> forward_with_aux(const Tensor<int64_t>& ids, const Tensor<int64_t>& token_type_ids = Tensor<int64_t>(),
                                  const Tensor<uint8_t>& padding_mask = Tensor<uint8_t>()) const {
        MOEKD_CHECK(ids.dim() == 2 && ids.size(1) <= cfg_.max_position_embeddings, "BertEncoder: input_ids ",
                    ids.shape(), " must be (B, T) with T <= max_position_embeddings = ", cfg_.max_position_embeddings);
        AuxOutput<T> out = encoder->forward_with_aux(embeddings->forward(ids, token_type_ids), padding_mask);
        this->emit("output", out.y);
        return out;
    }
    /// The same forward without the aux loss.  -> hidden (B, T, D)
    Tensor<T> forward(const Tensor<int64_t>& ids, const Tensor<int64_t>& token_type_ids = Tensor<int64_t>(),
                      const Tensor<uint8_t>& padding_mask = Tensor<uint8_t>()) const {
        return forward_with_aux(ids, token_type_ids, padding_mask).y;
    }
    /// hidden: (B, T, D) -> masked-LM logits (B, T, V)
    Tensor<T> mlm_logits(const Tensor<T>& hidden) const {
        Tensor<T> y = cls->predictions->forward(hidden);
        this->emit("mlm_logits", y);
        return y;
    }
    const BertConfig& config() const { return cfg_; }

private:
    BertConfig cfg_;
};

// ---- ViT ---------------------------------------------------------------------------------------
struct ViTConfig {
    int64_t image_size = 224, patch_size = 16, num_channels = 3;
    int64_t hidden_size = 768, num_layers = 12, num_heads = 12, intermediate_size = 3072, num_classes = 1000;
    double hidden_dropout = 0.0, attention_dropout = 0.0, layer_norm_eps = 1e-12, initializer_range = 0.02;
    bool adapters = false;
    int64_t adapter_dim = 64;

    int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
    LayerConfig layer() const {
        LayerConfig c;
        c.d_model = hidden_size, c.num_heads = num_heads, c.ffn_dim = intermediate_size;
        c.activation = Activation::GELU, c.pre_norm = true;
        c.dropout = hidden_dropout, c.attention_dropout = attention_dropout, c.activation_dropout = 0.0;
        c.ln_eps = layer_norm_eps, c.adapters = adapters, c.adapter_dim = adapter_dim;
        return c;
    }
};

/// Non-overlapping P x P patches, each flattened in (c, i, j) order and projected by a Linear:
/// the same map as HF's Conv2d(C, D, kernel = stride = P) with weight.view(D, C * P * P).
template <class T = float>
class PatchEmbedding : public Module<T> {
public:
    std::shared_ptr<Linear<T>> projection;  // (D, C * P * P)

    PatchEmbedding(int64_t image_size, int64_t patch_size, int64_t channels, int64_t dim, Generator& gen)
        : image_(image_size), patch_(patch_size), channels_(channels) {
        MOEKD_CHECK(patch_size > 0 && image_size > 0 && image_size % patch_size == 0 && channels > 0,
                    "PatchEmbedding: image_size ", image_size, " must be a positive multiple of patch_size ",
                    patch_size, " (channels ", channels, ")");
        projection = this->register_module("projection",
                                           std::make_shared<Linear<T>>(channels * patch_size * patch_size, dim, gen));
    }
    // images: (B, C, H, W) with H = W = image_size -> (B, N, D), N = (H / P) * (W / P), row-major patches
    Tensor<T> forward(const Tensor<T>& images) const {
        MOEKD_CHECK(images.dim() == 4 && images.size(1) == channels_ && images.size(2) == image_ && images.size(3) == image_,
                    "PatchEmbedding: images ", images.shape(), " must be (B, ", channels_, ", ", image_, ", ", image_, ")");
        const int64_t B = images.size(0), P = patch_, G = image_ / patch_;
        const Tensor<T> patches = images.reshape({B, channels_, G, P, G, P})
                                      .permute({0, 2, 4, 1, 3, 5})  // (B, G, G, C, P, P)
                                      .reshape({B, G * G, channels_ * P * P});
        Tensor<T> y = projection->forward(patches);
        this->emit("output", y);
        return y;
    }

private:
    int64_t image_, patch_, channels_;
};

/// [class token; patch embeddings] + learned positions, dropout.
template <class T = float>
class ViTEmbeddings : public Module<T> {
public:
    Tensor<T> cls_token;  // (1, 1, D)
    std::shared_ptr<PatchEmbedding<T>> patch_embeddings;
    std::shared_ptr<LearnedPositions<T>> position_embeddings;  // (N + 1, D)
    std::shared_ptr<Dropout<T>> dropout_module;

    ViTEmbeddings(const ViTConfig& c, Generator& gen) {
        const double s = c.initializer_range;
        cls_token = this->register_parameter("cls_token", Tensor<T>::randn({1, 1, c.hidden_size}, gen, 0.0, s));
        patch_embeddings = this->register_module(
            "patch_embeddings",
            std::make_shared<PatchEmbedding<T>>(c.image_size, c.patch_size, c.num_channels, c.hidden_size, gen));
        position_embeddings = this->register_module(
            "position_embeddings", std::make_shared<LearnedPositions<T>>(c.num_patches() + 1, c.hidden_size, gen, s));
        dropout_module = this->register_module("dropout_module", std::make_shared<Dropout<T>>(c.hidden_dropout, gen));
    }
    // images: (B, C, H, W) -> (B, N + 1, D)
    Tensor<T> forward(const Tensor<T>& images) const {
        const Tensor<T> p = patch_embeddings->forward(images);  // (B, N, D)
        const int64_t B = p.size(0), N = p.size(1), D = p.size(2);
        Tensor<T> x = concat(std::vector<Tensor<T>>{cls_token.expand({B, 1, D}), p}, 1);
        Tensor<T> y = dropout_module->forward(x + position_embeddings->forward(N + 1));
        this->emit("output", y);
        return y;
    }
};

/// ViT for image classification. Names: embeddings.*, encoder.layers.N.*, encoder.layer_norm,
/// classifier.
template <class T = float>
class ViT : public Module<T> {
public:
    std::shared_ptr<ViTEmbeddings<T>> embeddings;
    std::shared_ptr<TransformerEncoder<T>> encoder;  // pre-LN, with the final layer_norm
    std::shared_ptr<Linear<T>> classifier;

    ViT(const ViTConfig& c, Generator& gen, const FFNFactory<T>& ffn_factory = {}) : cfg_(c) {
        MOEKD_CHECK(c.num_classes > 0, "ViT: num_classes must be positive, got ", c.num_classes);
        embeddings = this->register_module("embeddings", std::make_shared<ViTEmbeddings<T>>(c, gen));
        encoder = this->register_module(
            "encoder", std::make_shared<TransformerEncoder<T>>(c.layer(), c.num_layers, gen, nullptr, ffn_factory));
        classifier = this->register_module("classifier", std::make_shared<Linear<T>>(c.hidden_size, c.num_classes, gen));
        init_linears_normal(*this, c.initializer_range, gen);
    }
    /// images: (B, C, H, W) -> {normalised token states (B, N + 1, D), token 0 the class token;
    /// the FFNs' aux loss (undefined for a dense ViT)}
    AuxOutput<T> features_with_aux(const Tensor<T>& images) const {
        return encoder->forward_with_aux(embeddings->forward(images));
    }
    /// images: (B, C, H, W) -> (B, N + 1, D)
    Tensor<T> features(const Tensor<T>& images) const { return features_with_aux(images).y; }
    /// images: (B, C, H, W) -> {logits (B, num_classes), from the class token; aux}
    AuxOutput<T> forward_with_aux(const Tensor<T>& images) const {
        AuxOutput<T> out = features_with_aux(images);
        out.y = classifier->forward(out.y.select(1, 0));
        this->emit("output", out.y);
        return out;
    }
    /// images: (B, C, H, W) -> logits (B, num_classes)
    Tensor<T> forward(const Tensor<T>& images) const { return forward_with_aux(images).y; }
    const ViTConfig& config() const { return cfg_; }

private:
    ViTConfig cfg_;
};

}  // namespace moekd::nn
