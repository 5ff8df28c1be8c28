// optimizer.hpp — the base of every optimizer: parameter groups, zero_grad, state for
// checkpoints, global-norm gradient clipping.
//
// Updates run under NoGrad on the parameters' own storage, element by element in the order
// PyTorch's reference (for-loop) implementations use, so results agree to rounding.
// Gradient accumulation needs nothing special: call backward() k times (gradients add up;
// scale the loss by 1/k), then step() once and zero_grad().
#pragma once

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "../tensor.hpp"

namespace moekd::optim {

template <class T = float>
struct ParamGroup {
    std::vector<Tensor<T>> params;
    double lr = 1e-3;
    double weight_decay = 0.0;
};

/// Splits parameters into the usual two groups: weights (decayed) and 1-D tensors — biases and
/// LayerNorm gains — (not decayed), as BERT, fairseq and nanoGPT do.
template <class T>
std::vector<ParamGroup<T>> decay_groups(const std::vector<Tensor<T>>& params, double lr, double weight_decay) {
    ParamGroup<T> decay{{}, lr, weight_decay}, no_decay{{}, lr, 0.0};
    for (const auto& p : params) (p.dim() >= 2 ? decay : no_decay).params.push_back(p);
    std::vector<ParamGroup<T>> out;
    if (!decay.params.empty()) out.push_back(decay);
    if (!no_decay.params.empty()) out.push_back(no_decay);
    return out;
}

template <class T = float>
class Optimizer {
public:
    explicit Optimizer(std::vector<ParamGroup<T>> groups) : groups_(std::move(groups)) {
        for (auto& g : groups_)
            for (auto& p : g.params) {
                MOEKD_CHECK(p.defined() && p.is_leaf(), "optimizer: every parameter must be a defined leaf tensor");
                MOEKD_CHECK(p.is_contiguous(), "optimizer: parameter of shape ", p.shape(), " is not contiguous");
            }
    }
    virtual ~Optimizer() = default;

    /// One update of every parameter that has a gradient.
    void step() {
        NoGrad ng;
        ++step_;
        ++detail::param_generation();  // the parameters change: their cached bf16 copies are stale
        size_t k = 0;
        for (auto& g : groups_)
            for (auto& p : g.params) {
                Tensor<T> grad = p.grad();
                if (grad.defined()) {
                    MOEKD_CHECK(grad.shape() == p.shape(), "optimizer: gradient ", grad.shape(), " for parameter ", p.shape());
                    MOEKD_CHECK(grad.device() == p.device(), "optimizer: gradient on ", grad.device(),
                                " for a parameter of shape ", p.shape(), " on ", p.device());
                    if (p.device() == Device::CPU) update(k, g, p.data(), detail::contiguous_data(grad).data(), p.numel());
                    else update_device(k, g, p, detail::contiguous_data(grad));
                }
                ++k;
            }
    }
    void zero_grad() {
        for (auto& g : groups_)
            for (auto& p : g.params) p.zero_grad();
    }
    std::vector<ParamGroup<T>>& groups() { return groups_; }
    /// Sets the learning rate of every group (schedulers call this each step).
    void set_lr(double lr) {
        for (auto& g : groups_) g.lr = lr;
    }
    int64_t steps() const { return step_; }
    /// Sets the step count exactly (state_dict() stores it as T, exact in float only to 2^24;
    /// checkpoints keep the exact count and restore it with this).
    void set_steps(int64_t s) {
        MOEKD_CHECK(s >= 0, "optimizer: step count ", s, " < 0");
        step_ = s;
    }

    /// Moments and step count by name ("state.<k>.<slot>", "step"), for checkpoints.
    std::map<std::string, Tensor<T>> state_dict() const {
        std::map<std::string, Tensor<T>> out;
        for (auto& [key, t] : state_) out[key] = t;
        out["step"] = Tensor<T>::scalar(static_cast<T>(step_));
        return out;
    }
    void load_state_dict(const std::map<std::string, Tensor<T>>& dict) {
        auto it = dict.find("step");
        MOEKD_CHECK(it != dict.end(), "optimizer.load_state_dict: no 'step' entry");
        std::map<std::string, Tensor<T>> st;
        for (auto& [key, t] : dict) {
            if (key == "step") continue;
            st[key] = detail::contiguous_data(t).clone().detach();
        }
        // every slot must match its parameter's size
        size_t k = 0;
        for (auto& g : groups_)
            for (auto& p : g.params) {
                for (auto& [key, t] : st)
                    if (key.rfind("state." + std::to_string(k) + ".", 0) == 0)
                        MOEKD_CHECK(t.numel() == p.numel(), "optimizer.load_state_dict: '", key, "' has shape ",
                                    t.shape(), " but parameter ", k, " has shape ", p.shape());
                ++k;
            }
        state_ = std::move(st);
        step_ = static_cast<int64_t>(it->second.item());
    }

protected:
    /// Updates one parameter (n elements) in place; k is its index across groups.
    virtual void update(size_t k, const ParamGroup<T>& g, T* p, const T* grad, int64_t n) = 0;

