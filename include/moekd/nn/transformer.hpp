// transformer.hpp — Transformer layers and stacks with fairseq's structure and parameter names:
// FeedForward (fc1, fc2), TransformerEncoderLayer (self_attn, self_attn_layer_norm, ffn,
// final_layer_norm), TransformerDecoderLayer (+ encoder_attn, encoder_attn_layer_norm), the
// TransformerEncoder / TransformerDecoder stacks ("layers", a final "layer_norm" when pre-LN, and,
// when given a token table, fairseq's embed_tokens * sqrt(D) + sinusoidal embed_positions and the
// tied output_projection), and the EncoderDecoder translation model.
//
// Post-LN (fairseq default, BERT):  x = LN(x + drop(sublayer(x)))
// Pre-LN (ViT, pre-norm fairseq):   x = x + drop(sublayer(LN(x)))
// With LayerConfig::adapters, a Houlsby adapter sits on drop(sublayer(...)) before the residual add,
// after self-attention and after the FFN (not after a decoder's cross-attention, as Houlsby).
// Hooks of each layer: "attn_inner" / "ffn_inner" (the sublayer output, before dropout, adapter
// and residual add), "attn_trunk" / "ffn_trunk" (the LayerNorm output: the layer's normalised
// hidden state in post-LN, the sublayer input in pre-LN), decoder layers also
// "encoder_attn_inner" / "encoder_attn_trunk"; and "output".
//
// The FFN is a replaceable member: a layer takes any FFNBase (forward(x, pad) -> {y, aux}), e.g. an
// MoE layer, registered under the name it reports (module_name(): "ffn" for FeedForward); stacks
// take an FFNFactory that builds the FFN of layer i. Each layer hands its padding mask to its FFN
// (an MoE layer routes the real tokens only), and the auxiliary losses come back up, as fairseq's
// MoE layers return (x, l_aux) and its encoder / decoder carry l_aux: every forward_with_aux
// (layers, stacks, EncoderDecoder; BertEncoder and ViT in models.hpp) returns {y, aux}, aux the
// sum of the FFN aux losses in the order the layers ran (undefined when no FFN has one: a dense
// model). forward() is the same forward without the aux loss. No layer keeps per-forward state.
// Incremental decoding (nn/decode.hpp): a DecoderCache holds each decoder layer's self-attention
// keys/values and its cross-attention keys/values of the encoder output (computed once by
// TransformerDecoder::make_cache); TransformerDecoder::forward_step runs the layers on the newest
// token of each row only (eval mode, under NoGrad) and returns its next-token logits.
#pragma once

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "adapter.hpp"
#include "attention.hpp"
#include "layers.hpp"

namespace moekd::nn {

/// Sizes and options shared by every layer of a Transformer.
struct LayerConfig {
    int64_t d_model = 512;                   // D
    int64_t num_heads = 8;                   // H, divides D
    int64_t ffn_dim = 2048;                  // inner width of the FFN
    Activation activation = Activation::ReLU;
    bool pre_norm = false;                   // false: post-LN (fairseq default, BERT); true: pre-LN (ViT)
    double dropout = 0.1;                    // on each sublayer output and on the embeddings
    double attention_dropout = 0.0;          // on the attention probabilities
    double activation_dropout = 0.0;         // after the FFN nonlinearity
    double ln_eps = 1e-5;                    // LayerNorm eps (BERT / ViT: 1e-12)
    bool adapters = false;                   // Houlsby adapters after attention and FFN
    int64_t adapter_dim = 64;                // adapter bottleneck m
    Activation adapter_activation = Activation::GELU;
};

// ---- FFN ---------------------------------------------------------------------------------------
/// An output and the auxiliary loss that came with it. aux: a scalar with history on the output's
/// device (an MoE layer's weighted balance / z-loss; for a layer, stack or model the sum of its
/// FFNs'), or undefined when there is none (a dense FFN: no op, no tensor). Add it to the training
/// loss with add_aux(loss, out.aux).
template <class T>
struct AuxOutput {
    Tensor<T> y;
    Tensor<T> aux;
};
/// What an FFN returns: y like x, and its aux loss (undefined for a dense FFN).
template <class T>
using FFNOutput = AuxOutput<T>;

/// a + b where an undefined tensor counts as no term (so: b if a is undefined, a if b is, else
/// a + b). Sums aux losses in order without a zero tensor to start from.
template <class T>
Tensor<T> add_aux(const Tensor<T>& a, const Tensor<T>& b) {
    if (!a.defined()) return b;
    if (!b.defined()) return a;
    return a + b;
}

/// What a layer needs from its FFN. MoE layers derive from this.
template <class T = float>
class FFNBase : public Module<T> {
public:
    /// x: (B, T, D) or (N, D); pad: x's leading shape ((B, T) or (N)) uint8, 1 = pad, or
    /// undefined -> {y like x, aux}. An FFN may ignore pad (the dense one does: pad rows are
    /// computed and left to the residual).
    virtual FFNOutput<T> forward(const Tensor<T>& x, const Tensor<uint8_t>& pad) = 0;
    /// y alone, without a pad mask (the aux loss, if any, is dropped: train with forward(x, pad)).
    Tensor<T> forward(const Tensor<T>& x) { return forward(x, Tensor<uint8_t>()).y; }
    /// The name the layer registers this FFN under ("ffn"; an MoE layer may say "moe").
    virtual std::string module_name() const { return "ffn"; }
};

/// Builds the FFN of layer `layer` (0-based); null means the default FeedForward.
template <class T = float>
using FFNFactory = std::function<std::shared_ptr<FFNBase<T>>(int64_t layer, Generator& gen)>;

/// fc2(act_dropout(act(fc1(x)))).   fc1: D -> F, fc2: F -> D
template <class T = float>
class FeedForward : public FFNBase<T> {
public:
    std::shared_ptr<Linear<T>> fc1, fc2;
    std::shared_ptr<Dropout<T>> activation_dropout_module;

