// decode_bench_torch.cpp — the libtorch side of the greedy-decoding benchmark (bench/decode_bench.cpp
// is the moekd side and the driver). Its own translation unit, compiled with libtorch's flags;
// the driver talks to it through the plain functions at the bottom (raw buffers, parameter
// names as moekd's state_dict spells them), so moekd and torch headers never meet.
//
// The decoder: fairseq's post-LN TransformerDecoder as moekd builds it (token embedding x sqrt(D)
// + the sinusoidal position row handed over by the driver, L layers of causal self-attention,
// cross-attention over the encoder output and a ReLU FFN, tied output projection), written the
// efficient way for incremental decoding in libtorch under InferenceMode: the encoder output's
// cross-attention keys/values computed once, a preallocated (B, H, T, Dh) self-attention
// key/value cache written in place each step (no torch::cat), each step on the new token only:
// addmm projections, heads as views, matmul / softmax / matmul, layer_norm, argmax on the logits.
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

struct TorchDecoder {
    int64_t V, D, H, F, L, B, S, T;
    std::map<std::string, torch::Tensor> p;  // moekd's names: layers.<i>.self_attn.q_proj.weight ...
    torch::Tensor enc, pos;                  // (B, S, D), (T, D)
    torch::Tensor last_logits;               // (B, V) of the last step

    const torch::Tensor& w(const std::string& n) const { return p.at(n); }
    torch::Tensor lin(const torch::Tensor& x, const std::string& n) const {
        return torch::addmm(w(n + ".bias"), x, w(n + ".weight").t());
    }
    torch::Tensor ln(const torch::Tensor& x, const std::string& n) const {
        return torch::layer_norm(x, {D}, w(n + ".weight"), w(n + ".bias"), 1e-5);
    }
    /// q (B, D) over keys/values (B, H, len, Dh) -> (B, D)
    torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) const {
        const int64_t Dh = D / H;
        auto qh = q.view({B, H, 1, Dh});
        auto s = torch::matmul(qh, k.transpose(-1, -2)).mul_(1.0 / std::sqrt(double(Dh)));
        return torch::matmul(torch::softmax(s, -1), v).view({B, D});
    }

    /// Greedy decoding of `steps` tokens from bos for every row; tokens (B, steps) row-major.
    void greedy(int64_t steps, int64_t bos, int64_t* tokens) {
        torch::InferenceMode guard;
        const int64_t Dh = D / H;
        const double scale = std::sqrt(double(D));
        std::vector<torch::Tensor> ck, cv, sk, sv;
        for (int64_t i = 0; i < L; ++i) {
            const std::string n = "layers." + std::to_string(i) + ".encoder_attn.";
            auto e2 = enc.view({B * S, D});
            ck.push_back(lin(e2, n + "k_proj").view({B, S, H, Dh}).transpose(1, 2).contiguous());
            cv.push_back(lin(e2, n + "v_proj").view({B, S, H, Dh}).transpose(1, 2).contiguous());
            sk.push_back(torch::empty({B, H, steps, Dh}));
            sv.push_back(torch::empty({B, H, steps, Dh}));
        }
        const auto& emb = w("embed_tokens.weight");
        auto ids = torch::full({B}, bos, torch::kInt64);
        auto out = torch::empty({B, steps}, torch::kInt64);
        for (int64_t t = 0; t < steps; ++t) {
            auto x = emb.index_select(0, ids).mul_(scale).add_(pos[t]);  // (B, D)
            for (int64_t i = 0; i < L; ++i) {
                const std::string n = "layers." + std::to_string(i) + ".";
                auto q = lin(x, n + "self_attn.q_proj");
                sk[i].select(2, t).copy_(lin(x, n + "self_attn.k_proj").view({B, H, Dh}));
                sv[i].select(2, t).copy_(lin(x, n + "self_attn.v_proj").view({B, H, Dh}));
                auto a = attend(q, sk[i].narrow(2, 0, t + 1), sv[i].narrow(2, 0, t + 1));
                x = ln(x + lin(a, n + "self_attn.out_proj"), n + "self_attn_layer_norm");
                auto c = attend(lin(x, n + "encoder_attn.q_proj"), ck[i], cv[i]);
                x = ln(x + lin(c, n + "encoder_attn.out_proj"), n + "encoder_attn_layer_norm");
                auto h = lin(x, n + "ffn.fc1").relu_();
                x = ln(x + lin(h, n + "ffn.fc2"), n + "final_layer_norm");
            }
            auto logits = torch::mm(x, emb.t());  // tied output projection
            ids = logits.argmax(-1);
            out.select(1, t).copy_(ids);
            if (t == steps - 1) last_logits = logits;
        }
        std::memcpy(tokens, out.data_ptr<int64_t>(), sizeof(int64_t) * size_t(B * steps));
    }
};

}  // namespace

// ---- the driver's interface (bench/decode_bench.cpp) -----------------------------------------
void* dec_torch_create(int64_t V, int64_t D, int64_t H, int64_t F, int64_t L, int64_t B, int64_t S, int64_t T,
                       const float* enc, const float* pos) {
    auto* d = new TorchDecoder{V, D, H, F, L, B, S, T, {}, {}, {}, {}};
    d->enc = torch::from_blob(const_cast<float*>(enc), {B, S, D}, torch::kFloat32).clone();
    d->pos = torch::from_blob(const_cast<float*>(pos), {T, D}, torch::kFloat32).clone();
    return d;
}
void dec_torch_set(void* h, const std::string& name, const std::vector<int64_t>& shape, const float* data) {
    static_cast<TorchDecoder*>(h)->p[name] = torch::from_blob(const_cast<float*>(data), shape, torch::kFloat32).clone();
}
void dec_torch_destroy(void* h) { delete static_cast<TorchDecoder*>(h); }
void dec_torch_greedy(void* h, int64_t steps, int64_t bos, int64_t* tokens) {
    static_cast<TorchDecoder*>(h)->greedy(steps, bos, tokens);
}
void dec_torch_last_logits(void* h, float* out) {
    auto l = static_cast<TorchDecoder*>(h)->last_logits.contiguous();
    std::memcpy(out, l.data_ptr<float>(), sizeof(float) * size_t(l.numel()));
}
void dec_torch_set_threads(int aten_threads) { at::set_num_threads(aten_threads); }
std::string dec_torch_version() { return TORCH_VERSION; }
