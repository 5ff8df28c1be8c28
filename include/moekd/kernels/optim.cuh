// optim.cuh — the per-element updates of SGD and Adam/AdamW, shared by the CPU optimizers and the
// fused CUDA update kernels (kernels/ops.cu): one launch per parameter reads p, g and the moments
// once and writes them once.
//
// Each follows its PyTorch reference term by term (optim/optimizers.hpp says which); the CPU Adam
// runs the same formula as Eigen array expressions (vectorised sqrt), so the two agree to
// rounding, not to the bit.
#pragma once

#include <cmath>

#include "common.cuh"

namespace moekd::kern {

/// SGD for one element: d = g + wd p; buf = first ? d : mu buf + (1 - damp) d;
/// d = nesterov ? d + mu buf : buf (with momentum); p -= lr d. buf may be null (no momentum).
template <class T>
struct SgdStep {
    T lr, wd, mu, damp;
    bool nesterov, first;
};
template <class T>
MOEKD_HD inline void sgd_elem(T& p, T g, T* buf, const SgdStep<T>& s) {
    T d = g;
    if (s.wd != T(0)) d = d + s.wd * p;
    if (buf) {
        *buf = s.first ? d : s.mu * *buf + (T(1) - s.damp) * d;
        d = s.nesterov ? d + s.mu * *buf : *buf;
    }
    p = p - s.lr * d;
}

/// Adam / AdamW for one element, with the bias corrections folded as torch does:
/// step_size = lr / (1 - b1^t), denominator sqrt(v) / sqrt(1 - b2^t) + eps.
template <class T>
struct AdamStep {
    T lr, wd, b1, b2, omb1, omb2, step_size, bc2_sqrt, eps;
    bool decoupled;
};
template <class T>
MOEKD_HD inline void adam_elem(T& p, T g, T& m, T& v, const AdamStep<T>& s) {
    T d = g;
    if (s.decoupled) {
        if (s.wd != T(0)) p = p * (T(1) - s.lr * s.wd);
    } else if (s.wd != T(0)) {
        d = g + s.wd * p;
    }
    m = m * s.b1 + s.omb1 * d;
    v = v * s.b2 + s.omb2 * d * d;
    p = p - s.step_size * (m / (std::sqrt(v) / s.bc2_sqrt + s.eps));
}

}  // namespace moekd::kern
