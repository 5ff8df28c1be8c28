// model.hpp — the submodels of TSJT ("One-stop Training of Multiple Capacity Models"):
//
//   MoE model    nn::EncoderDecoder whose FFN in every other layer (layers 1, 3, ... 0-based) is a
//                moe::MoELayer (top-1, Switch balance loss x0.01), built through the FFN factory;
//                one joint vocabulary, shared source/target embeddings, tied output projection.
//   dense model  Shared architecture (SharedDense): the same width; its layers 0, 2, 4, ... (the
//                paper's odd layers, 1-based) ARE the MoE model's standard (non-MoE) layers — the
//                same objects, so the same parameter tensors — and its other layers are its own;
//                the embedding (and so the tied output projection) is the MoE model's too (our
//                choice: the paper, l.38, shares only the standard layers and says nothing of
//                the embeddings).
//                Indep architecture: a separate, smaller nn::EncoderDecoder ("device" model).
//
// SharedDense has nn::EncoderDecoder's module layout ("encoder.layers.N...", "decoder..."), so its
// state_dict loads strictly into a plain dense nn::EncoderDecoder: that is submodel extraction.
// Sub is the uniform handle the trainer and the decoders use for any of these models; its
// forward_with_aux returns the logits and the MoE layers' aux losses summed (encoder layers, then
// decoder layers), which the stacks return with their outputs.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <moekd/dist/expert_parallel.hpp>
#include <moekd/methods/tsjt.hpp>
#include <moekd/moe/moe_layer.hpp>
#include <moekd/nn/transformer.hpp>

namespace tsjt {

using namespace moekd;
using F = float;

/// Sizes of one submodel.
struct ModelConfig {
    int64_t vocab = 0;           // joint SentencePiece vocabulary
    int64_t pad = 0;             // padding id (SentencePiece pad, 0)
    int64_t d_model = 64, heads = 4, ffn_dim = 256;
    int64_t enc_layers = 2, dec_layers = 2;
    double dropout = 0.1;
    int64_t experts = 0;         // 0: dense; else an MoE layer in every `moe_every`-th layer
    int64_t moe_every = 2;
    double balance_weight = 0.01;
    double capacity_factor = 1.25;     // training capacity (Switch); tokens over it are dropped
    // Evaluation (eval mode: decoding, validation): dropless by default, so a sentence's
    // translation does not depend on the other sentences of its batch. false: capacity factor
    // eval_capacity_factor, as in training (GShard/Switch eval capacity).
    bool eval_dropless = true;
    double eval_capacity_factor = 2.0;
};

/// Whether layer i (0-based) of a model with this config has an MoE FFN.
inline bool is_moe_layer(int64_t i, const ModelConfig& c) {
    return c.experts > 0 && c.moe_every > 0 && i % c.moe_every == c.moe_every - 1;
}

inline nn::LayerConfig layer_config(const ModelConfig& c) {
    nn::LayerConfig l;
    l.d_model = c.d_model;
    l.num_heads = c.heads;
    l.ffn_dim = c.ffn_dim;
    l.dropout = c.dropout;
    return l;
}

inline nn::EncoderDecoderConfig ed_config(const ModelConfig& c) {
    MOEKD_CHECK(c.vocab > c.pad && c.pad >= 0, "tsjt: vocabulary size ", c.vocab, " and padding id ", c.pad, " do not fit");
    nn::EncoderDecoderConfig e;
    e.src_vocab = e.tgt_vocab = c.vocab;
    e.padding_idx = c.pad;
    e.share_embeddings = true;
    e.tie_output = true;
    e.layer = layer_config(c);
    e.encoder_layers = c.enc_layers;
    e.decoder_layers = c.dec_layers;
    return e;
}

/// The FFN factory that puts an MoE layer where is_moe_layer says (null = dense FeedForward).
/// With `ep` (expert parallelism) the MoE layers are dist::ExpertParallelMoE over it: this rank
/// keeps the router and its E / P experts, drawn as moe::MoELayer draws them (same names, same
/// weights for a seed).
inline nn::FFNFactory<F> moe_factory(const ModelConfig& c, const std::string& stack,
                                     std::shared_ptr<dist::Communicator> ep = nullptr) {
    if (c.experts <= 0) return {};
    return [c, stack, ep](int64_t i, Generator& gen) -> std::shared_ptr<nn::FFNBase<F>> {
        if (!is_moe_layer(i, c)) return nullptr;
        moe::MoEConfig m;
        m.d_model = c.d_model;
        m.ffn_dim = c.ffn_dim;
        m.router.num_experts = c.experts;
        m.router.top_k = 1;
        m.router.capacity_factor_train = c.capacity_factor;
        // dropless at eval without touching training: with factor E the capacity is
        // ceil(k * tokens * E / E) = k * tokens, and no expert can receive more than `tokens`
        // assignments (a token's k choices are distinct experts), so nothing is ever dropped.
        m.router.capacity_factor_eval = c.eval_dropless ? double(c.experts) : c.eval_capacity_factor;
        m.balance_weight = c.balance_weight;
        m.name = stack + ".layers." + std::to_string(i) + ".moe";
        if (ep) return std::make_shared<dist::ExpertParallelMoE<F>>(m, gen, ep);
        return std::make_shared<moe::MoELayer<F>>(m, gen);
    };
}

/// A fresh model (MoE or dense, by c.experts); `ep`: expert parallel over these ranks.
inline std::shared_ptr<nn::EncoderDecoder<F>> make_model(const ModelConfig& c, Generator& gen,
                                                         std::shared_ptr<dist::Communicator> ep = nullptr) {
    return std::make_shared<nn::EncoderDecoder<F>>(ed_config(c), gen, moe_factory(c, "encoder", ep),
                                                   moe_factory(c, "decoder", ep));
}

/// The shared-architecture dense model (moekd::tsjt::SharedDense: layer i is the MoE model's
/// layer i when i is even and that layer is a standard one), with this example's config.
class SharedDense : public moekd::tsjt::SharedDense<F> {
public:
    SharedDense(nn::EncoderDecoder<F>& moe_model, const ModelConfig& moe_cfg, int64_t enc_layers, int64_t dec_layers,
                Generator& gen)
        : moekd::tsjt::SharedDense<F>(moe_model, enc_layers, dec_layers, gen), cfg_(moe_cfg) {
        cfg_.enc_layers = enc_layers;
        cfg_.dec_layers = dec_layers;
        cfg_.experts = 0;
    }
    /// Whether dense layer i is the MoE model's layer i (the rule of moekd::tsjt::SharedDense).
    static bool shares(int64_t i, int64_t moe_depth, const ModelConfig& moe_cfg) {
        return i % 2 == 0 && i < moe_depth && !is_moe_layer(i, moe_cfg);
    }
    /// The config of the standalone dense nn::EncoderDecoder this model extracts to.
    const ModelConfig& config() const { return cfg_; }

private:
    ModelConfig cfg_;
};

/// Encoder output, its padding mask and the encoder's aux loss.
struct Encoded {
    Tensor<F> enc;           // (B, S, D)
    Tensor<uint8_t> mask;    // (B, S), 1 = pad, or undefined
    Tensor<F> aux;           // the encoder's MoE aux losses summed; undefined for a dense encoder
};

/// Uniform access to a submodel (nn::EncoderDecoder or SharedDense).
struct Sub {
    nn::Module<F>* module = nullptr;
    nn::TransformerEncoder<F>* encoder = nullptr;
    nn::TransformerDecoder<F>* decoder = nullptr;
    int64_t enc_moe = 0, dec_moe = 0;  // MoE layers in the encoder / decoder
    int64_t pad = 0;

