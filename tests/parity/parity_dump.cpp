// parity_dump.cpp — writes one safetensors file per nn layer for the PyTorch parity check
// (check_parity.py rebuilds each layer in torch and compares).
//
// Each case builds a layer with a fixed seed, moves every 1-D parameter (biases, LayerNorm
// weights) off its initial value so nothing is trivially 0 or 1, runs the forward in float32,
// projects the output on fixed random weights (L = sum(output * proj)) and runs backward. The file
// holds, all float32:
//   input.<name>         the inputs (token ids and masks too: small integers, exact in float32)
//   param.<dotted name>  every state-dict entry (tied parameters under each of their names)
//   output, proj         the forward output and the projection weights
//   grad.<dotted name>   dL/d(parameter), per name
//   grad_input.<name>    dL/d(input) for the floating inputs
// and metadata: "case", "kind" (which torch model to build) and "config" (a JSON object of sizes).
//
// usage: parity_dump <output dir>   (removes the *.safetensors already there first)
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <moekd/io/safetensors.hpp>
#include <moekd/nn.hpp>

using namespace moekd;
using nn::Activation;

namespace {

using Inputs = std::map<std::string, Tensor<float>>;

struct Case {
    std::string name, kind, config;                // config: a JSON object
    std::shared_ptr<nn::Module<float>> module;
    Inputs inputs;                                 // saved as input.<name>
    std::vector<std::string> grad_inputs;          // floating inputs whose gradient is saved
    std::function<Tensor<float>(const Inputs&)> run;
};

/// A tiny JSON object writer for the config metadata.
struct Json {
    std::ostringstream os;
    bool first = true;
    Json& kv(const std::string& k, const std::string& raw) {
        os << (first ? "{" : ", ") << '"' << k << "\": " << raw;
        first = false;
        return *this;
    }
    Json& num(const std::string& k, double v) {
        std::ostringstream s;
        s.precision(17);
        s << v;
        return kv(k, s.str());
    }
    Json& flag(const std::string& k, bool v) { return kv(k, v ? "true" : "false"); }
    Json& str(const std::string& k, const std::string& v) { return kv(k, '"' + v + '"'); }
    std::string done() { return os.str() + (first ? "{}" : "}"); }
};

Tensor<int64_t> as_ids(const Tensor<float>& t) {
    Tensor<int64_t> r = Tensor<int64_t>::empty(t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) r.data()[i] = static_cast<int64_t>(t.data()[i]);
    return r;
}
Tensor<uint8_t> as_mask(const Tensor<float>& t) {
    Tensor<uint8_t> r = Tensor<uint8_t>::empty(t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) r.data()[i] = t.data()[i] != 0.0f ? 1 : 0;
    return r;
}
Tensor<float> ids(std::vector<float> v, Shape s) { return Tensor<float>::from_vector(v, s); }

/// Moves every 1-D parameter off its init: biases and LayerNorm weights get N(0, 0.1^2) added.
void jiggle(nn::Module<float>& m, Generator& g) {
    NoGrad ng;
    for (auto& p : m.parameters())
        if (p.dim() == 1)
            for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] += static_cast<float>(0.1 * g.normal());
}

nn::LayerConfig layer_cfg(bool pre_norm, Activation act, bool adapters = false) {
    nn::LayerConfig c;
    c.d_model = 16, c.num_heads = 4, c.ffn_dim = 32, c.activation = act, c.pre_norm = pre_norm;
    c.dropout = c.attention_dropout = c.activation_dropout = 0.0;  // dropout masks cannot be reproduced in torch
    c.adapters = adapters, c.adapter_dim = 4;
    return c;
}
std::string layer_json(const nn::LayerConfig& c) {
    return Json()
        .num("d_model", double(c.d_model))
        .num("num_heads", double(c.num_heads))
        .num("ffn_dim", double(c.ffn_dim))
        .str("activation", nn::activation_name(c.activation))
        .flag("pre_norm", c.pre_norm)
        .num("ln_eps", c.ln_eps)
        .flag("adapters", c.adapters)
        .num("adapter_dim", double(c.adapter_dim))
        .str("adapter_activation", nn::activation_name(c.adapter_activation))
        .done();
}

