// hf_interop.cpp — the C++ half of the transformers checkpoint proof (tests/hf_interop/
// hf_interop.py is the Python half, using the real `transformers` package):
//   hf_interop write-bert <dir>   a random BERT -> <dir>/bert_cpp/ (save_hf_bert), its inputs in
//                                 <dir>/bert_cpp_inputs.safetensors and its MLM logits in
//                                 <dir>/bert_cpp_logits.safetensors, for `hf_interop.py check-bert`
//   hf_interop check-bert <dir>   load_hf_bert(<dir>/bert_py) (written by save_pretrained), run it
//                                 on <dir>/bert_py_io.safetensors' inputs, compare with the logits
//                                 transformers computed there; the same for <dir>/bert_py_pretraining
//                                 (a BertForPreTraining: its pooler and NSP head are skipped)
//   write-vit / check-vit         the same for the ViT (pixel_values, classification logits)
// Inputs follow transformers' conventions (attention_mask: 1 = keep); logits agree to <= 1e-5.
#include <cmath>
#include <cstdio>
#include <string>

#include <moekd/io/hf.hpp>
#include "../hf_perturb.hpp"

using namespace moekd;

namespace {

constexpr double kTol = 1e-5;

using moekd::testing::perturb;

/// attention_mask (B, T) int64, 1 = keep -> moekd's padding mask, 1 = pad (undefined if none).
Tensor<uint8_t> pad_mask(const Tensor<int64_t>& attention_mask) {
    Tensor<uint8_t> m = Tensor<uint8_t>::empty(attention_mask.shape());
    bool any = false;
    for (int64_t i = 0; i < m.numel(); ++i) any |= (m.data()[i] = attention_mask.data()[i] == 0 ? 1 : 0) != 0;
    return any ? m : Tensor<uint8_t>();
}

int compare(const char* what, const Tensor<float>& got, const Tensor<float>& want) {
    if (got.shape() != want.shape()) {
        std::printf("%s: MISMATCH shape moekd %s vs transformers %s\n", what, msg(got.shape()).c_str(), msg(want.shape()).c_str());
        return 1;
    }
    double worst = 0;
    const auto a = got.to_vector(), b = want.to_vector();
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    const bool ok = worst <= kTol && std::isfinite(worst);
    std::printf("%s: logits %s, max |moekd - transformers| = %.3g (tolerance %.0e) %s\n", what, msg(got.shape()).c_str(),
                worst, kTol, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}

int write_bert(const std::string& dir) {
    nn::BertConfig c;
    c.vocab_size = 50, c.hidden_size = 32, c.num_layers = 2, c.num_heads = 4, c.intermediate_size = 64;
    c.max_position_embeddings = 24, c.type_vocab_size = 2, c.pad_token_id = 0, c.layer_norm_eps = 1e-12;
    Generator gen(11);
    nn::BertEncoder<float> m(c, gen);
    perturb(m, 12);
    io::save_hf_bert(dir + "/bert_cpp", m);
    // (B, T) = (3, 10); the last row padded after 6 tokens
    const int64_t B = 3, T = 10;
    Tensor<int64_t> ids = Tensor<int64_t>::empty({B, T}), types = Tensor<int64_t>::empty({B, T}),
                    keep = Tensor<int64_t>::empty({B, T});
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t) {
            const bool pad = b == 2 && t >= 6;
            ids.data()[b * T + t] = pad ? 0 : 1 + (b * 17 + t * 7) % 49;
            types.data()[b * T + t] = t >= 5 ? 1 : 0;
            keep.data()[b * T + t] = pad ? 0 : 1;
        }
    m.eval();
    const Tensor<float> logits = m.mlm_logits(m.forward(ids, types, pad_mask(keep)));  // (B, T, V)
    io::write_safetensors(dir + "/bert_cpp_inputs.safetensors",
                          std::map<std::string, Tensor<int64_t>>{{"input_ids", ids}, {"token_type_ids", types},
                                                                 {"attention_mask", keep}});
    io::write_safetensors(dir + "/bert_cpp_logits.safetensors", std::map<std::string, Tensor<float>>{{"logits", logits}});
    std::printf("write-bert: %s/bert_cpp (%lld tensors in the HF layout), logits %s\n", dir.c_str(),
                (long long)m.state_dict().size() - 2, msg(logits.shape()).c_str());
    return 0;
}

int check_bert(const std::string& dir) {
    io::HFLoadReport rep;
    auto m = io::load_hf_bert(dir + "/bert_py", {}, &rep);
    const io::SafetensorsFile f = io::read_safetensors(dir + "/bert_py_io.safetensors");
    const Tensor<int64_t> ids = io::to_tensor<int64_t>(f.tensors.at("input_ids"), "input_ids");
    const Tensor<int64_t> types = io::to_tensor<int64_t>(f.tensors.at("token_type_ids"), "token_type_ids");
    const Tensor<int64_t> keep = io::to_tensor<int64_t>(f.tensors.at("attention_mask"), "attention_mask");
    const Tensor<float> want = io::to_tensor<float>(f.tensors.at("logits"), "logits");
    m->eval();
    const nn::BertConfig& c = m->config();
    std::printf("check-bert: loaded %zu tensors (%zu skipped) of a BERT V=%lld D=%lld L=%lld H=%lld F=%lld "
                "types=%lld pad=%lld eps=%g\n",
                rep.loaded.size(), rep.skipped.size(), (long long)c.vocab_size, (long long)c.hidden_size,
                (long long)c.num_layers, (long long)c.num_heads, (long long)c.intermediate_size,
                (long long)c.type_vocab_size, (long long)c.pad_token_id, c.layer_norm_eps);
    int bad = compare("check-bert", m->mlm_logits(m->forward(ids, types, pad_mask(keep))), want);
    // a BertForPreTraining checkpoint: strict load, its pooler and NSP head skipped and listed
    io::HFLoadReport prep;
    auto pre = io::load_hf_bert(dir + "/bert_py_pretraining", {}, &prep);
    pre->eval();
    std::string skipped;
    for (const auto& s : prep.skipped) {  // two appends: GCC 12 warns (-Wrestrict, falsely) on " " + substr
        skipped += ' ';
        skipped += s.substr(0, s.find(' '));
    }
    std::printf("check-bert (BertForPreTraining): skipped%s\n", skipped.c_str());
    if (prep.skipped.size() != 4) {
        std::printf("check-bert (BertForPreTraining): MISMATCH expected 4 skipped tensors (pooler, NSP head)\n");
        ++bad;
    }
    bad += compare("check-bert (BertForPreTraining)", pre->mlm_logits(pre->forward(ids, types, pad_mask(keep))),
                   io::to_tensor<float>(f.tensors.at("pretraining_logits"), "pretraining_logits"));
    return bad ? 1 : 0;
}

int write_vit(const std::string& dir) {
    nn::ViTConfig c;
    c.image_size = 8, c.patch_size = 2, c.num_channels = 3, c.hidden_size = 32, c.num_layers = 2, c.num_heads = 4;
    c.intermediate_size = 48, c.num_classes = 4, c.layer_norm_eps = 1e-12;
    Generator gen(13);
    nn::ViT<float> m(c, gen);
    perturb(m, 14);
    io::save_hf_vit(dir + "/vit_cpp", m);
    const Tensor<float> images = Tensor<float>::randn({2, 3, 8, 8}, gen);
    m.eval();
    const Tensor<float> logits = m.forward(images);  // (B, classes)
    io::write_safetensors(dir + "/vit_cpp_io.safetensors",
                          std::map<std::string, Tensor<float>>{{"pixel_values", images}, {"logits", logits}});
    std::printf("write-vit: %s/vit_cpp, logits %s\n", dir.c_str(), msg(logits.shape()).c_str());
    return 0;
}

int check_vit(const std::string& dir) {
    auto m = io::load_hf_vit(dir + "/vit_py");
    const auto f = io::load_safetensors<float>(dir + "/vit_py_io.safetensors");
    m->eval();
    const nn::ViTConfig& c = m->config();
    std::printf("check-vit: a ViT image=%lld patch=%lld C=%lld D=%lld L=%lld H=%lld F=%lld classes=%lld eps=%g\n",
                (long long)c.image_size, (long long)c.patch_size, (long long)c.num_channels, (long long)c.hidden_size,
                (long long)c.num_layers, (long long)c.num_heads, (long long)c.intermediate_size,
                (long long)c.num_classes, c.layer_norm_eps);
    return compare("check-vit", m->forward(f.at("pixel_values")), f.at("logits"));
}

}  // namespace

int main(int argc, char** argv) {
    const std::string cmd = argc == 3 ? argv[1] : "";
    try {
        if (cmd == "write-bert") return write_bert(argv[2]);
        if (cmd == "check-bert") return check_bert(argv[2]);
        if (cmd == "write-vit") return write_vit(argv[2]);
        if (cmd == "check-vit") return check_vit(argv[2]);
    } catch (const Error& e) {
        std::fprintf(stderr, "hf_interop %s: %s\n", cmd.c_str(), e.what());
        return 1;
    }
    std::fprintf(stderr, "usage: hf_interop write-bert|check-bert|write-vit|check-vit <dir>\n");
    return 2;
}
