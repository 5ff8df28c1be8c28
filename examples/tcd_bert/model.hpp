// model.hpp — the models of the TCD example: a vanilla post-LN BERT (the teacher), the same BERT
// with every FFN an MoE layer (top-1, output p_i(x) * E_i(x), KL(uniform || mean router prob)
// balance loss weighted by lambda_B = 1000, dropless by default; the student), and the sequence classifier used for
// fine-tuning (BERT + HF's pooler on [CLS] + a linear head), optionally with Houlsby adapters.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <moekd/moe/moe_layer.hpp>
#include <moekd/nn/adapter.hpp>
#include <moekd/nn/models.hpp>

namespace tcdb {

using namespace moekd;

/// Sizes of the BERTs (teacher and student share them except the FFN).
struct ModelConfig {
    int64_t vocab = 4000, dim = 128, layers = 2, heads = 2, ffn_dim = 256, max_len = 128;
    int64_t experts = 64, top_k = 1;
    // Weight of the balance loss L_B = KL(uniform || mean router probability) (eq. 4-5, paper
    // lines 101-103; kl_uniform_balance_loss computes exactly that KL, same scale), summed over
    // the MoE layers (paper silent). "For all MoE BERT models, lambda_B was set to 1000" (line
    // 352). Until issue 17 the default was 0.01.
    double lambda_b = 1000.0;
    // Capacity per expert, ceil(tokens * factor / E) rows, the same in training, evaluation and
    // fine-tuning; 0 = dropless (no capacity, every token reaches its expert). Default 0, our own
    // choice: the paper names FastMoE (line 350) but no gate and no capacity (eq. 1-3). Until issue 17 the default was 2.0 everywhere (the comment then claimed "eval:
    // dropless", which the code was not).
    double capacity_factor = 0.0;
    // The router's bias b_r: "p(x) = softmax(W_r x + b_r)" (eq. 1, paper line 85). On since
    // 2026-12-07 (issue 17); before, the gate had no bias (fairseq's and Switch's router).
    bool router_bias = true;
    double dropout = 0.1;
    int64_t adapter_dim = 32;

    nn::BertConfig bert(bool adapters = false) const {
        nn::BertConfig c;
        c.vocab_size = vocab, c.hidden_size = dim, c.num_layers = layers, c.num_heads = heads;
        c.intermediate_size = ffn_dim, c.max_position_embeddings = max_len, c.type_vocab_size = 2;
        c.pad_token_id = 0, c.hidden_dropout = dropout, c.attention_dropout = dropout;
        c.adapters = adapters, c.adapter_dim = adapter_dim;
        return c;
    }
};

/// The MoE FFN factory: one top-k MoE layer with `experts` experts of width ffn_dim per layer.
inline nn::FFNFactory<float> moe_ffn(const ModelConfig& c) {
    return [c](int64_t layer, Generator& g) -> std::shared_ptr<nn::FFNBase<float>> {
        moe::MoEConfig m;
        m.d_model = c.dim, m.ffn_dim = c.ffn_dim, m.activation = nn::Activation::GELU;
        m.router.num_experts = c.experts, m.router.top_k = c.top_k, m.router.bias = c.router_bias;
        m.router.dropless = c.capacity_factor <= 0;  // 0: no capacity (our choice; the paper states none)
        if (!m.router.dropless) m.router.capacity_factor_train = c.capacity_factor, m.router.capacity_factor_eval = c.capacity_factor;
        m.balance = moe::BalanceLoss::KLUniform, m.balance_weight = c.lambda_b;
        m.name = "encoder.layers." + std::to_string(layer) + ".moe";
        return std::make_shared<moe::MoELayer<float>>(m, g);
    };
}

/// A BERT with its MLM head: vanilla (moe = false) or MoE in every FFN.
inline std::shared_ptr<nn::BertEncoder<float>> make_bert(const ModelConfig& c, bool moe, Generator& gen,
                                                        bool adapters = false) {
    return std::make_shared<nn::BertEncoder<float>>(c.bert(adapters), gen, moe ? moe_ffn(c) : nn::FFNFactory<float>{});
}

/// The MoE layers of a BERT (empty for a vanilla one), for the routing statistics the
/// pre-training log reports (last_stats(), router_probs hooks). The pad mask and the aux loss need
/// none of this: the layers pass the mask to their FFN and forward_with_aux returns the aux loss.
inline std::vector<moe::MoELayer<float>*> moe_layers(nn::BertEncoder<float>& m) {
    std::vector<moe::MoELayer<float>*> out;
    for (auto& l : *m.encoder->layers)
        if (auto* x = dynamic_cast<moe::MoELayer<float>*>(l->ffn.get())) out.push_back(x);
    return out;
}

/// The aux (balance) loss of a forward as a number (0 when undefined: a vanilla BERT).
inline double aux_value(const Tensor<float>& aux) { return aux.defined() ? double(aux.item()) : 0.0; }

/// BERT + pooler (dense D -> D, tanh, on the [CLS] state) + classifier (D -> labels; 1 for
/// regression). Parameter names: bert.*, pooler.dense.*, classifier.*.
class SequenceClassifier : public nn::Module<float> {
public:
    std::shared_ptr<nn::BertEncoder<float>> bert;
    std::shared_ptr<nn::Linear<float>> pooler, classifier;

