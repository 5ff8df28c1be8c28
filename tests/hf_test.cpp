// hf_test.cpp — io/hf.hpp without Python: moekd -> HF layout -> moekd round trips of BERT and
// ViT (names, shapes, config.json fields, identical logits) and every bad input giving a clear
// moekd::Error (missing files, fields moekd cannot represent, missing / unexpected / mis-shaped /
// untied tensors, MoE and adapter models). tests/hf_interop checks the same layout against the
// real transformers package.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <unistd.h>

#include <moekd/io/hf.hpp>
#include "hf_perturb.hpp"
#include <moekd/moe/moe_layer.hpp>

using namespace moekd;
namespace fs = std::filesystem;

namespace {

/// The folders this process made, removed when it exits.
struct TempDirs {
    std::vector<fs::path> made;
    ~TempDirs() {
        std::error_code ec;
        for (const auto& p : made) fs::remove_all(p, ec);
    }
};

std::string fresh_dir(const std::string& name) {
    static TempDirs dirs;
    // per process: two builds running this test at once do not share folders
    const fs::path p = fs::temp_directory_path() / ("moekd_hf_test_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(p);
    dirs.made.push_back(p);
    return p.string();
}

using moekd::testing::perturb;

nn::BertConfig small_bert() {
    nn::BertConfig c;
    c.vocab_size = 40, c.hidden_size = 16, c.num_layers = 2, c.num_heads = 2, c.intermediate_size = 24;
    c.max_position_embeddings = 12, c.type_vocab_size = 3, c.pad_token_id = 1, c.layer_norm_eps = 1e-6;
    c.hidden_dropout = 0.05, c.attention_dropout = 0.15;
    return c;
}

nn::ViTConfig small_vit() {
    nn::ViTConfig c;
    c.image_size = 8, c.patch_size = 4, c.num_channels = 3, c.hidden_size = 16, c.num_layers = 2, c.num_heads = 4;
    c.intermediate_size = 20, c.num_classes = 5, c.layer_norm_eps = 1e-6;
    return c;
}

Tensor<float> bert_logits(nn::BertEncoder<float>& m) {
    m.eval();
    const Tensor<int64_t> ids = Tensor<int64_t>::from_vector({2, 5, 7, 1, 39, 0, 3, 3, 8, 1}, {2, 5});
    const Tensor<int64_t> tt = Tensor<int64_t>::from_vector({0, 0, 1, 1, 2, 0, 1, 2, 0, 0}, {2, 5});
    return m.mlm_logits(m.forward(ids, tt));
}

Tensor<float> vit_logits(nn::ViT<float>& m) {
    m.eval();
    Generator g(9);
    return m.forward(Tensor<float>::randn({2, 3, 8, 8}, g));
}

/// Rewrites dir/model.safetensors through `edit` (HF names -> float tensors).
template <class F>
void edit_weights(const std::string& dir, F&& edit) {
    auto t = io::load_safetensors<float>(dir + "/model.safetensors");
    edit(t);
    io::write_safetensors(dir + "/model.safetensors", t, {{"format", "pt"}});
}

/// Rewrites dir/config.json with `key` set to the JSON text `value` ("" removes it).
void edit_config(const std::string& dir, const std::string& key, const std::string& value) {
    json::Value v = json::parse(io::read_file(dir + "/config.json"));
    if (value.empty()) v.erase(key);
    else v[key] = json::parse(value);  // in place when present, else at the end
    io::write_text_atomic(dir + "/config.json", json::dump(v));
}

std::string saved_bert(const std::string& name, nn::BertEncoder<float>** keep = nullptr) {
    static std::vector<std::shared_ptr<nn::BertEncoder<float>>> models;
    Generator gen(3);
    auto m = std::make_shared<nn::BertEncoder<float>>(small_bert(), gen);
    perturb(*m, 4);
    const std::string dir = fresh_dir(name);
    io::save_hf_bert(dir, *m);
    models.push_back(m);
    if (keep) *keep = m.get();
    return dir;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("save_hf_bert writes the names and shapes and config of transformers and load_hf_bert reads them back", "[hf]") {
    nn::BertEncoder<float>* m = nullptr;
    const std::string dir = saved_bert("bert_roundtrip", &m);
    std::map<std::string, std::string> meta;
    const auto file = io::load_safetensors<float>(dir + "/model.safetensors", &meta);
    CHECK(meta == std::map<std::string, std::string>{{"format", "pt"}});
    std::set<std::string> names;
    for (auto& [n, t] : file) names.insert(n);
    std::set<std::string> want = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                                  "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                                  "bert.embeddings.LayerNorm.bias", "cls.predictions.bias",
                                  "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                                  "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"};
    for (int l = 0; l < 2; ++l)
        for (const char* s : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                              "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"})
            for (const char* leaf : {"weight", "bias"})
                want.insert("bert.encoder.layer." + std::to_string(l) + "." + s + "." + leaf);
    CHECK(names == want);  // the tied decoder weight and bias are left out, as save_pretrained does
    CHECK(file.at("bert.encoder.layer.1.intermediate.dense.weight").shape() == Shape{24, 16});
    CHECK(file.at("bert.encoder.layer.1.intermediate.dense.weight").to_vector() ==
          m->encoder->layers->ptr(1)->ffn->state_dict().at("fc1.weight").to_vector());

    const json::Value cfg = json::parse(io::read_file(dir + "/config.json"));
    CHECK(cfg.at("model_type") == "bert");
    CHECK(cfg.at("architectures") == json::Value::array({"BertForMaskedLM"}));
    CHECK(cfg.at("hidden_act") == "gelu");
    CHECK(cfg.at("num_hidden_layers").get<int64_t>() == 2);
    CHECK(cfg.at("type_vocab_size").get<int64_t>() == 3);
    CHECK(cfg.at("pad_token_id").get<int64_t>() == 1);
    CHECK(cfg.at("layer_norm_eps").get<double>() == 1e-6);
    CHECK(cfg.at("attention_probs_dropout_prob").get<double>() == 0.15);

    io::HFLoadReport rep;
    auto back = io::load_hf_bert(dir, {}, &rep);
    CHECK(rep.loaded.size() == want.size());
    CHECK(rep.skipped.empty());
    const nn::BertConfig& c = back->config();
    CHECK(c.vocab_size == 40);
    CHECK(c.num_heads == 2);
    CHECK(c.intermediate_size == 24);
    CHECK(c.max_position_embeddings == 12);
    CHECK(c.pad_token_id == 1);
    CHECK(c.hidden_dropout == 0.05);
    CHECK(back->cls->predictions->decoder->weight.is_same(back->embeddings->word_embeddings->weight));
    CHECK(bert_logits(*back).to_vector() == bert_logits(*m).to_vector());
}

TEST_CASE("save_hf_vit writes the conv weight (D C P P) and positions (1 N+1 D) and load_hf_vit reads them", "[hf]") {
    Generator gen(5);
    nn::ViT<float> m(small_vit(), gen);
    perturb(m, 6);
    const std::string dir = fresh_dir("vit_roundtrip");
    io::save_hf_vit(dir, m);
    const auto file = io::load_safetensors<float>(dir + "/model.safetensors");
    CHECK(file.size() == 4 + 2 + 2 + 16 * 2);
    CHECK(file.at("vit.embeddings.patch_embeddings.projection.weight").shape() == Shape{16, 3, 4, 4});
    CHECK(file.at("vit.embeddings.position_embeddings").shape() == Shape{1, 5, 16});
    CHECK(file.at("vit.embeddings.cls_token").shape() == Shape{1, 1, 16});
    CHECK(file.count("vit.layernorm.weight") == 1);
    CHECK(file.count("vit.encoder.layer.1.layernorm_before.bias") == 1);
    CHECK(file.count("vit.encoder.layer.0.attention.attention.value.weight") == 1);
    CHECK(file.at("classifier.weight").shape() == Shape{5, 16});
    const json::Value cfg = json::parse(io::read_file(dir + "/config.json"));
    CHECK(cfg.at("id2label").size() == 5);
    CHECK(cfg.at("qkv_bias") == true);

    auto back = io::load_hf_vit(dir);
    CHECK(back->config().num_classes == 5);
    CHECK(back->config().patch_size == 4);
    CHECK(vit_logits(*back).to_vector() == vit_logits(m).to_vector());

    // non-square or indivisible images, no q/k/v bias: clear errors naming the field
    edit_config(dir, "image_size", "[8, 12]");
    CHECK_THAT(error_of([&] { io::load_hf_vit(dir); }), Catch::Contains("image_size") && Catch::Contains("square"));
    edit_config(dir, "image_size", "10");
    CHECK_THAT(error_of([&] { io::load_hf_vit(dir); }), Catch::Contains("not a multiple of patch_size"));
    edit_config(dir, "image_size", "8");
    edit_config(dir, "qkv_bias", "false");
    CHECK_THAT(error_of([&] { io::load_hf_vit(dir); }), Catch::Contains("qkv_bias"));
    edit_config(dir, "qkv_bias", "");
    edit_config(dir, "model_type", "\"deit\"");
    CHECK_THAT(error_of([&] { io::load_hf_vit(dir); }), Catch::Contains("model_type") && Catch::Contains("deit"));
    edit_config(dir, "model_type", "\"vit\"");
    // a pooler (ViTModel with pooling) is skipped and reported
    edit_weights(dir, [](auto& t) { t["vit.pooler.dense.weight"] = Tensor<float>::zeros({16, 16}); });
    io::HFLoadReport rep;
    io::load_hf_vit(dir, {}, &rep);
    REQUIRE(rep.skipped.size() == 1);
    CHECK_THAT(rep.skipped[0], Catch::StartsWith("vit.pooler.dense.weight"));
}

TEST_CASE("load_hf_bert: missing files and unreadable configs are clear errors", "[hf]") {
    const std::string none = fresh_dir("bert_none");
    CHECK_THAT(error_of([&] { io::load_hf_bert(none); }), Catch::Contains("config.json") && Catch::Contains("missing"));
    const std::string dir = saved_bert("bert_files");
    fs::remove(dir + "/model.safetensors");
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("model.safetensors"));
    std::ofstream(dir + "/pytorch_model.bin") << "pickle";
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("safe_serialization=True"));
    io::write_text_atomic(dir + "/config.json", "{\"model_type\": \"bert\",");
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("not valid JSON"));
    io::write_text_atomic(dir + "/model.safetensors", "garbage");
    io::write_text_atomic(dir + "/config.json", "{\"model_type\": \"bert\"}");
    // the default config (bert-base sizes) is built, then the bad file is reported
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("model.safetensors"));
}

