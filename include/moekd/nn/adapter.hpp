// adapter.hpp — Houlsby bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer
// Learning for NLP") and the helper that trains only them.
//
// An adapter maps h -> h + up_proj(act(down_proj(h))) with down_proj: D -> m, up_proj: m -> D,
// m << D. The transformer layers (transformer.hpp) put one after the attention sublayer and one
// after the FFN sublayer, before the residual add, when LayerConfig::adapters is set. The
// projections start near zero (N(0, 1e-2^2) weights, zero biases), so a fresh adapter is close to
// the identity and a pretrained model is unchanged until the adapters learn.
#pragma once

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "layers.hpp"

namespace moekd::nn {

template <class T = float>
class Adapter : public Module<T> {
public:
    std::shared_ptr<Linear<T>> down_proj, up_proj;

    /// dim D -> bottleneck m -> D. init_std: the std of both weight matrices (biases start at 0).
    Adapter(int64_t dim, int64_t bottleneck, Generator& gen, Activation act = Activation::GELU, double init_std = 1e-2)
        : act_(act) {
        MOEKD_CHECK(dim > 0 && bottleneck > 0, "Adapter: dim and bottleneck must be positive, got ", dim, " and ",
                    bottleneck);
        down_proj = this->register_module("down_proj", std::make_shared<Linear<T>>(dim, bottleneck, gen));
        up_proj = this->register_module("up_proj", std::make_shared<Linear<T>>(bottleneck, dim, gen));
        NoGrad ng;
        for (auto* l : {down_proj.get(), up_proj.get()}) {
            moekd::detail::copy_into(l->weight, Tensor<T>::randn(l->weight.shape(), gen, 0.0, init_std));
            std::fill_n(l->bias.data(), l->bias.numel(), T(0));
        }
    }
    // h: (*, D) -> (*, D)
    Tensor<T> forward(const Tensor<T>& h) const {
        MOEKD_CHECK(h.defined() && h.dim() >= 1 && h.size(-1) == down_proj->in_features(), "Adapter(",
                    down_proj->in_features(), " -> ", down_proj->out_features(), "): input ",
                    h.defined() ? h.shape() : Shape{}, " must end in ", down_proj->in_features());
        Tensor<T> y = h + up_proj->forward(activate(down_proj->forward(h), act_));
        this->emit("output", y);
        return y;
    }
    Activation activation() const { return act_; }

private:
    Activation act_;
};

/// True when a dotted parameter name belongs to an adapter or a LayerNorm: a module component
/// containing "adapter", "layer_norm", "LayerNorm" or "layernorm".
inline bool is_adapter_or_norm_param(const std::string& name) {
    std::stringstream ss(name);
    std::vector<std::string> parts;
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {  // the last component is the parameter itself
        const std::string& c = parts[i];
        for (const char* key : {"adapter", "layer_norm", "LayerNorm", "layernorm"})
            if (c.find(key) != std::string::npos) return true;
    }
    return false;
}

/// Freezes every parameter of `model` except adapters, LayerNorms and those under the dotted
/// prefixes in `also_train` (the task head, e.g. {"classifier"}). A parameter shared under
/// several names stays trainable if any of its names qualifies. Returns the number of trainable
/// elements. Undo with model.freeze(false).
template <class T>
int64_t train_adapters_only(Module<T>& model, const std::vector<std::string>& also_train = {}) {
    std::map<TensorImpl<T>*, bool> trainable;
    for (auto& [name, t] : model.named_parameters()) {
        bool on = is_adapter_or_norm_param(name);
        for (const auto& p : also_train)
            on = on || name == p || name.rfind(p + ".", 0) == 0;
        trainable[t.impl()] = trainable[t.impl()] || on;
    }
    int64_t n = 0;
    for (auto& t : model.parameters()) {
        const bool on = trainable[t.impl()];
        t.impl()->requires_grad = on;
        if (on) n += t.numel();
    }
    return n;
}

}  // namespace moekd::nn
