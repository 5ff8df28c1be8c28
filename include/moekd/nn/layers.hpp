// layers.hpp — the basic layers every model here is built from: Linear, Embedding, positions
// (fairseq's sinusoidal table and learned ones), LayerNorm, Dropout, and the activation switch.
//
// Each layer is an nn::Module with PyTorch's parameter names and shapes (Linear.weight is
// (out, in)), initialised like torch from an explicit Generator, so a state dict can be moved to
// and from PyTorch unchanged (tests/parity checks this). Every forward emits "output" to hooks.
// Reference-grade code: the work is in the ops (linear, embedding, layer_norm, dropout).
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include "../ops/dropout.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/matmul.hpp"
#include "../ops/norm.hpp"
#include "../ops/view.hpp"
#include "module.hpp"

namespace moekd::nn {

/// The nonlinearity of a feed-forward block or adapter.
enum class Activation { ReLU, GELU };

inline const char* activation_name(Activation a) { return a == Activation::ReLU ? "relu" : "gelu"; }

template <class T>
Tensor<T> activate(const Tensor<T>& x, Activation a) {
    return a == Activation::ReLU ? relu(x) : gelu(x);  // gelu: exact erf form, as torch and BERT
}

// ---- Linear ------------------------------------------------------------------------------------
/// y = x W^T + b as torch.nn.Linear.   weight: (out, in), bias: (out)
/// Init as torch: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
template <class T = float>
class Linear : public Module<T> {
public:
    Tensor<T> weight, bias;  // bias undefined when built without one

    Linear(int64_t in_features, int64_t out_features, Generator& gen, bool with_bias = true)
        : in_(in_features), out_(out_features) {
        MOEKD_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in_features ",
                    in_features, ", out_features ", out_features);
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
        weight = this->register_parameter("weight", Tensor<T>::rand({out_features, in_features}, gen, -bound, bound));
        if (with_bias) bias = this->register_parameter("bias", Tensor<T>::rand({out_features}, gen, -bound, bound));
    }

    /// A Linear whose weight (and bias) are parameters registered elsewhere: an output projection
    /// tied to an embedding. They appear in the state dict under this module's names too.
    static std::shared_ptr<Linear> tied(const Tensor<T>& shared_weight, const Tensor<T>& shared_bias = Tensor<T>()) {
        MOEKD_CHECK(shared_weight.defined() && shared_weight.dim() == 2, "Linear::tied: the weight must be 2-D (out, in)");
        std::shared_ptr<Linear> l(new Linear(shared_weight.size(1), shared_weight.size(0)));
        l->weight = shared_weight;
        l->share_parameter("weight", shared_weight);
        if (shared_bias.defined()) {
            MOEKD_CHECK(shared_bias.dim() == 1 && shared_bias.size(0) == shared_weight.size(0), "Linear::tied: bias ",
                        shared_bias.shape(), " does not fit weight ", shared_weight.shape());
            l->bias = shared_bias;
            l->share_parameter("bias", shared_bias);
        }
        return l;
    }

    // x: (*, in) -> (*, out)
    Tensor<T> forward(const Tensor<T>& x) const {
        MOEKD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_, "Linear(", in_, " -> ", out_, "): input ",
                    x.defined() ? x.shape() : Shape{}, " must end in in_features = ", in_);
        Tensor<T> y = linear(x, weight, bias);
        this->emit("output", y);
        return y;
    }
    /// relu(forward(x)) in one op (the ReLU applied in place on the GEMM output). Emits no
    /// "output" (the pre-activation value never exists): callers use it only without hooks.
    Tensor<T> forward_relu(const Tensor<T>& x) const {
        MOEKD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_, "Linear(", in_, " -> ", out_, "): input ",
                    x.defined() ? x.shape() : Shape{}, " must end in in_features = ", in_);
        return linear(x, weight, bias, true);
    }
    int64_t in_features() const { return in_; }
    int64_t out_features() const { return out_; }

private:
    Linear(int64_t in, int64_t out) : in_(in), out_(out) {}
    int64_t in_, out_;
};