TEST_CASE("load_hf_bert: config fields moekd cannot represent are errors naming the field", "[hf]") {
    const std::string dir = saved_bert("bert_config");
    const std::vector<std::tuple<std::string, std::string, std::string>> bad = {
        {"hidden_act", "\"gelu_new\"", "exact erf GELU"},
        {"hidden_act", "\"relu\"", "hidden_act"},
        {"model_type", "\"roberta\"", "roberta"},
        {"model_type", "", "model_type"},
        {"position_embedding_type", "\"relative_key\"", "absolute"},
        {"is_decoder", "true", "is_decoder"},
        {"tie_word_embeddings", "false", "tied"},
        {"hidden_size", "\"16\"", "positive integer"},
        {"num_attention_heads", "3", "must divide hidden_size"},
        {"layer_norm_eps", "-1", "layer_norm_eps"},
        {"pad_token_id", "40", "pad_token_id"},
    };
    for (const auto& [key, value, what] : bad) {
        const std::string before = io::read_file(dir + "/config.json");
        edit_config(dir, key, value);
        INFO(key << " = " << value);
        CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains(what) && Catch::Contains("config.json"));
        io::write_text_atomic(dir + "/config.json", before);
    }
    edit_config(dir, "pad_token_id", "null");  // no padding row: fine
    CHECK(io::load_hf_bert(dir)->config().pad_token_id == -1);
}