    FeedForward(int64_t d_model, int64_t ffn_dim, Generator& gen, Activation act = Activation::ReLU,
                double activation_dropout = 0.0)
        : act_(act) {
        fc1 = this->register_module("fc1", std::make_shared<Linear<T>>(d_model, ffn_dim, gen));
        fc2 = this->register_module("fc2", std::make_shared<Linear<T>>(ffn_dim, d_model, gen));
        activation_dropout_module =
            this->register_module("activation_dropout_module", std::make_shared<Dropout<T>>(activation_dropout, gen));
    }
    /// No aux loss; the pad mask is not needed (pad rows are computed like the others).
    FFNOutput<T> forward(const Tensor<T>& x, const Tensor<uint8_t>&) override { return {forward(x), Tensor<T>()}; }
    // x: (*, D) -> (*, D)
    Tensor<T> forward(const Tensor<T>& x) {
        MOEKD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == fc1->in_features(), "FeedForward(",
                    fc1->in_features(), " -> ", fc1->out_features(), " -> ", fc2->out_features(), "): input ",
                    x.defined() ? x.shape() : Shape{}, " must end in ", fc1->in_features());
        // ReLU fused into fc1's GEMM output (one pass less), unless a hook watches fc1: its
        // "output" must stay the pre-activation value
        Tensor<T> h = act_ == Activation::ReLU && !fc1->has_hooks() ? fc1->forward_relu(x)
                                                                    : activate(fc1->forward(x), act_);
        Tensor<T> y = fc2->forward(activation_dropout_module->forward(h));
        this->emit("output", y);
        return y;
    }
    Activation activation() const { return act_; }

private:
    Activation act_;
};

/// 1 where ids == padding_idx: (B, T) uint8 on the ids' device; undefined when nothing is padded
/// (as fairseq, which then skips the mask). Decided on a host copy of the ids.
inline Tensor<uint8_t> padding_mask(const Tensor<int64_t>& ids, int64_t padding_idx) {
    const Tensor<int64_t> ic = moekd::detail::contiguous_data(ids.to(Device::CPU));
    Tensor<uint8_t> m = Tensor<uint8_t>::empty(ids.shape());
    bool any = false;
    for (int64_t i = 0; i < m.numel(); ++i) any |= (m.data()[i] = ic.data()[i] == padding_idx ? 1 : 0) != 0;
    return any ? m.to(ids.device()) : Tensor<uint8_t>();
}

// ---- layers ------------------------------------------------------------------------------------
/// What encoder and decoder layers share: the residual block around a sublayer, the FFN, dropout.
template <class T = float>
class TransformerLayerBase : public Module<T> {
public:
    std::shared_ptr<FFNBase<T>> ffn;
    std::shared_ptr<Adapter<T>> self_attn_adapter, ffn_adapter;  // null unless cfg.adapters
    std::shared_ptr<Dropout<T>> dropout_module;

