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
//
// Incremental decoding (inference only, under NoGrad; nn/decode.hpp drives it): an
// AttentionCache holds one attention's keys and values as (B, H, cap, Dh) buffers. forward_step
// appends the new token's key/value to a self-attention cache and attends over all of them;
// forward_cached attends over keys/values computed once (cache_kv: the encoder output of a
// cross-attention). A cache's rows are the batch rows; a cross cache keeps one row per sentence
// and maps each batch row to its sentence (`rows`), so beams share one copy. Padded keys (a
// padded source; a padding token the decoder was fed) are masked as key_padding_mask does. On the CPU
// the single-query attention is one fused loop per (row, head); on a device it is the ops
// (batched_mm, masked_fill, softmax, matmul) on views of the buffers. Only the "output" hook fires.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

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

/// One attention's cached keys and values (see the top of the file).
template <class T = float>
struct AttentionCache {
    Tensor<T> k, v;             // (R, H, cap, Dh): positions [0, len) are filled
    int64_t len = 0;
    Tensor<uint8_t> pad;        // (R, cap) host, 1 = a padded (masked) key
    bool any_pad = false;       // whether pad holds a 1 (else no mask is applied)
    bool mapped = false;        // a cross cache: batch row b reads cache row rows[b] (beams share)
    std::vector<int64_t> rows;  // (mapped) batch row -> cache row
    // device path of a mapped cache: k, v, pad gathered to the batch rows once per reorder
    Tensor<T> k_rows, v_rows;
    Tensor<uint8_t> mask_rows;  // (B, 1, 1, S) on the device, or undefined
    bool rows_dirty = true;

    int64_t batch() const { return mapped ? int64_t(rows.size()) : (k.defined() ? k.size(0) : 0); }
    int64_t capacity() const { return k.defined() ? k.size(2) : 0; }