TEST_CASE("load_hf_bert: missing or unexpected or mis-shaped or untied tensors", "[hf]") {
    nn::BertEncoder<float>* m = nullptr;
    const std::string dir = saved_bert("bert_tensors", &m);
    const auto original = io::load_safetensors<float>(dir + "/model.safetensors");
    auto reset = [&] { io::write_safetensors(dir + "/model.safetensors", original, {{"format", "pt"}}); };

    edit_weights(dir, [](auto& t) { t.erase("bert.encoder.layer.1.output.LayerNorm.bias"); });
    std::string e = error_of([&] { io::load_hf_bert(dir); });
    CHECK_THAT(e, Catch::Contains("missing tensors (1)") && Catch::Contains("bert.encoder.layer.1.output.LayerNorm.bias") &&
                      Catch::Contains(dir));
    io::HFLoadReport rep;
    io::load_hf_bert(dir, {.strict = false}, &rep);  // non-strict: loads the rest, reports the hole
    CHECK(rep.missing.size() == 1);

    reset();
    edit_weights(dir, [](auto& t) {
        t["bert.encoder.layer.2.output.dense.weight"] = Tensor<float>::zeros({16, 24});  // a third layer
        t["bert.pooler.dense.weight"] = Tensor<float>::zeros({16, 16});               // BertModel's pooler: skipped
        t["cls.seq_relationship.bias"] = Tensor<float>::zeros({2});                    // NSP head: skipped
    });
    e = error_of([&] { io::load_hf_bert(dir); });
    CHECK_THAT(e, Catch::Contains("unexpected tensors (1)") && Catch::Contains("bert.encoder.layer.2.output.dense.weight"));
    CHECK_THAT(e, !Catch::Contains("pooler"));

    reset();
    edit_weights(dir, [](auto& t) { t["bert.embeddings.position_embeddings.weight"] = Tensor<float>::zeros({13, 16}); });
    e = error_of([&] { io::load_hf_bert(dir); });
    CHECK_THAT(e, Catch::Contains("shape mismatches (1)") && Catch::Contains("position_embeddings") &&
                      Catch::Contains("(12, 16)") && Catch::Contains("(13, 16)"));
    e = error_of([&] { io::load_hf_bert(dir, {.strict = false}); });  // never loaded with the wrong shape
    CHECK_THAT(e, Catch::Contains("shape mismatches"));

    // the tied decoder weight may be in the file (torch.save of a state dict has it) when equal ...
    reset();
    edit_weights(dir, [](auto& t) {
        t["cls.predictions.decoder.weight"] = t.at("bert.embeddings.word_embeddings.weight");
        t["cls.predictions.decoder.bias"] = t.at("cls.predictions.bias");
    });
    auto tied = io::load_hf_bert(dir);
    CHECK(bert_logits(*tied).to_vector() == bert_logits(*m).to_vector());
    // ... but not different: moekd's decoder is the word embedding table
    edit_weights(dir, [](auto& t) { t["cls.predictions.decoder.weight"] = Tensor<float>::zeros({40, 16}); });
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("cls.predictions.decoder.weight") &&
                                                            Catch::Contains("differ") && Catch::Contains("tie"));
    // only the decoder bias (an older layout): it is cls.predictions.bias
    reset();
    edit_weights(dir, [](auto& t) {
        t["cls.predictions.decoder.bias"] = t.at("cls.predictions.bias");
        t.erase("cls.predictions.bias");
    });
    CHECK(bert_logits(*io::load_hf_bert(dir)).to_vector() == bert_logits(*m).to_vector());

    // an integer tensor where floats belong: the file and the tensor are named
    reset();
    {
        auto f = io::load_safetensors<float>(dir + "/model.safetensors");
        std::map<std::string, Tensor<int64_t>> ints{{"cls.predictions.bias", Tensor<int64_t>::zeros({40})}};
        f.erase("cls.predictions.bias");
        // write two shards: floats and the one int64 tensor, listed by an index
        fs::remove(dir + "/model.safetensors");
        io::write_safetensors(dir + "/model-00001-of-00002.safetensors", f, {{"format", "pt"}});
        io::write_safetensors(dir + "/model-00002-of-00002.safetensors", ints, {{"format", "pt"}});
        json::Value wm = json::Value::object();
        for (auto& [n, t] : f) wm[n] = "model-00001-of-00002.safetensors";
        wm["cls.predictions.bias"] = "model-00002-of-00002.safetensors";
        io::write_text_atomic(dir + "/model.safetensors.index.json", json::dump({{"weight_map", wm}}));
        CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }),
                   Catch::Contains("model-00002-of-00002.safetensors") && Catch::Contains("cls.predictions.bias"));
        // the same shards with the right dtype load (a sharded checkpoint)
        std::map<std::string, Tensor<float>> fl{{"cls.predictions.bias", original.at("cls.predictions.bias")}};
        io::write_safetensors(dir + "/model-00002-of-00002.safetensors", fl, {{"format", "pt"}});
        CHECK(bert_logits(*io::load_hf_bert(dir)).to_vector() == bert_logits(*m).to_vector());
    }
}