std::vector<Case> make_cases(Generator& g) {
    std::vector<Case> cs;
    const auto kpm5 = ids({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 5});
    {
        auto m = std::make_shared<nn::Linear<float>>(5, 7, g);
        cs.push_back({"linear", "linear", Json().num("in", 5).num("out", 7).done(), m,
                      {{"x", Tensor<float>::randn({2, 3, 5}, g)}}, {"x"},
                      [m](const Inputs& in) { return m->forward(in.at("x")); }});
    }
    {
        auto m = std::make_shared<nn::Embedding<float>>(11, 6, g, 1);
        cs.push_back({"embedding_pad", "embedding", Json().num("num", 11).num("dim", 6).num("padding_idx", 1).done(), m,
                      {{"ids", ids({2, 3, 1, 10, 3, 4, 1, 1, 0, 5}, {2, 5})}}, {},
                      [m](const Inputs& in) { return m->forward(as_ids(in.at("ids"))); }});
    }
    {
        auto m = std::make_shared<nn::LayerNorm<float>>(8);
        cs.push_back({"layer_norm", "layer_norm", Json().num("dim", 8).num("eps", 1e-5).done(), m,
                      {{"x", Tensor<float>::randn({2, 3, 8}, g, 0.5, 2.0)}}, {"x"},
                      [m](const Inputs& in) { return m->forward(in.at("x")); }});
    }
    const std::string mha_json = Json().num("embed_dim", 16).num("num_heads", 4).done();
    {
        auto m = std::make_shared<nn::MultiHeadAttention<float>>(16, 4, g);
        cs.push_back({"mha_self_padding", "mha", mha_json, m, {{"x", Tensor<float>::randn({2, 5, 16}, g)}, {"key_padding_mask", kpm5}},
                      {"x"}, [m](const Inputs& in) {
                          return m->self_attention(in.at("x"), as_mask(in.at("key_padding_mask")));
                      }});
    }
    {
        auto m = std::make_shared<nn::MultiHeadAttention<float>>(16, 4, g);
        cs.push_back({"mha_causal", "mha", Json().num("embed_dim", 16).num("num_heads", 4).flag("causal", true).done(), m,
                      {{"x", Tensor<float>::randn({2, 5, 16}, g)}}, {"x"},
                      [m](const Inputs& in) { return m->self_attention(in.at("x"), {}, true); }});
    }
    {
        auto m = std::make_shared<nn::MultiHeadAttention<float>>(16, 4, g);
        cs.push_back({"mha_cross", "mha", mha_json, m,
                      {{"query", Tensor<float>::randn({2, 4, 16}, g)},
                       {"key", Tensor<float>::randn({2, 6, 16}, g)},
                       {"key_padding_mask", ids({0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1}, {2, 6})}},
                      {"query", "key"}, [m](const Inputs& in) {
                          return m->forward(in.at("query"), in.at("key"), in.at("key"), as_mask(in.at("key_padding_mask")));
                      }});
    }
    {
        auto m = std::make_shared<nn::FeedForward<float>>(16, 32, g, Activation::GELU);
        cs.push_back({"ffn_gelu", "ffn", Json().num("d_model", 16).num("ffn_dim", 32).str("activation", "gelu").done(), m,
                      {{"x", Tensor<float>::randn({2, 5, 16}, g)}}, {"x"},
                      [m](const Inputs& in) { return m->forward(in.at("x")); }});
    }
    auto encoder_case = [&](const char* name, nn::LayerConfig c) {
        auto m = std::make_shared<nn::TransformerEncoderLayer<float>>(c, g);
        cs.push_back({name, "encoder_layer", layer_json(c), m,
                      {{"x", Tensor<float>::randn({2, 5, 16}, g)}, {"key_padding_mask", kpm5}}, {"x"},
                      [m](const Inputs& in) { return m->forward(in.at("x"), as_mask(in.at("key_padding_mask"))); }});
    };
    encoder_case("encoder_layer_post_ln", layer_cfg(false, Activation::ReLU));
    encoder_case("encoder_layer_pre_ln", layer_cfg(true, Activation::GELU));
    encoder_case("encoder_layer_adapters", layer_cfg(false, Activation::GELU, true));
    {
        auto c = layer_cfg(false, Activation::ReLU);
        auto m = std::make_shared<nn::TransformerDecoderLayer<float>>(c, g);
        cs.push_back({"decoder_layer", "decoder_layer", layer_json(c), m,
                      {{"x", Tensor<float>::randn({2, 4, 16}, g)},
                       {"enc", Tensor<float>::randn({2, 6, 16}, g)},
                       {"self_padding_mask", ids({0, 0, 0, 0, 0, 0, 0, 1}, {2, 4})},
                       {"enc_padding_mask", ids({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 6})}},
                      {"x", "enc"}, [m](const Inputs& in) {
                          return m->forward(in.at("x"), in.at("enc"), as_mask(in.at("self_padding_mask")),
                                            as_mask(in.at("enc_padding_mask")));
                      }});
    }
    auto encdec_case = [&](const char* name, bool share, bool pre_norm) {
        nn::EncoderDecoderConfig c;
        c.src_vocab = 13, c.tgt_vocab = share ? 13 : 15, c.padding_idx = 1, c.share_embeddings = share;
        c.tie_output = true, c.layer = layer_cfg(pre_norm, Activation::ReLU), c.encoder_layers = 2, c.decoder_layers = 2;
        auto m = std::make_shared<nn::EncoderDecoder<float>>(c, g);
        const std::string j = Json()
                                  .num("src_vocab", double(c.src_vocab))
                                  .num("tgt_vocab", double(c.tgt_vocab))
                                  .num("padding_idx", double(c.padding_idx))
                                  .flag("share_embeddings", share)
                                  .num("encoder_layers", 2)
                                  .num("decoder_layers", 2)
                                  .kv("layer", layer_json(c.layer))
                                  .done();
        cs.push_back({name, "encoder_decoder", j, m,
                      {{"src", ids({4, 5, 6, 7, 8, 2, 9, 10, 11, 12, 2, 1}, {2, 6})},
                       {"prev", ids({2, 3, 4, 5, 6, 2, 7, 8, 1, 1}, {2, 5})}},
                      {}, [m](const Inputs& in) { return m->forward(as_ids(in.at("src")), as_ids(in.at("prev"))); }});
    };
    encdec_case("encoder_decoder_post_ln", false, false);
    encdec_case("encoder_decoder_shared_pre_ln", true, true);
    {
        nn::BertConfig c;
        c.vocab_size = 20, c.hidden_size = 16, c.num_layers = 2, c.num_heads = 4, c.intermediate_size = 32;
        c.max_position_embeddings = 12, c.type_vocab_size = 2, c.pad_token_id = 0;
        c.hidden_dropout = c.attention_dropout = 0.0;
        auto m = std::make_shared<nn::BertEncoder<float>>(c, g);
        const std::string j = Json()
                                  .num("vocab_size", 20).num("hidden_size", 16).num("num_layers", 2).num("num_heads", 4)
                                  .num("intermediate_size", 32).num("max_position_embeddings", 12)
                                  .num("type_vocab_size", 2).num("pad_token_id", 0).num("layer_norm_eps", c.layer_norm_eps)
                                  .done();
        cs.push_back({"bert_mlm", "bert", j, m,
                      {{"input_ids", ids({2, 7, 3, 19, 4, 5, 2, 8, 9, 3, 0, 0}, {2, 6})},
                       {"token_type_ids", ids({0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1}, {2, 6})},
                       {"padding_mask", ids({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 6})}},
                      {}, [m](const Inputs& in) {
                          return m->mlm_logits(m->forward(as_ids(in.at("input_ids")), as_ids(in.at("token_type_ids")),
                                                          as_mask(in.at("padding_mask"))));
                      }});
    }
    {
        nn::ViTConfig c;
        c.image_size = 8, c.patch_size = 4, c.num_channels = 3, c.hidden_size = 16, c.num_layers = 2, c.num_heads = 4;
        c.intermediate_size = 32, c.num_classes = 5, c.hidden_dropout = c.attention_dropout = 0.0;
        auto m = std::make_shared<nn::ViT<float>>(c, g);
        const std::string j = Json()
                                  .num("image_size", 8).num("patch_size", 4).num("num_channels", 3).num("hidden_size", 16)
                                  .num("num_layers", 2).num("num_heads", 4).num("intermediate_size", 32)
                                  .num("num_classes", 5).num("layer_norm_eps", c.layer_norm_eps)
                                  .done();
        cs.push_back({"vit", "vit", j, m, {{"images", Tensor<float>::randn({2, 3, 8, 8}, g)}}, {"images"},
                      [m](const Inputs& in) { return m->forward(in.at("images")); }});
    }
    {
        auto m = std::make_shared<nn::Adapter<float>>(16, 4, g, Activation::GELU, /*init_std=*/0.3);
        cs.push_back({"adapter", "adapter", Json().num("dim", 16).num("bottleneck", 4).str("activation", "gelu").done(), m,
                      {{"x", Tensor<float>::randn({2, 5, 16}, g)}}, {"x"},
                      [m](const Inputs& in) { return m->forward(in.at("x")); }});
    }
    return cs;
}