    template <class M>
    static Sub of(M& m, int64_t pad) {
        Sub s;
        s.module = &m;
        s.encoder = m.encoder.get();
        s.decoder = m.decoder.get();
        s.pad = pad;
        for (auto& l : *m.encoder->layers) s.enc_moe += dynamic_cast<const moe::MoELayerBase<F>*>(l->ffn.get()) != nullptr;
        for (auto& l : *m.decoder->layers) s.dec_moe += dynamic_cast<const moe::MoELayerBase<F>*>(l->ffn.get()) != nullptr;
        return s;
    }
    /// src: (B, S) -> encoder states (the padding mask reaches the MoE layers through the layers)
    Encoded encode(const Tensor<int64_t>& src) const {
        Encoded e;
        e.mask = nn::padding_mask(src, pad);
        nn::AuxOutput<F> o = encoder->forward_tokens_with_aux(src);
        e.enc = std::move(o.y);
        e.aux = std::move(o.aux);
        return e;
    }
    /// prev: (B, T) decoder input -> {logits (B, T, V), aux: the encoder's then the decoder's
    /// layers' aux losses summed in order (undefined for a dense model)}
    nn::AuxOutput<F> decode_with_aux(const Tensor<int64_t>& prev, const Encoded& e) const {
        return decoder->forward_tokens_with_aux(prev, e.enc, e.mask, e.aux);
    }
    /// prev: (B, T) decoder input -> logits (B, T, V)
    Tensor<F> decode(const Tensor<int64_t>& prev, const Encoded& e) const { return decode_with_aux(prev, e).y; }
    /// Logits of the last position only (what decoding needs).  prev: (B, T) -> (B, V)
    Tensor<F> decode_last(const Tensor<int64_t>& prev, const Encoded& e) const {
        const Tensor<uint8_t> m = nn::padding_mask(prev, pad);
        const Tensor<F> h = decoder->forward(decoder->embed(prev), e.enc, m, e.mask);  // (B, T, D)
        return decoder->output_projection->forward(h.select(1, h.size(1) - 1));
    }
    /// src: (B, S), prev: (B, T) -> {logits (B, T, V), aux loss (undefined for a dense model)}
    nn::AuxOutput<F> forward_with_aux(const Tensor<int64_t>& src, const Tensor<int64_t>& prev) const {
        return decode_with_aux(prev, encode(src));
    }
    Tensor<F> forward(const Tensor<int64_t>& src, const Tensor<int64_t>& prev) const { return forward_with_aux(src, prev).y; }
    bool is_moe() const { return enc_moe + dec_moe > 0; }
    /// Where the submodel's weights are (decoding puts its inputs there).
    Device device() const { return module->device(); }
};

/// Both submodels under one module ("moe.", "dense."), for checkpoints.
class Composite : public nn::Module<F> {
public:
    Composite(std::shared_ptr<nn::Module<F>> a, std::shared_ptr<nn::Module<F>> b) {
        register_module("moe", std::move(a));
        register_module("dense", std::move(b));
    }
};

/// Parameters of several modules, each distinct tensor once (shared layers are counted once).
inline std::vector<Tensor<F>> unique_parameters(const std::vector<const nn::Module<F>*>& mods) {
    return moekd::tsjt::unique_parameters<F>(mods);
}
inline int64_t count_elements(const std::vector<Tensor<F>>& ps) { return moekd::tsjt::count_elements(ps); }

}  // namespace tsjt