    /// Keeps batch rows `keep` (new row i = old row keep[i]), for rows that move, repeat or
    /// finish. A mapped (cross) cache only changes its map; a self cache copies its filled part.
    void reorder(const std::vector<int64_t>& keep) {
        if (!k.defined()) return;
        rows_dirty = true;
        if (mapped) {
            std::vector<int64_t> r(keep.size());
            for (size_t i = 0; i < keep.size(); ++i) r[i] = rows[size_t(keep[i])];
            rows = std::move(r);
            return;
        }
        const int64_t H = k.size(1), cap = k.size(2), Dh = k.size(3), n = int64_t(keep.size());
        Tensor<uint8_t> np = Tensor<uint8_t>::zeros({n, cap});
        any_pad = false;
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < len; ++j) any_pad |= (np.data()[i * cap + j] = pad.data()[keep[size_t(i)] * cap + j]) != 0;
        pad = np;
        if (k.device() == Device::CPU) {
            auto move = [&](const Tensor<T>& src) {
                Tensor<T> dst = Tensor<T>::empty({n, H, cap, Dh});
                for (int64_t i = 0; i < n; ++i)
                    for (int64_t h = 0; h < H; ++h)
                        std::memcpy(dst.data() + (i * H + h) * cap * Dh, src.data() + (keep[size_t(i)] * H + h) * cap * Dh,
                                    sizeof(T) * size_t(len * Dh));
                return dst;
            };
            k = move(k), v = move(v);
        } else {
            const Tensor<int64_t> idx = Tensor<int64_t>::from_vector(keep, Shape{n}).to(k.device());
            k = moekd::detail::contiguous_data(index_select(k, 0, idx)).detach();
            v = moekd::detail::contiguous_data(index_select(v, 0, idx)).detach();
        }
    }
};

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

    // ---- incremental decoding (inference: call under NoGrad) ----
    /// A self-attention cache for B rows and up to `capacity` positions (it grows if exceeded).
    AttentionCache<T> empty_cache(int64_t B, int64_t capacity, Device device) const {
        const int64_t cap = std::max<int64_t>(capacity, 1);
        AttentionCache<T> c;
        c.k = Tensor<T>::zeros({B, H_, cap, D_ / H_}, device);
        c.v = Tensor<T>::zeros({B, H_, cap, D_ / H_}, device);
        c.pad = Tensor<uint8_t>::zeros({B, cap});
        return c;
    }
    /// Keys and values of `kv` (R, S, D), computed once (a cross-attention's encoder output);
    /// key_padding_mask: (R, S), 1 = pad, or undefined. Batch rows map to cache rows 1:1 until
    /// reorder() maps several to one.
    AttentionCache<T> cache_kv(const Tensor<T>& kv, const Tensor<uint8_t>& key_padding_mask = Tensor<uint8_t>()) const {
        check_inputs(kv, kv, kv, key_padding_mask, false);
        const int64_t R = kv.size(0), S = kv.size(1), Dh = D_ / H_;
        auto heads = [&](const Tensor<T>& y) {
            return moekd::detail::contiguous_data(y.view({R, S, H_, Dh}).permute({0, 2, 1, 3})).detach();
        };
        AttentionCache<T> c;
        c.k = heads(k_proj->forward(kv));
        c.v = heads(v_proj->forward(kv));
        c.len = S;
        c.mapped = true;
        for (int64_t r = 0; r < R; ++r) c.rows.push_back(r);
        c.pad = key_padding_mask.defined() ? moekd::detail::contiguous_data(key_padding_mask.to(Device::CPU)).clone()
                                           : Tensor<uint8_t>::zeros({R, S});
        for (int64_t i = 0; i < R * S; ++i) c.any_pad |= c.pad.data()[i] != 0;
        return c;
    }
    /// Self-attention of one new position per row: x: (B, 1, D), the rows' newest token; its key
    /// and value are appended to `cache` (which holds every earlier position of the row) and it
    /// attends to all of them (causal by construction). pad: B host flags, 1 = the new token is
    /// padding (its key is masked from now on, as a key_padding_mask would), or null.  -> (B, 1, D)
    Tensor<T> forward_step(const Tensor<T>& x, AttentionCache<T>& cache, const uint8_t* pad = nullptr) const {
        MOEKD_CHECK(x.defined() && x.dim() == 3 && x.size(1) == 1 && x.size(2) == D_ && cache.k.defined() &&
                        !cache.mapped && cache.k.size(0) == x.size(0),
                    "MultiHeadAttention(D=", D_, ", H=", H_, ")::forward_step: input ", x.defined() ? x.shape() : Shape{},
                    " must be (B, 1, ", D_, ") with a self-attention cache of B rows (cache ",
                    cache.k.defined() ? cache.k.shape() : Shape{}, ")");
        const int64_t B = x.size(0), Dh = D_ / H_;
        if (cache.len == cache.capacity()) {  // grow: double the positions
            AttentionCache<T> g = empty_cache(B, 2 * cache.capacity(), x.device());
            for (int w = 0; w < 2; ++w) {
                Tensor<T> dst = (w == 0 ? g.k : g.v).narrow(2, 0, cache.len);
                moekd::detail::copy_into(dst, (w == 0 ? cache.k : cache.v).narrow(2, 0, cache.len));
            }
            for (int64_t b = 0; b < B; ++b)
                std::copy_n(cache.pad.data() + b * cache.len, cache.len, g.pad.data() + b * g.capacity());
            g.len = cache.len;
            g.any_pad = cache.any_pad;
            cache = std::move(g);
        }
        const Tensor<T> x2 = x.view({B, D_});
        const Tensor<T> q = q_proj->forward(x2), k = k_proj->forward(x2), v = v_proj->forward(x2);  // (B, D)
        for (int w = 0; w < 2; ++w) {
            Tensor<T> dst = (w == 0 ? cache.k : cache.v).narrow(2, cache.len, 1);  // (B, H, 1, Dh)
            moekd::detail::copy_into(dst, (w == 0 ? k : v).view({B, 1, H_, Dh}).permute({0, 2, 1, 3}));
        }
        if (pad)
            for (int64_t b = 0; b < B; ++b) cache.any_pad |= (cache.pad.data()[b * cache.capacity() + cache.len] = pad[b]) != 0;
        ++cache.len;
        return attend(q, cache, B);
    }
    /// Attention over keys/values cached once (cache_kv): query: (B, 1, D) -> (B, 1, D).
    Tensor<T> forward_cached(const Tensor<T>& query, AttentionCache<T>& cache) const {
        MOEKD_CHECK(query.defined() && query.dim() == 3 && query.size(1) == 1 && query.size(2) == D_ &&
                        cache.k.defined() && cache.batch() == query.size(0),
                    "MultiHeadAttention(D=", D_, ", H=", H_, ")::forward_cached: query ",
                    query.defined() ? query.shape() : Shape{}, " must be (B, 1, ", D_, ") for a cache of ", cache.batch(),
                    " rows");
        const int64_t B = query.size(0);
        return attend(q_proj->forward(query.view({B, D_})), cache, B);
    }

    int64_t embed_dim() const { return D_; }
    int64_t num_heads() const { return H_; }
    int64_t head_dim() const { return D_ / H_; }