    const LayerConfig& config() const { return cfg_; }

protected:
    explicit TransformerLayerBase(const LayerConfig& cfg, const char* kind) : cfg_(cfg) {
        MOEKD_CHECK(cfg.d_model > 0 && cfg.ffn_dim > 0, kind, ": d_model ", cfg.d_model, " and ffn_dim ",
                    cfg.ffn_dim, " must be positive");
        MOEKD_CHECK(cfg.num_heads > 0 && cfg.d_model % cfg.num_heads == 0, kind, ": d_model ", cfg.d_model,
                    " is not divisible by num_heads ", cfg.num_heads);
    }
    void make_ffn(Generator& gen, std::shared_ptr<FFNBase<T>> given) {
        if (!given)
            given = std::make_shared<FeedForward<T>>(cfg_.d_model, cfg_.ffn_dim, gen, cfg_.activation,
                                                     cfg_.activation_dropout);
        ffn = this->register_module(given->module_name(), given);
    }
    void make_adapters_and_dropout(Generator& gen) {
        if (cfg_.adapters) {
            self_attn_adapter = this->register_module(
                "self_attn_adapter",
                std::make_shared<Adapter<T>>(cfg_.d_model, cfg_.adapter_dim, gen, cfg_.adapter_activation));
            ffn_adapter = this->register_module(
                "ffn_adapter", std::make_shared<Adapter<T>>(cfg_.d_model, cfg_.adapter_dim, gen, cfg_.adapter_activation));
        }
        dropout_module = this->register_module("dropout_module", std::make_shared<Dropout<T>>(cfg_.dropout, gen));
    }
    /// One residual block.   x: (B, T, D) -> (B, T, D)
    /// pre-LN: x + adapter(drop(f(norm(x)))); post-LN: norm(x + adapter(drop(f(x)))).
    template <class F>
    Tensor<T> residual_block(const Tensor<T>& x, const LayerNorm<T>& norm, const Adapter<T>* adapter, F&& f,
                             const char* inner_tag, const char* trunk_tag) const {
        Tensor<T> in = x;
        if (cfg_.pre_norm) {
            in = norm.forward(x);
            this->emit(trunk_tag, in);
        }
        Tensor<T> h = f(in);
        this->emit(inner_tag, h);
        h = dropout_module->forward(h);
        if (adapter) h = adapter->forward(h);
        Tensor<T> y = x + h;
        if (!cfg_.pre_norm) {
            y = norm.forward(y);
            this->emit(trunk_tag, y);
        }
        return y;
    }
    /// The FFN's residual block: the FFN gets the padding mask, its aux loss is stored in `aux`.
    Tensor<T> ffn_block(const Tensor<T>& h, const LayerNorm<T>& norm, const Tensor<uint8_t>& pad, Tensor<T>& aux) const {
        return residual_block(
            h, norm, ffn_adapter.get(),
            [&](const Tensor<T>& in) {
                FFNOutput<T> o = ffn->forward(in, pad);
                aux = std::move(o.aux);
                return std::move(o.y);
            },
            "ffn_inner", "ffn_trunk");
    }
    void check_x(const Tensor<T>& x, const char* kind, const char* what) const {
        MOEKD_CHECK(x.defined() && x.dim() == 3 && x.size(2) == cfg_.d_model, kind, "(d_model=", cfg_.d_model, "): ",
                    what, " ", x.defined() ? x.shape() : Shape{}, " must be (B, T, ", cfg_.d_model, ")");
    }

    LayerConfig cfg_;
};

/// fairseq TransformerEncoderLayer.
template <class T = float>
class TransformerEncoderLayer : public TransformerLayerBase<T> {
public:
    std::shared_ptr<MultiHeadAttention<T>> self_attn;
    std::shared_ptr<LayerNorm<T>> self_attn_layer_norm, final_layer_norm;

    /// ffn: the FFN to use (e.g. an MoE layer); null builds a FeedForward from cfg.
    TransformerEncoderLayer(const LayerConfig& cfg, Generator& gen, std::shared_ptr<FFNBase<T>> ffn = nullptr)
        : TransformerLayerBase<T>(cfg, "TransformerEncoderLayer") {
        self_attn = this->register_module(
            "self_attn", std::make_shared<MultiHeadAttention<T>>(cfg.d_model, cfg.num_heads, gen, cfg.attention_dropout));
        self_attn_layer_norm = this->register_module("self_attn_layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
        this->make_ffn(gen, std::move(ffn));
        final_layer_norm = this->register_module("final_layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
        this->make_adapters_and_dropout(gen);
    }
    /// x: (B, T, D); key_padding_mask: (B, T) uint8, 1 = pad, or undefined (also the FFN's pad
    /// mask) -> {(B, T, D), the FFN's aux loss}
    AuxOutput<T> forward_with_aux(const Tensor<T>& x, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>()) const {
        this->check_x(x, "TransformerEncoderLayer", "input");
        Tensor<T> h = this->residual_block(
            x, *self_attn_layer_norm, this->self_attn_adapter.get(),
            [&](const Tensor<T>& in) { return self_attn->self_attention(in, key_padding_mask); }, "attn_inner",
            "attn_trunk");
        Tensor<T> aux;
        h = this->ffn_block(h, *final_layer_norm, key_padding_mask, aux);
        this->emit("output", h);
        return {std::move(h), std::move(aux)};
    }
    // x: (B, T, D); key_padding_mask: (B, T) uint8, 1 = pad, or undefined -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& x, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>()) const {
        return forward_with_aux(x, key_padding_mask).y;
    }
};

/// fairseq TransformerDecoderLayer: causal self-attention, attention over the encoder output, FFN.
template <class T = float>
class TransformerDecoderLayer : public TransformerLayerBase<T> {
public:
    std::shared_ptr<MultiHeadAttention<T>> self_attn, encoder_attn;
    std::shared_ptr<LayerNorm<T>> self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm;