// ---- Embedding ---------------------------------------------------------------------------------
/// Rows of a (V, D) table looked up by id, as torch.nn.Embedding. Init N(0, std^2) (torch: std 1;
/// fairseq: D^-0.5; BERT: 0.02); the padding row is zero and never gets a gradient.
template <class T = float>
class Embedding : public Module<T> {
public:
    Tensor<T> weight;  // (V, D)

    Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, int64_t padding_idx = -1, double std = 1.0)
        : padding_idx_(padding_idx) {
        MOEKD_CHECK(num_embeddings > 0 && dim > 0, "Embedding: sizes must be positive, got (", num_embeddings, ", ",
                    dim, ")");
        MOEKD_CHECK(padding_idx >= -1 && padding_idx < num_embeddings, "Embedding(", num_embeddings, ", ", dim,
                    "): padding_idx ", padding_idx, " out of range (use -1 for none)");
        Tensor<T> w = Tensor<T>::randn({num_embeddings, dim}, gen, 0.0, std);
        if (padding_idx >= 0) std::fill_n(w.data() + padding_idx * dim, dim, T(0));
        weight = this->register_parameter("weight", w);
    }
    // ids: (*) int64 in [0, V) -> (*, D)
    Tensor<T> forward(const Tensor<int64_t>& ids) const {
        Tensor<T> y = embedding(weight, ids, padding_idx_);
        this->emit("output", y);
        return y;
    }
    int64_t padding_idx() const { return padding_idx_; }
    int64_t num_embeddings() const { return weight.size(0); }
    int64_t dim() const { return weight.size(1); }

private:
    int64_t padding_idx_;
};

// ---- positions ---------------------------------------------------------------------------------
/// fairseq's SinusoidalPositionalEmbedding: no parameters. Non-pad tokens get positions
/// padding_idx + 1, padding_idx + 2, ... (counting only non-pad tokens, so left and right padding
/// agree); pad tokens get a zero row. Row p = [sin(p f_0) .. sin(p f_{h-1}), cos(p f_0) ..],
/// f_k = exp(-k ln(10000) / (h - 1)), h = D / 2 (a zero last column when D is odd). Computed in
/// double and rounded once (fairseq computes the table in float32: differences of ~1 ulp).
template <class T = float>
class SinusoidalPositions : public Module<T> {
public:
    SinusoidalPositions(int64_t dim, int64_t padding_idx) : dim_(dim), padding_idx_(padding_idx) {
        MOEKD_CHECK(dim >= 4, "SinusoidalPositions: dim must be at least 4, got ", dim);
        MOEKD_CHECK(padding_idx >= -1, "SinusoidalPositions: padding_idx must be >= -1 (none), got ", padding_idx);
    }
    /// The table row of position p.   row: (D)
    void row(int64_t p, T* out) const {
        const int64_t h = dim_ / 2;
        std::fill_n(out, dim_, T(0));
        if (p == padding_idx_) return;
        const double step = std::log(10000.0) / static_cast<double>(h - 1);
        for (int64_t k = 0; k < h; ++k) {
            const double a = static_cast<double>(p) * std::exp(-static_cast<double>(k) * step);
            out[k] = static_cast<T>(std::sin(a));
            out[h + k] = static_cast<T>(std::cos(a));
        }
    }
    // ids: (B, T) int64 -> (B, T, D) on the ids' device, no gradient. Computed on the host (from
    // a host copy of the ids, which are small) and copied over.
    Tensor<T> forward(const Tensor<int64_t>& ids) const {
        MOEKD_CHECK(ids.dim() == 2, "SinusoidalPositions: ids must be (B, T), got ", ids.shape());
        const int64_t B = ids.size(0), L = ids.size(1);
        const Tensor<int64_t> ic = moekd::detail::contiguous_data(ids.to(Device::CPU));
        Tensor<T> y = Tensor<T>::empty({B, L, dim_});
        for (int64_t b = 0; b < B; ++b) {
            int64_t count = 0;
            for (int64_t t = 0; t < L; ++t) {
                const bool pad = ic.data()[b * L + t] == padding_idx_;
                if (!pad) ++count;
                row(pad ? padding_idx_ : padding_idx_ + count, y.data() + (b * L + t) * dim_);
            }
        }
        y = y.to(ids.device());
        this->emit("output", y);
        return y;
    }
    int64_t dim() const { return dim_; }
    int64_t padding_idx() const { return padding_idx_; }

private:
    int64_t dim_, padding_idx_;
};