private:
    /// CPU single-query attention: for batch row b and head h, with cache row r = rows[b] (or b),
    /// ctx[b, h*Dh:(h+1)*Dh] = softmax_s(scale * q_bh . K[r, h, s] (-inf where pad[r * ldp + s]))
    /// @ V[r, h, :L].  q: (B, D) rows of stride ldq; K, V: (R, H, cap, Dh) contiguous; pad: null
    /// for none; ctx: (B, D) contiguous.
    static void attend_one_query_cpu(const T* q, int64_t ldq, const T* K, const T* V, const uint8_t* pad, int64_t ldp,
                                     const int64_t* rows, int64_t B, int64_t H, int64_t cap, int64_t Dh, int64_t L,
                                     T scale, T* ctx) {
        moekd::detail::parallel_for(B * H, 4, [&](int64_t p0, int64_t p1) {
            std::vector<T> s(static_cast<size_t>(L));
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t b = p / H, h = p % H, r = rows ? rows[b] : b;
                const T* qb = q + b * ldq + h * Dh;
                const T* kb = K + (r * H + h) * cap * Dh;
                const T* vb = V + (r * H + h) * cap * Dh;
                T mx = -std::numeric_limits<T>::infinity();
                for (int64_t j = 0; j < L; ++j) {
                    if (pad && pad[r * ldp + j]) { s[size_t(j)] = -std::numeric_limits<T>::infinity(); continue; }
                    const T* kj = kb + j * Dh;
                    T part[8] = {};  // eight running sums (one SIMD register): the dot vectorises
                    int64_t d = 0;
                    for (; d + 8 <= Dh; d += 8)
                        for (int u = 0; u < 8; ++u) part[u] += qb[d + u] * kj[d + u];
                    T acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
                    for (; d < Dh; ++d) acc += qb[d] * kj[d];
                    s[size_t(j)] = acc * scale;
                    mx = std::max(mx, s[size_t(j)]);
                }
                T sum = 0;
                for (int64_t j = 0; j < L; ++j) sum += (s[size_t(j)] = std::exp(s[size_t(j)] - mx));
                const T inv = T(1) / sum;  // all keys masked: 0 / 0 = NaN, as the full forward
                T* out = ctx + b * H * Dh + h * Dh;
                std::fill_n(out, Dh, T(0));
                for (int64_t j = 0; j < L; ++j) {
                    const T w = s[size_t(j)] * inv;
                    for (int64_t d = 0; d < Dh; ++d) out[d] += w * vb[j * Dh + d];
                }
            }
        });
    }
    /// q: (B, D) projected queries -> out_proj(attention over cache positions [0, len)) (B, 1, D)
    Tensor<T> attend(const Tensor<T>& q, AttentionCache<T>& c, int64_t B) const {
        const int64_t Dh = D_ / H_, L = c.len;
        const T scaling = static_cast<T>(1.0 / std::sqrt(static_cast<double>(Dh)));
        Tensor<T> ctx;
        if (q.device() == Device::CPU) {
            const Tensor<T> qc = moekd::detail::contiguous_data(q);
            ctx = Tensor<T>::empty({B, D_});
            attend_one_query_cpu(qc.data(), D_, c.k.data(), c.v.data(), c.any_pad ? c.pad.data() : nullptr, c.pad.size(1),
                                 c.mapped ? c.rows.data() : nullptr, B, H_, c.capacity(), Dh, L, scaling, ctx.data());
        } else {
            Tensor<T> K = c.k, V = c.v;
            Tensor<uint8_t> mask;
            auto host_mask = [&](const std::vector<int64_t>* r) {  // (B, L) of the batch rows
                Tensor<uint8_t> m = Tensor<uint8_t>::empty({B, L});
                for (int64_t b = 0; b < B; ++b)
                    std::copy_n(c.pad.data() + (r ? (*r)[size_t(b)] : b) * c.pad.size(1), L, m.data() + b * L);
                return attention_mask(m, false, B, 1, L, q.device());
            };
            if (c.mapped) {  // gather the batch rows once per reorder
                if (c.rows_dirty || !c.k_rows.defined()) {
                    const Tensor<int64_t> idx = Tensor<int64_t>::from_vector(c.rows, Shape{B}).to(q.device());
                    c.k_rows = index_select(c.k, 0, idx).detach();
                    c.v_rows = index_select(c.v, 0, idx).detach();
                    c.mask_rows = c.any_pad ? host_mask(&c.rows) : Tensor<uint8_t>();
                    c.rows_dirty = false;
                }
                K = c.k_rows, V = c.v_rows, mask = c.mask_rows;
            } else if (c.any_pad) {
                mask = host_mask(nullptr);
            }
            const Tensor<T> qh = q.view({B, 1, H_, Dh}).permute({0, 2, 1, 3});  // (B, H, 1, Dh)
            const Tensor<T> Kl = K.narrow(2, 0, L), Vl = V.narrow(2, 0, L);      // (B, H, L, Dh)
            Tensor<T> scores = moekd::detail::batched_mm(qh, Kl.transpose(-1, -2), Shape{B, H_}, "matmul", scaling);
            if (mask.defined()) scores = masked_fill(scores, mask, -std::numeric_limits<T>::infinity());
            ctx = matmul(softmax(scores, -1), Vl).permute({0, 2, 1, 3}).reshape({B, D_});
        }
        Tensor<T> out = out_proj->forward(ctx).view({B, 1, D_});
        this->emit("output", out);
        return out;
    }

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