TEST_CASE("load_hf_bert reads a BertModel file (no prefix) and old gamma and beta names", "[hf]") {
    nn::BertEncoder<float>* m = nullptr;
    const std::string dir = saved_bert("bert_base_model", &m);
    edit_weights(dir, [](auto& t) {
        std::map<std::string, Tensor<float>> out;
        for (auto& [n, x] : t) {
            std::string k = n.rfind("bert.", 0) == 0 ? n.substr(5) : n;
            if (k.find("LayerNorm.weight") != std::string::npos) k.replace(k.size() - 6, 6, "gamma");
            if (k.find("LayerNorm.bias") != std::string::npos) k.replace(k.size() - 4, 4, "beta");
            out[k] = x;
        }
        t = out;
    });
    CHECK(bert_logits(*io::load_hf_bert(dir)).to_vector() == bert_logits(*m).to_vector());
    // without the MLM head (a BertModel): strict says which tensors are missing; non-strict loads the encoder
    edit_weights(dir, [](auto& t) { std::erase_if(t, [](const auto& kv) { return kv.first.rfind("cls.", 0) == 0; }); });
    CHECK_THAT(error_of([&] { io::load_hf_bert(dir); }), Catch::Contains("missing tensors (5)") &&
                                                            Catch::Contains("cls.predictions.transform.dense.weight"));
    io::HFLoadReport rep;
    auto enc = io::load_hf_bert(dir, {.strict = false}, &rep);
    CHECK(rep.missing.size() == 5);
    m->eval(), enc->eval();
    const Tensor<int64_t> ids = Tensor<int64_t>::from_vector({4, 5, 6}, {1, 3});
    CHECK(enc->forward(ids).to_vector() == m->forward(ids).to_vector());
}