/// Learned absolute positions (BERT, ViT): a (P, D) table, init N(0, std^2); position t of a
/// sequence reads row offset + t.
template <class T = float>
class LearnedPositions : public Module<T> {
public:
    Tensor<T> weight;  // (P, D)

    LearnedPositions(int64_t num_positions, int64_t dim, Generator& gen, double std = 1.0) {
        MOEKD_CHECK(num_positions > 0 && dim > 0, "LearnedPositions: sizes must be positive, got (", num_positions,
                    ", ", dim, ")");
        weight = this->register_parameter("weight", Tensor<T>::randn({num_positions, dim}, gen, 0.0, std));
    }
    // -> (L, D): rows offset .. offset + L - 1 (a view with autograd)
    Tensor<T> forward(int64_t length, int64_t offset = 0) const {
        MOEKD_CHECK(offset >= 0 && length >= 0 && offset + length <= weight.size(0), "LearnedPositions(",
                    weight.size(0), ", ", weight.size(1), "): positions ", offset, " .. ", offset + length - 1,
                    " exceed the table of ", weight.size(0), " positions");
        Tensor<T> y = weight.narrow(0, offset, length);
        this->emit("output", y);
        return y;
    }
    int64_t num_positions() const { return weight.size(0); }
};

// ---- LayerNorm ---------------------------------------------------------------------------------
/// torch.nn.LayerNorm over the last dim: weight ones, bias zeros, eps 1e-5 (BERT / ViT: 1e-12).
template <class T = float>
class LayerNorm : public Module<T> {
public:
    Tensor<T> weight, bias;  // (D)

    explicit LayerNorm(int64_t dim, double eps = 1e-5) : eps_(eps) {
        MOEKD_CHECK(dim > 0, "LayerNorm: dim must be positive, got ", dim);
        weight = this->register_parameter("weight", Tensor<T>::ones({dim}));
        bias = this->register_parameter("bias", Tensor<T>::zeros({dim}));
    }
    // x: (*, D) -> (*, D)
    Tensor<T> forward(const Tensor<T>& x) const {
        MOEKD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == weight.size(0), "LayerNorm(", weight.size(0),
                    "): input ", x.defined() ? x.shape() : Shape{}, " must end in ", weight.size(0));
        Tensor<T> y = layer_norm(x, Shape{weight.size(0)}, weight, bias, eps_);
        this->emit("output", y);
        return y;
    }
    double eps() const { return eps_; }

private:
    double eps_;
};

// ---- Dropout -----------------------------------------------------------------------------------
/// Inverted dropout while the module is training, identity in eval. Owns its Generator, seeded
/// from the one given at construction (one draw, whatever p is, so the initialisation of later
/// layers does not depend on dropout settings); reseed or checkpoint it through generator().
template <class T = float>
class Dropout : public Module<T> {
public:
    Dropout(double p, Generator& seed_from) : p_(p), gen_(seed_from.next_u64()) {
        MOEKD_CHECK(p >= 0.0 && p <= 1.0, "Dropout: p must be in [0, 1], got ", p);
    }
    // x: any shape
    Tensor<T> forward(const Tensor<T>& x) const {
        Tensor<T> y = dropout(x, p_, this->is_training(), gen_);
        this->emit("output", y);
        return y;
    }
    double p() const { return p_; }
    Generator& generator() { return gen_; }

private:
    double p_;
    mutable Generator gen_;  // drawing masks is not a change of the module's parameters
};

}  // namespace moekd::nn
