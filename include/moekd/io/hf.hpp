// hf.hpp — moekd's BERT and ViT in the layout of Hugging Face transformers, both ways: a folder
// with config.json + model.safetensors, as `save_pretrained(dir, safe_serialization=True)` writes
// and `from_pretrained(dir)` reads, for BertForMaskedLM and ViTForImageClassification.
//
//   save_hf_bert(dir, model)   /  load_hf_bert(dir)   nn::BertEncoder <-> BertForMaskedLM
//   save_hf_vit(dir, model)    /  load_hf_vit(dir)    nn::ViT         <-> ViTForImageClassification
//
// Why a separate layout: nn::BertEncoder / nn::ViT compute exactly what those two classes compute
// (tests/hf_interop checks the logits against the real package), but the layers carry moekd's
// fairseq-style names. Only names and two reshapes differ, no transposes (a Linear weight is
// (out, in) in both):
//
//   moekd                                       transformers (BERT: "bert.", ViT: "vit." before)
//   encoder.layers.N.self_attn.{q,k,v}_proj     encoder.layer.N.attention.self.{query,key,value}
//                                               (ViT: attention.attention.{query,key,value})
//   encoder.layers.N.self_attn.out_proj         encoder.layer.N.attention.output.dense
//   encoder.layers.N.self_attn_layer_norm       BERT: ...attention.output.LayerNorm  ViT: ...layernorm_before
//   encoder.layers.N.ffn.fc1 / ffn.fc2          encoder.layer.N.intermediate.dense / output.dense
//   encoder.layers.N.final_layer_norm           BERT: ...output.LayerNorm  ViT: ...layernorm_after
//   encoder.layer_norm (ViT)                    vit.layernorm
//   embeddings.*, cls.predictions.*, classifier.*   the same (embeddings under the prefix)
//   ViT embeddings.position_embeddings.weight (N+1, D)      vit.embeddings.position_embeddings (1, N+1, D)
//   ViT ...patch_embeddings.projection.weight (D, C*P*P)    the Conv2d weight (D, C, P, P), same order
//
// Tied weights as transformers: cls.predictions.decoder.{weight,bias} are the word embeddings and
// cls.predictions.bias, so the file leaves them out (save_pretrained drops tied duplicates); a file
// that has them loads only if they equal what they are tied to. Reading also accepts what real
// checkpoints hold: a file without the "bert." / "vit." prefix (BertModel / ViTModel), the old
// LayerNorm names gamma / beta, F16 / BF16 / F64 tensors (converted), a sharded checkpoint
// (model.safetensors.index.json), and skips (listing them in the report) the heads moekd's models
// do not have: BERT's pooler and next-sentence head, ViT's pooler, the position_ids buffer.
//
// Not representable, each a moekd::Error naming the file and the field or tensor: hidden_act
// other than "gelu" (moekd's GELU is the exact erf form = transformers' "gelu"), relative position
// embeddings, a decoder / cross-attention BERT, untied word embeddings, ViT without q/k/v biases,
// non-square images or an image size that is not a multiple of the patch size (HF's conv would
// drop the remainder pixels), and, when saving, any tensor BertForMaskedLM / ViTForImageClassification
// has no place for (an MoE FFN, Houlsby adapters). Only safetensors is read (no pickle).
// Reference code (plain loops over names; the copies are the only work).
#pragma once

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../nn/models.hpp"
#include "atomic_file.hpp"
#include "json.hpp"
#include "read_file.hpp"
#include "safetensors.hpp"