    TransformerDecoderLayer(const LayerConfig& cfg, Generator& gen, std::shared_ptr<FFNBase<T>> ffn = nullptr)
        : TransformerLayerBase<T>(cfg, "TransformerDecoderLayer") {
        self_attn = this->register_module(
            "self_attn", std::make_shared<MultiHeadAttention<T>>(cfg.d_model, cfg.num_heads, gen, cfg.attention_dropout));
        self_attn_layer_norm = this->register_module("self_attn_layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
        encoder_attn = this->register_module(
            "encoder_attn", std::make_shared<MultiHeadAttention<T>>(cfg.d_model, cfg.num_heads, gen, cfg.attention_dropout));
        encoder_attn_layer_norm =
            this->register_module("encoder_attn_layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
        this->make_ffn(gen, std::move(ffn));
        final_layer_norm = this->register_module("final_layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
        this->make_adapters_and_dropout(gen);
    }
    /// x: (B, T, D) target states; enc: (B, S, D) encoder output; self_padding_mask: (B, T) (also
    /// the FFN's pad mask) and enc_padding_mask: (B, S), 1 = pad, or undefined; causal: mask
    /// future targets.  -> {(B, T, D), the FFN's aux loss}
    AuxOutput<T> forward_with_aux(const Tensor<T>& x, const Tensor<T>& enc,
                                  const Tensor<uint8_t>& self_padding_mask = Tensor<uint8_t>(),
                                  const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>(), bool causal = true) const {
        this->check_x(x, "TransformerDecoderLayer", "input");
        this->check_x(enc, "TransformerDecoderLayer", "encoder output");
        MOEKD_CHECK(enc.size(0) == x.size(0), "TransformerDecoderLayer: input ", x.shape(), " and encoder output ",
                    enc.shape(), " have different batch sizes");
        Tensor<T> h = this->residual_block(
            x, *self_attn_layer_norm, this->self_attn_adapter.get(),
            [&](const Tensor<T>& in) { return self_attn->self_attention(in, self_padding_mask, causal); },
            "attn_inner", "attn_trunk");
        h = this->residual_block(
            h, *encoder_attn_layer_norm, nullptr,
            [&](const Tensor<T>& in) { return encoder_attn->forward(in, enc, enc, enc_padding_mask); },
            "encoder_attn_inner", "encoder_attn_trunk");
        Tensor<T> aux;
        h = this->ffn_block(h, *final_layer_norm, self_padding_mask, aux);
        this->emit("output", h);
        return {std::move(h), std::move(aux)};
    }
    /// The same forward without the aux loss.  -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& x, const Tensor<T>& enc,
                      const Tensor<uint8_t>& self_padding_mask = Tensor<uint8_t>(),
                      const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>(), bool causal = true) const {
        return forward_with_aux(x, enc, self_padding_mask, enc_padding_mask, causal).y;
    }
    /// One decoding step (inference): x: (B, 1, D) the newest position of each row; self_kv: this
    /// layer's self-attention cache (gets x's key/value), enc_kv: its cross-attention cache of
    /// the encoder output; pad: B host flags (1 = the new token is padding) or null, and the same
    /// as a (B, 1) mask on x's device for the FFN (undefined: none).  -> (B, 1, D), the last
    /// position of forward() on the whole prefix
    Tensor<T> forward_step(const Tensor<T>& x, AttentionCache<T>& self_kv, AttentionCache<T>& enc_kv,
                           const uint8_t* pad = nullptr, const Tensor<uint8_t>& ffn_pad = Tensor<uint8_t>()) const {
        this->check_x(x, "TransformerDecoderLayer::forward_step", "input");
        Tensor<T> h = this->residual_block(
            x, *self_attn_layer_norm, this->self_attn_adapter.get(),
            [&](const Tensor<T>& in) { return self_attn->forward_step(in, self_kv, pad); }, "attn_inner", "attn_trunk");
        h = this->residual_block(
            h, *encoder_attn_layer_norm, nullptr,
            [&](const Tensor<T>& in) { return encoder_attn->forward_cached(in, enc_kv); }, "encoder_attn_inner",
            "encoder_attn_trunk");
        Tensor<T> aux;
        h = this->ffn_block(h, *final_layer_norm, ffn_pad, aux);
        this->emit("output", h);
        return h;
    }
};

/// The incremental state of a TransformerDecoder: per layer, the self-attention keys/values of
/// the positions decoded so far and the cross-attention keys/values of the encoder output. Row b
/// of every cache is batch row b (reorder() moves, drops or repeats rows: beams).
template <class T = float>
struct DecoderCache {
    std::vector<AttentionCache<T>> self_kv, enc_kv;  // one per layer
    int64_t step = 0;                                // positions decoded (the next one's index)
    int64_t rows = 0;                                // batch rows
    std::vector<int64_t> real;                       // per row: non-padding tokens so far (positions)
    std::vector<std::vector<T>> position_rows;       // sinusoidal rows by position, computed once

    /// New row i = old row keep[i].
    void reorder(const std::vector<int64_t>& keep) {
        for (auto& c : self_kv) c.reorder(keep);
        for (auto& c : enc_kv) c.reorder(keep);
        std::vector<int64_t> r;
        for (int64_t k : keep) r.push_back(real[size_t(k)]);
        real = std::move(r);
        rows = int64_t(keep.size());
    }
};

// ---- stacks ------------------------------------------------------------------------------------
/// What both stacks share: fairseq's token embedding front end (when given a token table).
template <class T = float>
class StackBase : public Module<T> {
public:
    std::shared_ptr<Embedding<T>> embed_tokens;             // null for a pure stack
    std::shared_ptr<SinusoidalPositions<T>> embed_positions;  // with embed_tokens
    std::shared_ptr<Dropout<T>> dropout_module;              // with embed_tokens
    std::shared_ptr<LayerNorm<T>> layer_norm;                // final norm, pre-LN only (as fairseq)

    /// embed_scale * embed_tokens(ids) + embed_positions(ids), then dropout.
    /// ids: (B, T) -> (B, T, D)
    Tensor<T> embed(const Tensor<int64_t>& ids) const {
        MOEKD_CHECK(embed_tokens, "embed: this stack was built without a token embedding");
        MOEKD_CHECK(ids.dim() == 2, "embed: token ids must be (B, T), got ", ids.shape());
        const T scale = static_cast<T>(std::sqrt(static_cast<double>(embed_tokens->dim())));
        return dropout_module->forward(embed_tokens->forward(ids) * scale + embed_positions->forward(ids));
    }
    int64_t padding_idx() const { return embed_tokens ? embed_tokens->padding_idx() : -1; }

protected:
    void make_front(const LayerConfig& cfg, Generator& gen, std::shared_ptr<Embedding<T>> tokens, const char* kind) {
        if (!tokens) return;
        MOEKD_CHECK(tokens->dim() == cfg.d_model, kind, ": embed_tokens has dim ", tokens->dim(), " but d_model is ",
                    cfg.d_model);
        embed_tokens = this->register_module("embed_tokens", tokens);
        embed_positions = this->register_module(
            "embed_positions", std::make_shared<SinusoidalPositions<T>>(cfg.d_model, tokens->padding_idx()));
        dropout_module = this->register_module("dropout_module", std::make_shared<Dropout<T>>(cfg.dropout, gen));
    }
    void make_final_norm(const LayerConfig& cfg) {
        if (cfg.pre_norm) layer_norm = this->register_module("layer_norm", std::make_shared<LayerNorm<T>>(cfg.d_model, cfg.ln_eps));
    }
    template <class L>
    static std::shared_ptr<L> make_layer(const LayerConfig& cfg, Generator& gen, const FFNFactory<T>& f, int64_t i) {
        return std::make_shared<L>(cfg, gen, f ? f(i, gen) : nullptr);
    }
};

/// fairseq TransformerEncoder: (embed_tokens, embed_positions,) layers, layer_norm (pre-LN).
template <class T = float>
class TransformerEncoder : public StackBase<T> {
public:
    std::shared_ptr<ModuleList<TransformerEncoderLayer<T>, T>> layers;

    TransformerEncoder(const LayerConfig& cfg, int64_t num_layers, Generator& gen,
                       std::shared_ptr<Embedding<T>> embed_tokens = nullptr, const FFNFactory<T>& ffn_factory = {}) {
        MOEKD_CHECK(num_layers >= 0, "TransformerEncoder: num_layers must be >= 0, got ", num_layers);
        this->make_front(cfg, gen, std::move(embed_tokens), "TransformerEncoder");
        layers = this->register_module("layers", std::make_shared<ModuleList<TransformerEncoderLayer<T>, T>>());
        for (int64_t i = 0; i < num_layers; ++i)
            layers->push_back(this->template make_layer<TransformerEncoderLayer<T>>(cfg, gen, ffn_factory, i));
        this->make_final_norm(cfg);
    }
    /// x: (B, T, D); key_padding_mask: (B, T) or undefined -> {(B, T, D), the layers' aux losses
    /// summed in layer order (undefined if none has one)}
    AuxOutput<T> forward_with_aux(const Tensor<T>& x, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>()) const {
        Tensor<T> h = x, aux;
        for (auto& l : *layers) {
            AuxOutput<T> o = l->forward_with_aux(h, key_padding_mask);
            h = std::move(o.y);
            aux = add_aux(aux, o.aux);
        }
        if (this->layer_norm) h = this->layer_norm->forward(h);
        this->emit("output", h);
        return {std::move(h), std::move(aux)};
    }
    // x: (B, T, D); key_padding_mask: (B, T) or undefined -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& x, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>()) const {
        return forward_with_aux(x, key_padding_mask).y;
    }
    /// From source tokens, as fairseq: embed, zero the padded positions, run the layers with
    /// the padding mask.  src: (B, S) -> {(B, S, D), aux}
    AuxOutput<T> forward_tokens_with_aux(const Tensor<int64_t>& src) const {
        Tensor<T> x = this->embed(src);
        const Tensor<uint8_t> mask = padding_mask(src, this->padding_idx());
        if (mask.defined()) x = masked_fill(x, mask.unsqueeze(-1), T(0));
        return forward_with_aux(x, mask);
    }
    /// src: (B, S) -> (B, S, D)
    Tensor<T> forward_tokens(const Tensor<int64_t>& src) const { return forward_tokens_with_aux(src).y; }
};

/// fairseq TransformerDecoder: (embed_tokens, embed_positions,) layers, layer_norm (pre-LN),
/// output_projection (tied to embed_tokens, or its own (V, D) weight, no bias).
template <class T = float>
class TransformerDecoder : public StackBase<T> {
public:
    std::shared_ptr<ModuleList<TransformerDecoderLayer<T>, T>> layers;
    std::shared_ptr<Linear<T>> output_projection;  // with embed_tokens

