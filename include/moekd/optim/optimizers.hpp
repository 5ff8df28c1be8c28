// optimizers.hpp — SGD (momentum, Nesterov), Adam, AdamW and LAMB.
//
// Each update follows the formula of the reference named beside it, term by term in the same
// order (tests/optim_parity.py checks them against PyTorch; LAMB against a reference written
// from the paper, since torch has none).
#pragma once

#include <cmath>

#include "../core/eigen.hpp"
#include "../kernels/optim.cuh"

#include "optimizer.hpp"

namespace moekd::optim {

/// torch.optim.SGD: g += wd p; buf = mu buf + (1 - dampening) g (buf = g on the first step);
/// g = nesterov ? g + mu buf : buf; p -= lr g.
template <class T = float>
class SGD : public Optimizer<T> {
public:
    SGD(std::vector<ParamGroup<T>> groups, double momentum = 0, double dampening = 0, bool nesterov = false)
        : Optimizer<T>(std::move(groups)), mu_(momentum), damp_(dampening), nesterov_(nesterov) {
        MOEKD_CHECK(momentum >= 0, "SGD: momentum ", momentum, " < 0");
        MOEKD_CHECK(!nesterov || (momentum > 0 && dampening == 0), "SGD: Nesterov needs momentum > 0 and no dampening");
    }

protected:
    void update(size_t k, const ParamGroup<T>& g, T* p, const T* grad, int64_t n) override {
        const T lr = T(g.lr), wd = T(g.weight_decay), mu = T(mu_), damp = T(damp_);
        const bool first = !this->has_slot(k, "momentum_buffer");
        T* buf = mu_ != 0 ? this->slot(k, "momentum_buffer", n) : nullptr;
        const kern::SgdStep<T> s{lr, wd, mu, damp, nesterov_, first};
        for (int64_t i = 0; i < n; ++i) kern::sgd_elem(p[i], grad[i], buf ? buf + i : nullptr, s);
    }
    void update_device(size_t k, const ParamGroup<T>& g, Tensor<T>& p, const Tensor<T>& grad) override {
        const bool first = !this->has_slot(k, "momentum_buffer");
        T* buf = mu_ != 0 ? this->slot(k, "momentum_buffer", p.numel(), p.device()) : nullptr;
        const kern::SgdStep<T> s{T(g.lr), T(g.weight_decay), T(mu_), T(damp_), nesterov_, first};
        moekd::detail::device_entry(DeviceOps<T>::cuda().sgd_step, "SGD.step", p.shape())(p.data(), grad.data(), buf,
                                                                                           p.numel(), s);
    }

private:
    double mu_, damp_;
    bool nesterov_;
};

/// torch.optim.Adam / AdamW. Adam adds weight decay to the gradient (L2); AdamW decays the
/// weights directly (p *= 1 - lr wd, Loshchilov & Hutter).
template <class T = float>
class Adam : public Optimizer<T> {
public:
    Adam(std::vector<ParamGroup<T>> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
         bool decoupled_weight_decay = false)
        : Optimizer<T>(std::move(groups)), b1_(beta1), b2_(beta2), eps_(eps), decoupled_(decoupled_weight_decay) {
        MOEKD_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "Adam: betas (", beta1, ", ", beta2,
                    ") must lie in [0, 1)");
        MOEKD_CHECK(eps >= 0, "Adam: eps ", eps, " < 0");
    }

protected:
    void update(size_t k, const ParamGroup<T>& g, T* p, const T* grad, int64_t n) override {
        T* m = this->slot(k, "exp_avg", n);
        T* v = this->slot(k, "exp_avg_sq", n);
        const double t = double(this->step_);
        // 1 - beta in double, then rounded: (T(1) - T(0.999)) in float is off by 1.3e-5
        const T b1 = T(b1_), b2 = T(b2_), omb1 = T(1 - b1_), omb2 = T(1 - b2_), lr = T(g.lr), wd = T(g.weight_decay);
        const T bc1 = T(1 - std::pow(b1_, t));
        const T bc2_sqrt = T(std::sqrt(1 - std::pow(b2_, t)));
        const T step_size = lr / bc1;
        const T eps = T(eps_);
        // One fused pass as Eigen array expressions: Eigen's packet sqrt vectorizes where a scalar
        // std::sqrt loop does not (the errno branch of sqrtf blocks GCC's vectorizer).
        using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
        detail::parallel_for(n, 32768, [&](int64_t i0, int64_t i1) {
            const int64_t k = i1 - i0;
            Eigen::Map<Arr> P(p + i0, k), M(m + i0, k), V(v + i0, k);
            Eigen::Map<const Arr> G(grad + i0, k);
            if (decoupled_ || wd == T(0)) {
                if (decoupled_ && wd != T(0)) P *= (T(1) - lr * wd);
                M = M * b1 + omb1 * G;
                V = V * b2 + omb2 * G * G;
                P -= step_size * (M / (V.sqrt() / bc2_sqrt + eps));
            } else {
                const Arr D = G + wd * P;
                M = M * b1 + omb1 * D;
                V = V * b2 + omb2 * D * D;
                P -= step_size * (M / (V.sqrt() / bc2_sqrt + eps));
            }
        });
    }

