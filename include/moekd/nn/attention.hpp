// attention.hpp — multi-head scaled dot-product attention (self and cross) as fairseq's
// MultiheadAttention: parameters q_proj, k_proj, v_proj, out_proj (each a Linear D -> D).
//
// Efficient path, no per-head loops: the projections are one GEMM each over all B*T tokens; the
// heads are strided views (B, H, T, Dh) of those outputs (no copy), and the score and context
// products are single batched matmuls over the B*H (batch, head) pairs that read the views in
// place (one GEMM per pair, as bmm). The only copies are the scaled queries and the context
// gathered back to (B, T, D) for out_proj.
//
// Masks: key_padding_mask (B, S) uint8, 1 = padded key (ignored); causal = query t sees keys
// s <= t. Masked scores are -inf before the softmax, as fairseq and torch, so a query whose keys
// are ALL masked gets NaN (as torch); pad queries of a partly padded row are fine.
// Hooks: "q" and "k" — the per-head projections (B, H, T, Dh) and (B, H, S, Dh), before the
// 1/sqrt(Dh) scaling, with autograd history — and "output" (B, T, D).
#pragma once

#include <cmath>
#include <limits>
#include <memory>

#include "../ops/matmul.hpp"
#include "../ops/select.hpp"
#include "../ops/softmax.hpp"
#include "layers.hpp"

namespace moekd::nn {

/// The combined "do not attend" mask: (B, 1, T, S) with a key padding mask, (1, 1, T, S) for a
/// causal mask alone, undefined for none. 1 = masked. Built on the host (from a host copy of the
/// padding mask: a few bytes per token) and placed on `device`, the attention's.
inline Tensor<uint8_t> attention_mask(const Tensor<uint8_t>& key_padding_mask, bool causal, int64_t B, int64_t T,
                                      int64_t S, Device device = Device::CPU) {
    const bool pad = key_padding_mask.defined();
    if (!pad && !causal) return Tensor<uint8_t>();
    const int64_t nb = pad ? B : 1;
    Tensor<uint8_t> m = Tensor<uint8_t>::empty({nb, 1, T, S});
    const Tensor<uint8_t> kc = pad ? moekd::detail::contiguous_data(key_padding_mask.to(Device::CPU)) : Tensor<uint8_t>();
    uint8_t* pm = m.data();
    for (int64_t b = 0; b < nb; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t s = 0; s < S; ++s)
                pm[(b * T + t) * S + s] = ((pad && kc.data()[b * S + s] != 0) || (causal && s > t)) ? 1 : 0;
    return m.to(device);
}

template <class T = float>
class MultiHeadAttention : public Module<T> {
public:
    std::shared_ptr<Linear<T>> q_proj, k_proj, v_proj, out_proj;
    std::shared_ptr<Dropout<T>> dropout_module;  // on the attention probabilities

    /// embed_dim D = num_heads H * head_dim Dh. attention_dropout: on the softmax output.
    MultiHeadAttention(int64_t embed_dim, int64_t num_heads, Generator& gen, double attention_dropout = 0.0,
                       bool bias = true)
        : D_(embed_dim), H_(num_heads) {
        MOEKD_CHECK(embed_dim > 0 && num_heads > 0 && embed_dim % num_heads == 0, "MultiHeadAttention: embed_dim ",
                    embed_dim, " is not divisible by num_heads ", num_heads,
                    " (each head gets embed_dim / num_heads features)");
        q_proj = this->register_module("q_proj", std::make_shared<Linear<T>>(D_, D_, gen, bias));
        k_proj = this->register_module("k_proj", std::make_shared<Linear<T>>(D_, D_, gen, bias));
        v_proj = this->register_module("v_proj", std::make_shared<Linear<T>>(D_, D_, gen, bias));
        out_proj = this->register_module("out_proj", std::make_shared<Linear<T>>(D_, D_, gen, bias));
        dropout_module = this->register_module("dropout_module", std::make_shared<Dropout<T>>(attention_dropout, gen));
    }

