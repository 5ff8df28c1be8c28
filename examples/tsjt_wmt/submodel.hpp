// submodel.hpp — submodel extraction: after training, each submodel (the MoE model, the dense or
// device model) is written as its own standalone model directory
//   DIR/model.safetensors   the submodel's state_dict (nn::EncoderDecoder names), with its
//                           ModelConfig in the metadata ("tsjt.*" keys)
//   DIR/config.json         the same config, for people
//   DIR/spm.model           the joint SentencePiece model
// and `tsjt_wmt translate --model DIR` loads it into a plain nn::EncoderDecoder. A shared-
// architecture dense model loads like any dense model: its shared layers are just its layers.
// A model.safetensors of another architecture fails with the list of mismatched tensors; one
// holding a NaN or an infinity fails naming the file and the tensor. Every file is written
// through io::atomic_file (checked; a symlink is followed, a FIFO or device node refused).
#pragma once

#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/read_file.hpp>
#include <moekd/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include "model.hpp"

namespace tsjt {

inline std::map<std::string, std::string> config_metadata(const ModelConfig& c) {
    return {{"tsjt.format", "tsjt-submodel-1"},
            {"tsjt.vocab", std::to_string(c.vocab)},
            {"tsjt.pad", std::to_string(c.pad)},
            {"tsjt.d_model", std::to_string(c.d_model)},
            {"tsjt.heads", std::to_string(c.heads)},
            {"tsjt.ffn_dim", std::to_string(c.ffn_dim)},
            {"tsjt.enc_layers", std::to_string(c.enc_layers)},
            {"tsjt.dec_layers", std::to_string(c.dec_layers)},
            {"tsjt.experts", std::to_string(c.experts)},
            {"tsjt.moe_every", std::to_string(c.moe_every)}};
}

inline ModelConfig config_from_metadata(const std::map<std::string, std::string>& m, const std::string& file) {
    auto get = [&](const char* k) -> int64_t {
        auto it = m.find(std::string("tsjt.") + k);
        MOEKD_CHECK(it != m.end(), "tsjt: '", file, "' is not a tsjt_wmt submodel (no 'tsjt.", k, "' in its metadata)");
        try {
            return std::stoll(it->second);
        } catch (const std::exception&) {
            MOEKD_CHECK(false, "tsjt: '", file, "': metadata tsjt.", k, " = '", it->second, "' is not an integer");
        }
        return 0;
    };
    auto fmt = m.find("tsjt.format");
    MOEKD_CHECK(fmt != m.end() && fmt->second == "tsjt-submodel-1", "tsjt: '", file,
                "' is not a tsjt_wmt submodel (metadata tsjt.format missing or unknown)");
    ModelConfig c;
    c.vocab = get("vocab");
    c.pad = get("pad");
    c.d_model = get("d_model");
    c.heads = get("heads");
    c.ffn_dim = get("ffn_dim");
    c.enc_layers = get("enc_layers");
    c.dec_layers = get("dec_layers");
    c.experts = get("experts");
    c.moe_every = get("moe_every");
    c.dropout = 0.0;
    return c;
}

/// Writes DIR/{model.safetensors, config.json, spm.model}. `spm_model` is the .model file path.
inline void save_submodel(const std::string& dir, const nn::Module<F>& m, const ModelConfig& c,
                          const std::string& spm_model) {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    io::write_safetensors<F>((fs::path(dir) / "model.safetensors").string(), m.state_dict(), config_metadata(c));
    nlohmann::ordered_json j = nlohmann::ordered_json::object();  // the metadata without "tsjt."
    for (const auto& [k, v] : config_metadata(c)) {
        const std::string key = k.substr(5);
        if (key == "format") j[key] = v;
        else j[key] = std::stoll(v);
    }
    io::write_text_atomic((fs::path(dir) / "config.json").string(), j.dump() + "\n");
    io::write_text_atomic((fs::path(dir) / "spm.model").string(), io::read_file(spm_model, "tsjt"));
}

struct LoadedSubmodel {
    std::string file;  // DIR/model.safetensors
    ModelConfig config;
    std::shared_ptr<nn::EncoderDecoder<F>> model;
};

/// Loads DIR/model.safetensors into a fresh model of the stored config (strict: every tensor
/// name and shape must match). The model is in eval mode; eval_dropless: see ModelConfig.
inline LoadedSubmodel load_submodel(const std::string& dir, bool eval_dropless = true) {
    namespace fs = std::filesystem;
    MOEKD_CHECK(!fs::exists(dir) || fs::is_directory(dir), "tsjt: the model '", dir,
                "' is a file; give the submodel directory (RUN_DIR/moe or RUN_DIR/dense)");
    const std::string file = (fs::path(dir) / "model.safetensors").string();
    MOEKD_CHECK(!fs::is_directory(file), "tsjt: the model file '", file, "' is a directory, not a file");
    MOEKD_CHECK(fs::is_regular_file(file), "tsjt: no model file '", file, "'");
    std::map<std::string, std::string> meta;
    const auto tensors = io::load_safetensors<F>(file, &meta);
    for (const auto& [name, t] : tensors) {
        const Tensor<F> c = t.contiguous();
        const F* p = c.data();
        for (int64_t i = 0; i < c.numel(); ++i)
            MOEKD_CHECK(std::isfinite(p[i]), "tsjt: the model file '", file, "' is broken: tensor '", name,
                        "' holds a non-finite value (", p[i], " at element ", i, ")");
    }
    LoadedSubmodel out;
    out.file = file;
    out.config = config_from_metadata(meta, file);
    out.config.eval_dropless = eval_dropless;
    Generator gen(0);
    out.model = make_model(out.config, gen);
    try {
        out.model->load_state_dict(tensors, true);
    } catch (const Error& e) {
        MOEKD_CHECK(false, "tsjt: '", file, "' does not fit the architecture its config describes: ", e.what());
    }
    out.model->train(false);
    return out;
}

}  // namespace tsjt