    void update_device(size_t k, const ParamGroup<T>& g, Tensor<T>& p, const Tensor<T>& grad) override {
        const int64_t n = p.numel();
        T* m = this->slot(k, "exp_avg", n, p.device());
        T* v = this->slot(k, "exp_avg_sq", n, p.device());
        const double t = double(this->step_);
        const kern::AdamStep<T> s{T(g.lr),
                                  T(g.weight_decay),
                                  T(b1_),
                                  T(b2_),
                                  T(1 - b1_),
                                  T(1 - b2_),
                                  T(g.lr) / T(1 - std::pow(b1_, t)),
                                  T(std::sqrt(1 - std::pow(b2_, t))),
                                  T(eps_),
                                  decoupled_};
        moekd::detail::device_entry(DeviceOps<T>::cuda().adam_step, "Adam.step", p.shape())(p.data(), grad.data(), m, v,
                                                                                             n, s);
    }

private:
    double b1_, b2_, eps_;
    bool decoupled_;
};

template <class T = float>
class AdamW : public Adam<T> {
public:
    AdamW(std::vector<ParamGroup<T>> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : Adam<T>(std::move(groups), beta1, beta2, eps, true) {}
};

/// LAMB (You et al., 2020, Algorithm 2): Adam's bias-corrected direction r = m^/(sqrt(v^) + eps)
/// plus decoupled decay wd p, scaled per tensor by the trust ratio ||p|| / ||r + wd p||
/// (1 when either norm is 0): p -= lr * trust * (r + wd p). The per-element terms and the trust
/// ratio are kernels/optim.cuh's, shared with the device update (two launches: the moments with
/// block partials of both squared norms, then every block reduces the partials in one fixed order
/// and applies the step; the norms stay on the device).
template <class T = float>
class LAMB : public Optimizer<T> {
public:
    LAMB(std::vector<ParamGroup<T>> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-6)
        : Optimizer<T>(std::move(groups)), b1_(beta1), b2_(beta2), eps_(eps) {
        MOEKD_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "LAMB: betas must lie in [0, 1)");
    }

protected:
    void update(size_t k, const ParamGroup<T>& g, T* p, const T* grad, int64_t n) override {
        T* m = this->slot(k, "exp_avg", n);
        T* v = this->slot(k, "exp_avg_sq", n);
        const kern::LambStep<T> s = step_terms(g);
        std::vector<T> r(n);
        double p_sq = 0, r_sq = 0;  // in order, in double (the device's are block trees, also double)
        for (int64_t i = 0; i < n; ++i) {
            kern::lamb_moments(grad[i], m[i], v[i], s);
            r[i] = kern::lamb_direction(p[i], m[i], v[i], s);
            p_sq += double(p[i]) * p[i];
            r_sq += double(r[i]) * r[i];
        }
        const T scale = kern::lamb_scale<T>(s.lr, p_sq, r_sq);
        for (int64_t i = 0; i < n; ++i) kern::lamb_apply(p[i], r[i], scale);
    }

    void update_device(size_t k, const ParamGroup<T>& g, Tensor<T>& p, const Tensor<T>& grad) override {
        const int64_t n = p.numel();
        T* m = this->slot(k, "exp_avg", n, p.device());
        T* v = this->slot(k, "exp_avg_sq", n, p.device());
        moekd::detail::device_entry(DeviceOps<T>::cuda().lamb_step, "LAMB.step", p.shape())(p.data(), grad.data(), m, v,
                                                                                             n, step_terms(g));
    }

private:
    /// This step's constants: 1 - beta and the bias corrections in double, then rounded.
    kern::LambStep<T> step_terms(const ParamGroup<T>& g) const {
        const double t = double(this->step_);
        return {T(b1_), T(b2_), T(1 - b1_), T(1 - b2_), T(1 - std::pow(b1_, t)), T(1 - std::pow(b2_, t)),
                T(eps_), T(g.weight_decay), g.lr};
    }

    double b1_, b2_, eps_;
};

}  // namespace moekd::optim