    TransformerDecoder(const LayerConfig& cfg, int64_t num_layers, Generator& gen,
                       std::shared_ptr<Embedding<T>> embed_tokens = nullptr, bool tie_output = true,
                       const FFNFactory<T>& ffn_factory = {}) {
        MOEKD_CHECK(num_layers >= 0, "TransformerDecoder: num_layers must be >= 0, got ", num_layers);
        this->make_front(cfg, gen, std::move(embed_tokens), "TransformerDecoder");
        layers = this->register_module("layers", std::make_shared<ModuleList<TransformerDecoderLayer<T>, T>>());
        for (int64_t i = 0; i < num_layers; ++i)
            layers->push_back(this->template make_layer<TransformerDecoderLayer<T>>(cfg, gen, ffn_factory, i));
        this->make_final_norm(cfg);
        if (this->embed_tokens) {
            if (tie_output) {
                output_projection = this->register_module("output_projection", Linear<T>::tied(this->embed_tokens->weight));
            } else {
                output_projection = this->register_module(
                    "output_projection", std::make_shared<Linear<T>>(cfg.d_model, this->embed_tokens->num_embeddings(), gen, false));
                NoGrad ng;  // fairseq: N(0, D^-0.5)
                moekd::detail::copy_into(output_projection->weight,
                                         Tensor<T>::randn(output_projection->weight.shape(), gen, 0.0,
                                                          1.0 / std::sqrt(static_cast<double>(cfg.d_model))));
            }
        }
    }
    /// x: (B, T, D); enc: (B, S, D); masks (B, T) / (B, S) or undefined -> {(B, T, D), aux}.
    /// aux: `aux` (e.g. the encoder's: fairseq's decoder extends the encoder's l_aux likewise;
    /// undefined: none) plus the layers' aux losses, added in layer order.
    AuxOutput<T> forward_with_aux(const Tensor<T>& x, const Tensor<T>& enc,
                                  const Tensor<uint8_t>& self_padding_mask = Tensor<uint8_t>(),
                                  const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>(),
                                  const Tensor<T>& aux = Tensor<T>()) const {
        Tensor<T> h = x, sum = aux;
        for (auto& l : *layers) {
            AuxOutput<T> o = l->forward_with_aux(h, enc, self_padding_mask, enc_padding_mask, true);
            h = std::move(o.y);
            sum = add_aux(sum, o.aux);
        }
        if (this->layer_norm) h = this->layer_norm->forward(h);
        this->emit("output", h);
        return {std::move(h), std::move(sum)};
    }
    /// x: (B, T, D); enc: (B, S, D); masks (B, T) / (B, S) or undefined -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& x, const Tensor<T>& enc, const Tensor<uint8_t>& self_padding_mask = Tensor<uint8_t>(),
                      const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>()) const {
        return forward_with_aux(x, enc, self_padding_mask, enc_padding_mask).y;
    }
    /// Next-token logits from the shifted target tokens.
    /// prev: (B, T); enc: (B, S, D); enc_padding_mask: (B, S) or undefined; aux: as in
    /// forward_with_aux -> {(B, T, V), aux}
    AuxOutput<T> forward_tokens_with_aux(const Tensor<int64_t>& prev, const Tensor<T>& enc,
                                         const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>(),
                                         const Tensor<T>& aux = Tensor<T>()) const {
        AuxOutput<T> o =
            forward_with_aux(this->embed(prev), enc, padding_mask(prev, this->padding_idx()), enc_padding_mask, aux);
        o.y = output_projection->forward(o.y);
        return o;
    }
    /// prev: (B, T); enc: (B, S, D); enc_padding_mask: (B, S) or undefined -> (B, T, V)
    Tensor<T> forward_tokens(const Tensor<int64_t>& prev, const Tensor<T>& enc,
                             const Tensor<uint8_t>& enc_padding_mask = Tensor<uint8_t>()) const {
        return forward_tokens_with_aux(prev, enc, enc_padding_mask).y;
    }