    /// The same update for a parameter on a device: a fused kernel through DeviceOps (SGD, Adam,
    /// AdamW, LAMB); optimizers without one say so.
    virtual void update_device(size_t k, const ParamGroup<T>& g, Tensor<T>& p, const Tensor<T>& grad) {
        (void)k, (void)g, (void)grad;
        MOEKD_CHECK(false, "optimizer: parameter of shape ", p.shape(), " is on ", p.device(),
                    "; this optimizer has no CUDA implementation yet (SGD, Adam, AdamW and LAMB have)");
    }

    /// A zero-initialised state slot of n elements for parameter k, on `device` (a slot loaded
    /// from a checkpoint on the CPU moves to its parameter's device on first use).
    T* slot(size_t k, const char* name, int64_t n, Device device = Device::CPU) {
        const std::string key = "state." + std::to_string(k) + "." + name;
        auto it = state_.find(key);
        if (it == state_.end()) it = state_.emplace(key, Tensor<T>::zeros({n}, device)).first;
        if (it->second.device() != device) it->second = it->second.to(device);
        return it->second.data();
    }
    bool has_slot(size_t k, const char* name) const {
        return state_.count("state." + std::to_string(k) + "." + name) > 0;
    }

    std::vector<ParamGroup<T>> groups_;
    std::map<std::string, Tensor<T>> state_;
    int64_t step_ = 0;
};

/// Sum of the squared gradient elements (double accumulation); parameters without a gradient
/// count nothing.
template <class T>
double grad_sq_sum(const std::vector<Tensor<T>>& params) {
    NoGrad ng;
    double sq = 0;
    for (const auto& p : params) {
        Tensor<T> g = p.grad();
        if (!g.defined()) continue;
        if (g.device() != Device::CPU) {  // the device's deterministic row sum, one number back
            sq += double(sum(g * g).item());
            continue;
        }
        Tensor<T> gc = moekd::detail::contiguous_data(g);
        for (int64_t i = 0; i < gc.numel(); ++i) sq += double(gc.data()[i]) * double(gc.data()[i]);
    }
    return sq;
}

/// The clipping rule of torch.nn.utils.clip_grad_norm_ given the norm: a non-finite norm is an
/// error; gradients are scaled by max_norm / (norm + 1e-6) when that is below 1.
template <class T>
void clip_to_norm(const std::vector<Tensor<T>>& params, double norm, double max_norm) {
    NoGrad ng;
    MOEKD_CHECK(std::isfinite(norm), "clip_grad_norm: the gradient norm is ", norm,
                ". HINT: a loss became NaN/Inf; lower the learning rate or check the inputs");
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;
    for (const auto& p : params) {
        Tensor<T> g = p.grad();
        if (!g.defined()) continue;
        MOEKD_CHECK(g.is_contiguous(), "clip_grad_norm: non-contiguous gradient");
        if (g.device() != Device::CPU) {
            const Tensor<T> scaled = g * static_cast<T>(coef);
            moekd::detail::copy_into(g, scaled);
            continue;
        }
        for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] = static_cast<T>(g.data()[i] * coef);
    }
}
/// Scales all gradients so their global L2 norm is at most max_norm (torch.nn.utils.clip_grad_norm_).
/// Returns the norm before clipping. A non-finite norm is an error naming it (NaN loss upstream).
/// (Expert-parallel parameters: dist::clip_grad_norm, whose norm spans the ranks.)
template <class T>
double clip_grad_norm(const std::vector<Tensor<T>>& params, double max_norm) {
    const double norm = std::sqrt(grad_sq_sum(params));
    clip_to_norm(params, norm, max_norm);
    return norm;
}

}  // namespace moekd::optim