namespace moekd::io {

/// How strictly load_hf_* matches the file against the model.
struct HFLoadOptions {
    /// true (default): every tensor of the moekd model must be in the file with its shape, and the
    /// file may hold nothing else except the known heads listed in HFLoadReport::skipped; any
    /// defect is an error listing all of them. false: load what fits, keep the rest as
    /// initialised, and report (shape mismatches stay errors).
    bool strict = true;
};

/// What a load found besides the tensors it loaded.
struct HFLoadReport {
    std::vector<std::string> loaded;      // HF names read into the model
    std::vector<std::string> skipped;     // known heads moekd's model does not have (pooler, NSP head ...)
    std::vector<std::string> missing;     // non-strict only: HF names not in the file (left as initialised)
    std::vector<std::string> unexpected;  // non-strict only: names in the file the model has no place for
};

namespace detail {

/// Where a moekd tensor lives in the HF layout.
struct HFName {
    enum Kind { Mapped, Tied, None } kind = None;
    std::string hf;          // Mapped: the HF name (with the base prefix)
    Shape hf_shape;          // Mapped: its shape there (a reshape of ours)
    std::vector<std::string> aliases;  // other HF names of the same tensor (tied in HF)
};

inline bool hf_starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

/// "encoder.layers.N.<rest>" -> {N, rest}; nullopt for other names.
inline std::optional<std::pair<std::string, std::string>> hf_layer_split(const std::string& ours) {
    static const std::string pre = "encoder.layers.";
    if (!hf_starts(ours, pre)) return std::nullopt;
    const size_t dot = ours.find('.', pre.size());
    if (dot == std::string::npos || dot == pre.size()) return std::nullopt;
    const std::string n = ours.substr(pre.size(), dot - pre.size());
    if (n.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::make_pair(n, ours.substr(dot + 1));
}

/// rest of a layer name ("self_attn.q_proj.weight") through a table of module renames, keeping a
/// final ".weight" / ".bias"; "" when the module has no HF counterpart.
inline std::string hf_layer_rest(const std::string& rest, const std::vector<std::pair<std::string, std::string>>& table) {
    for (const auto& [ours, theirs] : table) {
        if (!hf_starts(rest, ours + ".")) continue;
        const std::string leaf = rest.substr(ours.size() + 1);
        if (leaf == "weight" || leaf == "bias") return theirs + "." + leaf;
    }
    return "";
}

/// BertEncoder name -> BertForMaskedLM name.
inline HFName bert_hf_name(const std::string& ours, const Shape& shape) {
    static const std::vector<std::pair<std::string, std::string>> layer = {
        {"self_attn.q_proj", "attention.self.query"},        {"self_attn.k_proj", "attention.self.key"},
        {"self_attn.v_proj", "attention.self.value"},        {"self_attn.out_proj", "attention.output.dense"},
        {"self_attn_layer_norm", "attention.output.LayerNorm"}, {"ffn.fc1", "intermediate.dense"},
        {"ffn.fc2", "output.dense"},                         {"final_layer_norm", "output.LayerNorm"}};
    HFName r;
    if (ours == "cls.predictions.decoder.weight" || ours == "cls.predictions.decoder.bias") {
        r.kind = HFName::Tied;
        return r;
    }
    if (hf_starts(ours, "cls.predictions.") || hf_starts(ours, "embeddings.")) {
        r.kind = HFName::Mapped, r.hf = hf_starts(ours, "cls.") ? ours : "bert." + ours, r.hf_shape = shape;
        if (ours == "embeddings.word_embeddings.weight") r.aliases = {"cls.predictions.decoder.weight"};
        if (ours == "cls.predictions.bias") r.aliases = {"cls.predictions.decoder.bias"};
        return r;
    }
    if (auto nl = hf_layer_split(ours)) {
        const std::string rest = hf_layer_rest(nl->second, layer);
        if (!rest.empty()) r.kind = HFName::Mapped, r.hf = "bert.encoder.layer." + nl->first + "." + rest, r.hf_shape = shape;
    }
    return r;
}

/// ViT name -> ViTForImageClassification name (and the two reshaped tensors' HF shapes).
inline HFName vit_hf_name(const std::string& ours, const Shape& shape, const nn::ViTConfig& c) {
    static const std::vector<std::pair<std::string, std::string>> layer = {
        {"self_attn.q_proj", "attention.attention.query"}, {"self_attn.k_proj", "attention.attention.key"},
        {"self_attn.v_proj", "attention.attention.value"}, {"self_attn.out_proj", "attention.output.dense"},
        {"self_attn_layer_norm", "layernorm_before"},      {"ffn.fc1", "intermediate.dense"},
        {"ffn.fc2", "output.dense"},                       {"final_layer_norm", "layernorm_after"}};
    HFName r;
    r.kind = HFName::Mapped, r.hf_shape = shape;
    if (ours == "embeddings.cls_token" || ours == "embeddings.patch_embeddings.projection.bias") r.hf = "vit." + ours;
    else if (ours == "embeddings.patch_embeddings.projection.weight")
        r.hf = "vit." + ours, r.hf_shape = {c.hidden_size, c.num_channels, c.patch_size, c.patch_size};
    else if (ours == "embeddings.position_embeddings.weight")
        r.hf = "vit.embeddings.position_embeddings", r.hf_shape = {1, c.num_patches() + 1, c.hidden_size};
    else if (ours == "encoder.layer_norm.weight" || ours == "encoder.layer_norm.bias")
        r.hf = "vit.layernorm." + ours.substr(std::string("encoder.layer_norm.").size());
    else if (ours == "classifier.weight" || ours == "classifier.bias") r.hf = ours;
    else if (auto nl = hf_layer_split(ours)) {
        const std::string rest = hf_layer_rest(nl->second, layer);
        if (!rest.empty()) r.hf = "vit.encoder.layer." + nl->first + "." + rest;
    }
    if (r.hf.empty()) r.kind = HFName::None;
    return r;
}

/// Every tensor of `model` with its HF name; a tensor the HF class has no place for is an error.
template <class T, class Namer>
std::vector<std::pair<HFName, Tensor<T>>> hf_entries(const nn::Module<T>& model, Namer&& namer, const char* arch,
                                                     const char* who) {
    std::vector<std::pair<HFName, Tensor<T>>> out;
    std::vector<std::string> orphans;
    for (const auto& [name, t] : model.state_dict()) {
        HFName h = namer(name, t.shape());
        if (h.kind == HFName::None) orphans.push_back(name + " " + msg(t.shape()));
        else if (h.kind == HFName::Mapped) out.emplace_back(std::move(h), t);
    }
    if (!orphans.empty()) {
        std::string list;
        for (const auto& o : orphans) list += "\n  " + o;
        MOEKD_CHECK(false, who, ": ", orphans.size(), " tensor(s) of the moekd model have no counterpart in transformers' ",
                    arch, ":", list,
                    "\nHINT: the HF layout holds the dense model only: an MoE FFN or Houlsby adapters have no "
                    "place there (save and load such models with io::save_checkpoint / io::load_checkpoint)");
    }
    return out;
}

inline std::string hf_join(const std::string& dir, const char* file) {
    return (std::filesystem::path(dir) / file).string();
}

/// config.json of a checkpoint folder, parsed.
inline json::Value read_hf_config(const std::string& dir, const char* who) {
    const std::string path = hf_join(dir, "config.json");
    const std::string why = unreadable_reason(path);
    MOEKD_CHECK(why.empty(), who, ": '", path, "': ", why,
                " (a transformers checkpoint folder holds config.json and model.safetensors, as save_pretrained writes)");
    json::Value v;
    try {
        v = json::parse(read_file(path, who));
    } catch (const Error& e) {
        throw Error(msg(who, ": '", path, "' is not valid JSON: ", e.what()));
    }
    MOEKD_CHECK(v.is_object(), who, ": '", path, "' must hold a JSON object");
    return v;
}

/// Typed reads of config fields: absent -> the default (transformers' default, which is ours);
/// present with the wrong type or range -> an error naming the file and the field.
struct HFConfigReader {
    const json::Value& cfg;
    std::string path, who;

    [[noreturn]] void fail(const std::string& key, const std::string& what) const {
        throw Error(msg(who, ": '", path, "': field '", key, "' ", what));
    }
    const json::Value* get(const std::string& key) const {
        const json::Value* v = json::find(cfg, key);
        return v && !v->is_null() ? v : nullptr;
    }
    int64_t positive(const std::string& key, int64_t def) const {
        const json::Value* v = get(key);
        if (!v) return def;
        return positive_value(key, *v);
    }
    double number(const std::string& key, double def, double lo, double hi) const {
        const json::Value* v = get(key);
        if (!v) return def;
        if (!v->is_number() || v->get<double>() < lo || v->get<double>() > hi)
            fail(key, msg("must be a number in [", lo, ", ", hi, "], got ", json::dump(*v)));
        return v->get<double>();
    }
    std::string string(const std::string& key, const std::string& def) const {
        const json::Value* v = get(key);
        if (!v) return def;
        if (!v->is_string()) fail(key, "must be a string, got " + json::dump(*v));
        return v->get<std::string>();
    }
    bool boolean(const std::string& key, bool def) const {
        const json::Value* v = get(key);
        if (!v) return def;
        if (!v->is_boolean()) fail(key, "must be true or false, got " + json::dump(*v));
        return v->get<bool>();
    }
    /// image_size / patch_size: an integer, or [h, w] with h == w (moekd's ViT is square).
    int64_t square(const std::string& key, int64_t def) const {
        const json::Value* v = get(key);
        if (!v) return def;
        if (v->is_array() && v->size() == 2 && (*v)[0].is_number_integer() && (*v)[1].is_number_integer()) {
            if ((*v)[0] != (*v)[1]) fail(key, "is " + json::dump(*v) + ": moekd's ViT handles square images and patches only");
            return positive_value(key, (*v)[0]);
        }
        return positive_value(key, *v);
    }
    int64_t positive_value(const std::string& key, const json::Value& v) const {
        if (!v.is_number_integer() || v.get<int64_t>() <= 0) fail(key, "must be a positive integer, got " + json::dump(v));
        return v.get<int64_t>();
    }
    /// `key` must be absent, null or equal `want`; otherwise moekd cannot represent the model.
    void require(const std::string& key, const json::Value& want, const std::string& why) const {
        const json::Value* v = get(key);
        if (v && *v != want) fail(key, "is " + json::dump(*v) + ": " + why);
    }
    void require_model_type(const std::string& type, const char* arch) const {
        const json::Value* v = get("model_type");
        if (!v) fail("model_type", msg("is missing (expected \"", type, "\" for ", arch, ")"));
        if (!v->is_string() || v->get<std::string>() != type)
            fail("model_type", msg("is ", json::dump(*v), ": this reader handles transformers' ", arch,
                                   " (model_type \"", type, "\") only"));
    }
    void require_gelu() const {
        const std::string act = string("hidden_act", "gelu");
        if (act != "gelu")
            fail("hidden_act", "is \"" + act + "\": moekd's layers use the exact erf GELU, transformers' \"gelu\" "
                               "(no tanh approximation, no other activation)");
    }
};

/// The tensors of a checkpoint folder: model.safetensors, or the shards that
/// model.safetensors.index.json lists. `files` gets the file each tensor came from.
inline std::map<std::string, RawTensor> read_hf_tensors(const std::string& dir, const char* who,
                                                        std::map<std::string, std::string>& files) {
    std::map<std::string, RawTensor> out;
    const std::string single = hf_join(dir, "model.safetensors"), index = hf_join(dir, "model.safetensors.index.json");
    std::vector<std::string> paths;
    if (unreadable_reason(single).empty()) {
        paths.push_back(single);
    } else if (unreadable_reason(index).empty()) {
        json::Value ix;
        try {
            ix = json::parse(read_file(index, who));
        } catch (const Error& e) {
            throw Error(msg(who, ": '", index, "' is not valid JSON: ", e.what()));
        }
        const json::Value* wm = json::find(ix, "weight_map");
        MOEKD_CHECK(wm && wm->is_object(), who, ": '", index, "' has no \"weight_map\" object");
        for (const auto& [name, f] : wm->get_ref<const json::Object&>()) {
            const std::string file = f.is_string() ? f.get<std::string>() : std::string();
            MOEKD_CHECK(!file.empty() && file.find('/') == std::string::npos, who, ": '", index, "': the shard of '", name,
                        "' must be a file name in the folder");
            const std::string p = hf_join(dir, file.c_str());
            if (std::find(paths.begin(), paths.end(), p) == paths.end()) paths.push_back(p);
        }
    } else {
        const bool bin = unreadable_reason(hf_join(dir, "pytorch_model.bin")).empty();
        MOEKD_CHECK(false, who, ": '", single, "': ", unreadable_reason(single),
                    bin ? " (the folder has pytorch_model.bin: moekd reads safetensors only; in Python, "
                          "model.save_pretrained(dir, safe_serialization=True) writes it)"
                        : " (nor model.safetensors.index.json: no weights in this folder)");
    }
    for (const auto& p : paths) {
        MOEKD_CHECK(unreadable_reason(p).empty(), who, ": '", p, "': ", unreadable_reason(p));
        SafetensorsFile f = read_safetensors(p);
        for (auto& [name, t] : f.tensors) {
            // old checkpoints: LayerNorm.gamma / .beta (transformers renames them the same way)
            std::string n = name;
            if (n.size() > 6 && n.compare(n.size() - 6, 6, ".gamma") == 0) n = n.substr(0, n.size() - 6) + ".weight";
            else if (n.size() > 5 && n.compare(n.size() - 5, 5, ".beta") == 0) n = n.substr(0, n.size() - 5) + ".bias";
            MOEKD_CHECK(!out.count(n), who, ": tensor '", n, "' appears twice (in '", files[n], "' and '", p, "')");
            files[n] = p;
            out.emplace(n, std::move(t));
        }
    }
    return out;
}

/// Checks the file's tensors against the model's, then copies them in (nothing is changed when
/// a strict check fails). `prefix`: "bert." / "vit."; dropped when the file is a base model's.
template <class T>
HFLoadReport hf_load_entries(const std::vector<std::pair<HFName, Tensor<T>>>& entries, const std::string& dir,
                             const std::string& prefix, const std::vector<std::string>& skippable, const char* arch,
                             const char* who, const HFLoadOptions& opt) {
    std::map<std::string, std::string> files;
    std::map<std::string, RawTensor> raw = read_hf_tensors(dir, who, files);
    bool has_prefix = false;
    for (const auto& [n, r] : raw) has_prefix |= hf_starts(n, prefix);
    auto in_file = [&](const std::string& hf) {
        return has_prefix || !hf_starts(hf, prefix) ? hf : hf.substr(prefix.size());
    };
    HFLoadReport rep;
    std::vector<std::string> mismatched;
    std::vector<std::pair<Tensor<T>, Tensor<T>>> todo;  // (model tensor handle, value in our shape)
    std::map<std::string, bool> used;
    for (const auto& [h, t] : entries) {
        std::vector<std::string> names{in_file(h.hf)};
        for (const auto& a : h.aliases) names.push_back(in_file(a));
        std::optional<Tensor<T>> value;
        std::string first;
        for (const auto& n : names) {
            auto it = raw.find(n);
            if (it == raw.end()) continue;
            used[n] = true;
            if (it->second.shape != h.hf_shape) {
                mismatched.push_back(msg(n, ": the model needs ", h.hf_shape, ", '", files[n], "' has ", it->second.shape,
                                         " ", it->second.dtype));
                continue;
            }
            Tensor<T> v;
            try {
                v = to_tensor<T>(it->second, n);
            } catch (const Error& e) {
                throw Error(msg(who, ": '", files[n], "': ", e.what()));
            }
            if (!value) {
                value = v, first = n;
            } else {
                // tied in moekd (and in transformers): both names must hold the same values
                const std::vector<T> a = value->to_vector(), b = v.to_vector();
                MOEKD_CHECK(a == b, who, ": '", files[n], "': '", n, "' and '", first, "' differ, but ", arch,
                            " ties them (tie_word_embeddings) and so does moekd");
            }
        }
        if (!value) {
            bool shape_bad = false;
            for (const auto& n : names) shape_bad |= raw.count(n) > 0;
            if (!shape_bad) rep.missing.push_back(names.front() + " " + msg(h.hf_shape));
            continue;
        }
        rep.loaded.push_back(first);
        todo.emplace_back(t, value->reshape(t.shape()));
    }
    for (const auto& [n, r] : raw) {
        if (used.count(n)) continue;
        const bool skip = std::any_of(skippable.begin(), skippable.end(), [&](const std::string& s) {
            return n == s || n == in_file(s) || (s.back() == '.' && (hf_starts(n, s) || hf_starts(n, in_file(s))));
        });
        (skip ? rep.skipped : rep.unexpected).push_back(n + " " + msg(r.shape));
    }
    const bool bad = !mismatched.empty() || (opt.strict && (!rep.missing.empty() || !rep.unexpected.empty()));
    if (bad) {
        std::string text;
        auto list = [&](const char* what, const std::vector<std::string>& v) {
            if (v.empty()) return;
            text += msg("\n", what, " (", v.size(), "):");
            for (const auto& s : v) text += "\n  " + s;
        };
        list("missing tensors", rep.missing);
        list("unexpected tensors", rep.unexpected);
        list("shape mismatches", mismatched);
        MOEKD_CHECK(false, who, ": the weights in '", dir, "' do not fit moekd's ", arch, " built from '",
                    hf_join(dir, "config.json"), "'", text,
                    opt.strict && (!rep.missing.empty() || !rep.unexpected.empty())
                        ? "\nHINT: HFLoadOptions{.strict = false} loads what fits and reports the rest"
                        : "");
    }
    NoGrad ng;
    for (auto& [dst, v] : todo) moekd::detail::copy_into(dst, v.to(dst.device()));
    return rep;
}

/// Writes config.json (indented by 2, as save_pretrained writes it) and model.safetensors into `dir`.
template <class T>
void hf_write(const std::string& dir, const json::Value& config, const std::vector<std::pair<HFName, Tensor<T>>>& entries,
              const char* who) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    MOEKD_CHECK(!ec && std::filesystem::is_directory(dir), who, ": cannot create the folder '", dir, "'",
                ec ? ": " + ec.message() : std::string());
    std::map<std::string, Tensor<T>> tensors;
    for (const auto& [h, t] : entries) tensors[h.hf] = t.detach().reshape(h.hf_shape);
    // transformers refuses a safetensors file without {"format": "pt"}
    write_safetensors(hf_join(dir, "model.safetensors"), tensors, {{"format", "pt"}});
    write_text_atomic(hf_join(dir, "config.json"), json::dump(config, 2) + "\n");
}

template <class T>
const char* hf_torch_dtype() {
    if constexpr (std::is_same_v<T, double>) return "float64";
    else return "float32";
}

}  // namespace detail

// ---- BERT --------------------------------------------------------------------------------------
/// transformers' BertConfig (config.json of a BertForMaskedLM) as moekd's BertConfig. Absent
/// fields take BertConfig's defaults (the same in both); fields moekd cannot represent are errors.
inline nn::BertConfig bert_config_from_hf(const json::Value& cfg, const std::string& path) {
    MOEKD_CHECK(cfg.is_object(), "load_hf_bert: '", path, "' must hold a JSON object");
    const detail::HFConfigReader r{cfg, path, "load_hf_bert"};
    r.require_model_type("bert", "BertForMaskedLM");
    r.require_gelu();
    r.require("position_embedding_type", "absolute", "moekd's BERT has absolute learned positions only");
    r.require("is_decoder", false, "moekd's BERT is an encoder (no causal mask)");
    r.require("add_cross_attention", false, "moekd's BERT has no cross-attention");
    r.require("tie_word_embeddings", true, "moekd's MLM decoder is always tied to the word embeddings");
    nn::BertConfig c;
    c.vocab_size = r.positive("vocab_size", c.vocab_size);
    c.hidden_size = r.positive("hidden_size", c.hidden_size);
    c.num_layers = r.positive("num_hidden_layers", c.num_layers);
    c.num_heads = r.positive("num_attention_heads", c.num_heads);
    c.intermediate_size = r.positive("intermediate_size", c.intermediate_size);
    c.max_position_embeddings = r.positive("max_position_embeddings", c.max_position_embeddings);
    c.type_vocab_size = r.positive("type_vocab_size", c.type_vocab_size);
    c.layer_norm_eps = r.number("layer_norm_eps", c.layer_norm_eps, 0.0, 1.0);
    c.hidden_dropout = r.number("hidden_dropout_prob", c.hidden_dropout, 0.0, 1.0);
    c.attention_dropout = r.number("attention_probs_dropout_prob", c.attention_dropout, 0.0, 1.0);
    c.initializer_range = r.number("initializer_range", c.initializer_range, 0.0, 1e9);
    if (const json::Value* p = json::find(cfg, "pad_token_id"); p && p->is_null()) c.pad_token_id = -1;  // no padding row
    else if (p) {
        if (!p->is_number_integer() || p->get<int64_t>() < 0 || p->get<int64_t>() >= c.vocab_size)
            r.fail("pad_token_id", msg("must be null or an id in [0, vocab_size = ", c.vocab_size, "), got ", json::dump(*p)));
        c.pad_token_id = p->get<int64_t>();
    }
    if (c.hidden_size % c.num_heads != 0)
        r.fail("num_attention_heads", msg("(", c.num_heads, ") must divide hidden_size (", c.hidden_size, ")"));
    return c;
}

/// moekd's BertConfig as transformers' config.json fields (BertForMaskedLM).
template <class T = float>
json::Value bert_config_to_hf(const nn::BertConfig& c) {
    return {{"architectures", json::Value::array({"BertForMaskedLM"})},
            {"model_type", "bert"},
            {"attention_probs_dropout_prob", c.attention_dropout},
            {"hidden_act", "gelu"},
            {"hidden_dropout_prob", c.hidden_dropout},
            {"hidden_size", c.hidden_size},
            {"initializer_range", c.initializer_range},
            {"intermediate_size", c.intermediate_size},
            {"layer_norm_eps", c.layer_norm_eps},
            {"max_position_embeddings", c.max_position_embeddings},
            {"num_attention_heads", c.num_heads},
            {"num_hidden_layers", c.num_layers},
            {"pad_token_id", c.pad_token_id >= 0 ? json::Value(c.pad_token_id) : json::Value(nullptr)},
            {"position_embedding_type", "absolute"},
            {"tie_word_embeddings", true},
            {"torch_dtype", detail::hf_torch_dtype<T>()},
            {"type_vocab_size", c.type_vocab_size},
            {"vocab_size", c.vocab_size}};
}

/// config.json of a BERT checkpoint folder.
inline nn::BertConfig read_hf_bert_config(const std::string& dir) {
    return bert_config_from_hf(detail::read_hf_config(dir, "load_hf_bert"), detail::hf_join(dir, "config.json"));
}

/// Writes `model` as transformers' BertForMaskedLM: dir/config.json + dir/model.safetensors
/// (created, or replaced atomically). A model with MoE FFNs or adapters is an error.
template <class T>
void save_hf_bert(const std::string& dir, const nn::BertEncoder<T>& model) {
    const auto entries = detail::hf_entries(model, &detail::bert_hf_name, "BertForMaskedLM", "save_hf_bert");
    detail::hf_write(dir, bert_config_to_hf<T>(model.config()), entries, "save_hf_bert");
}

/// Loads a checkpoint folder into an existing BERT (its config must give the file's shapes).
template <class T>
HFLoadReport load_hf_bert_into(nn::BertEncoder<T>& model, const std::string& dir, const HFLoadOptions& opt = {}) {
    const auto entries = detail::hf_entries(model, &detail::bert_hf_name, "BertForMaskedLM", "load_hf_bert");
    return detail::hf_load_entries(entries, dir, "bert.",
                                   {"bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids",
                                    "bert.embeddings.token_type_ids"},
                                   "BertForMaskedLM", "load_hf_bert", opt);
}

/// Builds a BERT from dir/config.json and loads dir/model.safetensors into it (strict by default).
template <class T = float>
std::shared_ptr<nn::BertEncoder<T>> load_hf_bert(const std::string& dir, const HFLoadOptions& opt = {},
                                                 HFLoadReport* report = nullptr) {
    Generator gen(0);  // the initial values are overwritten (non-strict: kept where the file has none)
    auto model = std::make_shared<nn::BertEncoder<T>>(read_hf_bert_config(dir), gen);
    HFLoadReport rep = load_hf_bert_into(*model, dir, opt);
    if (report) *report = std::move(rep);
    return model;
}

// ---- ViT ---------------------------------------------------------------------------------------
/// transformers' ViTConfig (config.json of a ViTForImageClassification) as moekd's ViTConfig.
/// num_labels: the field if present, else the size of id2label, else 2 (transformers' default).
inline nn::ViTConfig vit_config_from_hf(const json::Value& cfg, const std::string& path) {
    MOEKD_CHECK(cfg.is_object(), "load_hf_vit: '", path, "' must hold a JSON object");
    const detail::HFConfigReader r{cfg, path, "load_hf_vit"};
    r.require_model_type("vit", "ViTForImageClassification");
    r.require_gelu();
    r.require("qkv_bias", true, "moekd's attention always has q/k/v biases");
    nn::ViTConfig c;
    c.image_size = r.square("image_size", c.image_size);
    c.patch_size = r.square("patch_size", c.patch_size);
    c.num_channels = r.positive("num_channels", c.num_channels);
    c.hidden_size = r.positive("hidden_size", c.hidden_size);
    c.num_layers = r.positive("num_hidden_layers", c.num_layers);
    c.num_heads = r.positive("num_attention_heads", c.num_heads);
    c.intermediate_size = r.positive("intermediate_size", c.intermediate_size);
    c.layer_norm_eps = r.number("layer_norm_eps", c.layer_norm_eps, 0.0, 1.0);
    c.hidden_dropout = r.number("hidden_dropout_prob", c.hidden_dropout, 0.0, 1.0);
    c.attention_dropout = r.number("attention_probs_dropout_prob", c.attention_dropout, 0.0, 1.0);
    c.initializer_range = r.number("initializer_range", c.initializer_range, 0.0, 1e9);
    c.num_classes = 2;
    if (const json::Value* l = r.get("id2label")) {
        if (!l->is_object() || l->empty()) r.fail("id2label", "must be a non-empty object");
        c.num_classes = int64_t(l->size());
    }
    c.num_classes = r.positive("num_labels", c.num_classes);
    if (c.image_size % c.patch_size != 0)
        r.fail("image_size", msg("(", c.image_size, ") is not a multiple of patch_size (", c.patch_size,
                                 "): transformers' conv drops the remainder pixels, moekd's patch embedding does not"));
    if (c.hidden_size % c.num_heads != 0)
        r.fail("num_attention_heads", msg("(", c.num_heads, ") must divide hidden_size (", c.hidden_size, ")"));
    return c;
}

/// moekd's ViTConfig as transformers' config.json fields (ViTForImageClassification).
template <class T = float>
json::Value vit_config_to_hf(const nn::ViTConfig& c) {
    json::Value id2label = json::Value::object(), label2id = json::Value::object();
    for (int64_t i = 0; i < c.num_classes; ++i) {
        id2label[std::to_string(i)] = "LABEL_" + std::to_string(i);
        label2id["LABEL_" + std::to_string(i)] = i;
    }
    return {{"architectures", json::Value::array({"ViTForImageClassification"})},
            {"model_type", "vit"},
            {"attention_probs_dropout_prob", c.attention_dropout},
            {"hidden_act", "gelu"},
            {"hidden_dropout_prob", c.hidden_dropout},
            {"hidden_size", c.hidden_size},
            {"id2label", std::move(id2label)},
            {"image_size", c.image_size},
            {"initializer_range", c.initializer_range},
            {"intermediate_size", c.intermediate_size},
            {"label2id", std::move(label2id)},
            {"layer_norm_eps", c.layer_norm_eps},
            {"num_attention_heads", c.num_heads},
            {"num_channels", c.num_channels},
            {"num_hidden_layers", c.num_layers},
            {"patch_size", c.patch_size},
            {"qkv_bias", true},
            {"torch_dtype", detail::hf_torch_dtype<T>()}};
}

/// config.json of a ViT checkpoint folder.
inline nn::ViTConfig read_hf_vit_config(const std::string& dir) {
    return vit_config_from_hf(detail::read_hf_config(dir, "load_hf_vit"), detail::hf_join(dir, "config.json"));
}

/// Writes `model` as transformers' ViTForImageClassification: dir/config.json +
/// dir/model.safetensors. A model with MoE FFNs or adapters is an error.
template <class T>
void save_hf_vit(const std::string& dir, const nn::ViT<T>& model) {
    const nn::ViTConfig& c = model.config();
    const auto entries = detail::hf_entries(
        model, [&](const std::string& n, const Shape& s) { return detail::vit_hf_name(n, s, c); },
        "ViTForImageClassification", "save_hf_vit");
    detail::hf_write(dir, vit_config_to_hf<T>(c), entries, "save_hf_vit");
}

/// Loads a checkpoint folder into an existing ViT (its config must give the file's shapes).
template <class T>
HFLoadReport load_hf_vit_into(nn::ViT<T>& model, const std::string& dir, const HFLoadOptions& opt = {}) {
    const nn::ViTConfig& c = model.config();
    const auto entries = detail::hf_entries(
        model, [&](const std::string& n, const Shape& s) { return detail::vit_hf_name(n, s, c); },
        "ViTForImageClassification", "load_hf_vit");
    return detail::hf_load_entries(entries, dir, "vit.", {"vit.pooler."}, "ViTForImageClassification", "load_hf_vit",
                                   opt);
}

/// Builds a ViT from dir/config.json and loads dir/model.safetensors into it (strict by default).
template <class T = float>
std::shared_ptr<nn::ViT<T>> load_hf_vit(const std::string& dir, const HFLoadOptions& opt = {},
                                        HFLoadReport* report = nullptr) {
    Generator gen(0);
    auto model = std::make_shared<nn::ViT<T>>(read_hf_vit_config(dir), gen);
    HFLoadReport rep = load_hf_vit_into(*model, dir, opt);
    if (report) *report = std::move(rep);
    return model;
}

}  // namespace moekd::io