void dump(Case& c, Generator& g, const std::string& dir) {
    jiggle(*c.module, g);
    for (const auto& n : c.grad_inputs) c.inputs.at(n).requires_grad_();
    const Tensor<float> y = c.run(c.inputs);
    const Tensor<float> proj = Tensor<float>::randn(y.shape(), g);
    sum(y * proj).backward();

    std::map<std::string, Tensor<float>> out;
    for (auto& [n, t] : c.inputs) out["input." + n] = t.detach();
    for (auto& [n, t] : c.module->state_dict()) {
        out["param." + n] = t.detach();
        MOEKD_CHECK(t.grad().defined(), "parity_dump: ", c.name, ": parameter ", n, " got no gradient");
        out["grad." + n] = t.grad();
    }
    for (const auto& n : c.grad_inputs) out["grad_input." + n] = c.inputs.at(n).grad();
    out["output"] = y.detach();
    out["proj"] = proj;
    const std::string path = dir + "/" + c.name + ".safetensors";
    io::write_safetensors(path, out, {{"case", c.name}, {"kind", c.kind}, {"config", c.config}});
    std::cout << "wrote " << path << " (" << c.module->state_dict().size() << " parameters, output " << y.shape() << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: parity_dump <output dir>\n";
        return 2;
    }
    try {
        std::filesystem::create_directories(argv[1]);
        for (auto& f : std::filesystem::directory_iterator(argv[1]))  // no stale cases from older runs
            if (f.path().extension() == ".safetensors") std::filesystem::remove(f.path());
        Generator g(20240601);
        auto cases = make_cases(g);
        for (auto& c : cases) dump(c, g, argv[1]);
    } catch (const std::exception& e) {
        std::cerr << "parity_dump: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