    // ---- incremental decoding (eval mode, under NoGrad) ----
    /// The state for decoding B = enc.size(0) rows: every layer's cross-attention keys/values of
    /// enc (B, S, D) (enc_padding_mask (B, S) or undefined), and self-attention caches sized for
    /// `capacity` positions (they grow past it).
    DecoderCache<T> make_cache(const Tensor<T>& enc, const Tensor<uint8_t>& enc_padding_mask, int64_t capacity) const {
        MOEKD_CHECK(enc.defined() && enc.dim() == 3, "TransformerDecoder::make_cache: encoder output ",
                    enc.defined() ? enc.shape() : Shape{}, " must be (B, S, D)");
        DecoderCache<T> c;
        c.rows = enc.size(0);
        c.real.assign(static_cast<size_t>(c.rows), 0);
        for (auto& l : *layers) {
            c.self_kv.push_back(l->self_attn->empty_cache(c.rows, capacity, enc.device()));
            c.enc_kv.push_back(l->encoder_attn->cache_kv(enc, enc_padding_mask));
        }
        return c;
    }
    /// One step: ids (B, 1), each row's newest token -> next-token logits (B, V): the last
    /// position of forward_tokens on the row's whole prefix (a padding token is treated as there:
    /// zero position, its key masked, no FFN routing). Appends the step to the cache.
    Tensor<T> forward_step(const Tensor<int64_t>& ids, DecoderCache<T>& cache) const {
        MOEKD_CHECK(this->embed_tokens, "TransformerDecoder::forward_step: this decoder has no token embedding");
        MOEKD_CHECK(ids.dim() == 2 && ids.size(1) == 1 && ids.size(0) == cache.rows &&
                        cache.self_kv.size() == layers->size(),
                    "TransformerDecoder::forward_step: ids ", ids.shape(), " must be (B, 1) for a cache of ",
                    cache.rows, " rows and ", cache.self_kv.size(), " layers (the decoder has ", layers->size(), ")");
        const int64_t B = ids.size(0), D = this->embed_tokens->dim(), pad = this->padding_idx();
        const Tensor<int64_t> host = moekd::detail::contiguous_data(ids.to(Device::CPU));
        // fairseq's positions, as SinusoidalPositions: a row's k-th real token sits at padding_idx
        // + k, a padding token gets the (zero) padding_idx row
        std::vector<uint8_t> is_pad(static_cast<size_t>(B));
        bool any_pad = false;
        Tensor<T> pos = Tensor<T>::empty({B, 1, D});
        for (int64_t b = 0; b < B; ++b) {
            any_pad |= (is_pad[size_t(b)] = host.data()[b] == pad ? 1 : 0) != 0;
            const int64_t p = is_pad[size_t(b)] ? 0 : ++cache.real[size_t(b)];
            if (int64_t(cache.position_rows.size()) <= p) cache.position_rows.resize(size_t(p + 1));
            std::vector<T>& row = cache.position_rows[size_t(p)];
            if (row.empty()) row.resize(size_t(D)), this->embed_positions->row(p == 0 ? pad : pad + p, row.data());
            std::copy(row.begin(), row.end(), pos.data() + b * D);
        }
        Tensor<uint8_t> ffn_pad;
        if (any_pad) ffn_pad = Tensor<uint8_t>::from_vector(is_pad, Shape{B, 1}).to(ids.device());
        const T scale = static_cast<T>(std::sqrt(static_cast<double>(D)));
        Tensor<T> h = this->dropout_module->forward(this->embed_tokens->forward(ids) * scale + pos.to(ids.device()));
        for (size_t i = 0; i < layers->size(); ++i)
            h = layers->ptr(i)->forward_step(h, cache.self_kv[i], cache.enc_kv[i], any_pad ? is_pad.data() : nullptr, ffn_pad);
        if (this->layer_norm) h = this->layer_norm->forward(h);
        ++cache.step;
        return output_projection->forward(h.reshape({B, D}));
    }
};

// ---- the translation model ---------------------------------------------------------------------
struct EncoderDecoderConfig {
    int64_t src_vocab = 0, tgt_vocab = 0;
    int64_t padding_idx = 1;        // fairseq's <pad>
    bool share_embeddings = false;  // one table for source and target (equal vocabularies)
    bool tie_output = true;         // output projection = target embedding
    LayerConfig layer;
    int64_t encoder_layers = 6, decoder_layers = 6;
};

/// fairseq's TransformerModel: "encoder" and "decoder" stacks with token embeddings (N(0, D^-0.5),
/// pad row zero), sinusoidal positions, embedding scale sqrt(D).
template <class T = float>
class EncoderDecoder : public Module<T> {
public:
    std::shared_ptr<TransformerEncoder<T>> encoder;
    std::shared_ptr<TransformerDecoder<T>> decoder;