    SequenceClassifier(std::shared_ptr<nn::BertEncoder<float>> b, int64_t num_labels, Generator& gen) {
        const int64_t D = b->config().hidden_size;
        bert = register_module("bert", std::move(b));
        pooler = register_module("pooler", std::make_shared<nn::Linear<float>>(D, D, gen));
        classifier = register_module("classifier", std::make_shared<nn::Linear<float>>(D, num_labels, gen));
        nn::init_linears_normal(*pooler, 0.02, gen);
        nn::init_linears_normal(*classifier, 0.02, gen);
    }
    /// ids, types: (B, T); pad: (B, T) 1 = pad or undefined -> {logits (B, num_labels), the MoE
    /// layers' aux loss (undefined for a vanilla BERT)}
    nn::AuxOutput<float> forward_with_aux(const Tensor<int64_t>& ids, const Tensor<int64_t>& types,
                                          const Tensor<uint8_t>& pad) {
        nn::AuxOutput<float> o = bert->forward_with_aux(ids, types, pad);  // (B, T, D)
        const Tensor<float> cls = o.y.select(1, 0);                         // (B, D)
        o.y = classifier->forward(tanh(pooler->forward(cls)));
        return o;
    }
    /// ids, types: (B, T); pad: (B, T) 1 = pad or undefined -> logits (B, num_labels)
    Tensor<float> forward(const Tensor<int64_t>& ids, const Tensor<int64_t>& types, const Tensor<uint8_t>& pad) {
        return forward_with_aux(ids, types, pad).y;
    }
};

/// A pre-trained BERT (state dict of the MLM model) as the encoder of a fresh classifier, with or
/// without adapters (adapters: built into the layers, initialised near identity; only adapters,
/// LayerNorms, pooler and classifier then train).
inline std::shared_ptr<SequenceClassifier> make_classifier(const ModelConfig& c, bool moe,
                                                           const nn::Module<float>::StateDict& pretrained,
                                                           int64_t num_labels, bool adapters, Generator& gen) {
    auto bert = make_bert(c, moe, gen, adapters);
    const nn::LoadReport rep = bert->load_state_dict(pretrained, false);
    MOEKD_CHECK(rep.unexpected.empty() && rep.mismatched.empty(), "fine-tuning: the pre-trained weights do not fit the ",
                "model built from the flags:\n", rep.str());
    for (const auto& m : rep.missing)
        MOEKD_CHECK(m.find("adapter") != std::string::npos, "fine-tuning: pre-trained weights lack '", m, "'");
    auto clf = std::make_shared<SequenceClassifier>(bert, num_labels, gen);
    if (adapters) nn::train_adapters_only(*clf, {"pooler", "classifier"});
    return clf;
}

}  // namespace tcdb