    /// query: (B, T, D); key, value: (B, S, D); key_padding_mask: (B, S) uint8, 1 = pad, or
    /// undefined; causal: query t attends to keys s <= t (needs S == T).  -> (B, T, D)
    Tensor<T> forward(const Tensor<T>& query, const Tensor<T>& key, const Tensor<T>& value,
                      const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>(), bool causal = false) const {
        check_inputs(query, key, value, key_padding_mask, causal);
        const int64_t B = query.size(0), L = query.size(1), S = key.size(1), Dh = D_ / H_;
        // projections over all tokens, heads as strided views: (B, L, D) -> (B, H, L, Dh)
        auto heads = [&](const Tensor<T>& y, int64_t len) { return y.view({B, len, H_, Dh}).permute({0, 2, 1, 3}); };
        const Tensor<T> q = heads(q_proj->forward(query), L);  // (B, H, L, Dh)
        const Tensor<T> k = heads(k_proj->forward(key), S);    // (B, H, S, Dh)
        const Tensor<T> v = heads(v_proj->forward(value), S);  // (B, H, S, Dh)
        this->emit("q", q);
        this->emit("k", k);
        const T scaling = static_cast<T>(1.0 / std::sqrt(static_cast<double>(Dh)));
        // the 1/sqrt(Dh) scaling rides on the GEMM's alpha (no pass over q, fwd or bwd)
        Tensor<T> scores = moekd::detail::batched_mm(q, k.transpose(-1, -2), Shape{B, H_}, "matmul", scaling);  // (B, H, L, S)
        const Tensor<uint8_t> mask = attention_mask(key_padding_mask, causal, B, L, S, query.device());
        if (mask.defined()) scores = masked_fill(scores, mask, -std::numeric_limits<T>::infinity());
        const Tensor<T> probs = dropout_module->forward(softmax(scores, -1));          // (B, H, L, S)
        const Tensor<T> ctx = matmul(probs, v).permute({0, 2, 1, 3}).reshape({B, L, D_});  // (B, L, D)
        Tensor<T> out = out_proj->forward(ctx);
        this->emit("output", out);
        return out;
    }

    /// Self-attention: x: (B, T, D), key_padding_mask: (B, T) or undefined -> (B, T, D).
    Tensor<T> self_attention(const Tensor<T>& x, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>(),
                             bool causal = false) const {
        return forward(x, x, x, key_padding_mask, causal);
    }

    int64_t embed_dim() const { return D_; }
    int64_t num_heads() const { return H_; }
    int64_t head_dim() const { return D_ / H_; }

private:
    void check_inputs(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<uint8_t>& kpm,
                      bool causal) const {
        auto shape_of = [](const auto& t) { return t.defined() ? t.shape() : Shape{}; };
        const auto ok3 = [&](const Tensor<T>& t) { return t.defined() && t.dim() == 3 && t.size(2) == D_; };
        MOEKD_CHECK(ok3(q) && ok3(k) && ok3(v), "MultiHeadAttention(D=", D_, ", H=", H_, "): query ", shape_of(q),
                    ", key ", shape_of(k), ", value ", shape_of(v), " must all be (B, len, ", D_, ")");
        MOEKD_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == v.size(1),
                    "MultiHeadAttention(D=", D_, ", H=", H_, "): query ", q.shape(), ", key ", k.shape(), ", value ",
                    v.shape(), ": batch sizes must agree and key and value must have the same length");
        if (kpm.defined())
            MOEKD_CHECK(kpm.dim() == 2 && kpm.size(0) == k.size(0) && kpm.size(1) == k.size(1),
                        "MultiHeadAttention(D=", D_, ", H=", H_, "): key_padding_mask ", kpm.shape(),
                        " must be (B, S) = (", k.size(0), ", ", k.size(1), ") for key ", k.shape());
        MOEKD_CHECK(!causal || q.size(1) == k.size(1), "MultiHeadAttention(D=", D_, ", H=", H_,
                    "): a causal mask needs as many queries as keys, got query ", q.shape(), " and key ", k.shape());
    }

    int64_t D_, H_;
};

}  // namespace moekd::nn