    EncoderDecoder(const EncoderDecoderConfig& cfg, Generator& gen, const FFNFactory<T>& encoder_ffn = {},
                   const FFNFactory<T>& decoder_ffn = {})
        : cfg_(cfg) {
        MOEKD_CHECK(cfg.src_vocab > 0 && cfg.tgt_vocab > 0, "EncoderDecoder: vocabulary sizes must be positive, got ",
                    cfg.src_vocab, " and ", cfg.tgt_vocab);
        MOEKD_CHECK(!cfg.share_embeddings || cfg.src_vocab == cfg.tgt_vocab, "EncoderDecoder: share_embeddings needs ",
                    "equal vocabularies, got ", cfg.src_vocab, " and ", cfg.tgt_vocab);
        const int64_t D = cfg.layer.d_model;
        const double std = 1.0 / std::sqrt(static_cast<double>(D));
        auto src = std::make_shared<Embedding<T>>(cfg.src_vocab, D, gen, cfg.padding_idx, std);
        auto tgt = cfg.share_embeddings ? src : std::make_shared<Embedding<T>>(cfg.tgt_vocab, D, gen, cfg.padding_idx, std);
        encoder = this->register_module(
            "encoder", std::make_shared<TransformerEncoder<T>>(cfg.layer, cfg.encoder_layers, gen, src, encoder_ffn));
        decoder = this->register_module("decoder", std::make_shared<TransformerDecoder<T>>(
                                                       cfg.layer, cfg.decoder_layers, gen, tgt, cfg.tie_output, decoder_ffn));
    }
    /// src: (B, S) source tokens; prev: (B, T) target tokens shifted right -> {logits (B, T, V),
    /// aux: the encoder's then the decoder's FFN aux losses summed in layer order (undefined for a
    /// dense model)}
    AuxOutput<T> forward_with_aux(const Tensor<int64_t>& src, const Tensor<int64_t>& prev) const {
        MOEKD_CHECK(src.dim() == 2 && prev.dim() == 2 && src.size(0) == prev.size(0), "EncoderDecoder: src ",
                    src.shape(), " and prev ", prev.shape(), " must be (B, S) and (B, T) with the same B");
        const AuxOutput<T> enc = encoder->forward_tokens_with_aux(src);
        AuxOutput<T> out = decoder->forward_tokens_with_aux(prev, enc.y, padding_mask(src, cfg_.padding_idx), enc.aux);
        this->emit("output", out.y);
        return out;
    }
    /// src: (B, S); prev: (B, T) -> logits (B, T, V)
    Tensor<T> forward(const Tensor<int64_t>& src, const Tensor<int64_t>& prev) const {
        return forward_with_aux(src, prev).y;
    }
    const EncoderDecoderConfig& config() const { return cfg_; }

private:
    EncoderDecoderConfig cfg_;
};

}  // namespace moekd::nn