TEST_CASE("save_hf_bert and save_hf_vit refuse models the HF classes cannot hold (MoE FFN or adapters)", "[hf]") {
    Generator gen(7);
    const nn::BertConfig c = small_bert();
    nn::FFNFactory<float> moe = [&](int64_t layer, Generator& g) -> std::shared_ptr<nn::FFNBase<float>> {
        moe::MoEConfig mc;
        mc.d_model = c.hidden_size, mc.ffn_dim = c.intermediate_size, mc.activation = nn::Activation::GELU;
        mc.router.num_experts = 2, mc.router.top_k = 1;
        mc.name = "encoder.layers." + std::to_string(layer) + ".moe";
        return std::make_shared<moe::MoELayer<float>>(mc, g);
    };
    nn::BertEncoder<float> moe_bert(c, gen, moe);
    const std::string e = error_of([&] { io::save_hf_bert(fresh_dir("bert_moe"), moe_bert); });
    CHECK_THAT(e, Catch::Contains("no counterpart") && Catch::Contains("encoder.layers.0.moe") && Catch::Contains("MoE"));
    CHECK(!fs::exists(fs::temp_directory_path() / ("moekd_hf_test_" + std::to_string(::getpid()) + "_bert_moe") / "model.safetensors"));
    nn::BertConfig ca = c;
    ca.adapters = true;
    nn::BertEncoder<float> ad(ca, gen);
    CHECK_THAT(error_of([&] { io::save_hf_bert(fresh_dir("bert_adapters"), ad); }), Catch::Contains("self_attn_adapter"));
    nn::ViTConfig va = small_vit();
    va.adapters = true;
    nn::ViT<float> vit(va, gen);
    CHECK_THAT(error_of([&] { io::save_hf_vit(fresh_dir("vit_adapters"), vit); }), Catch::Contains("ffn_adapter"));
}
