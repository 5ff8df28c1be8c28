// optim.cuh — the per-element updates of SGD, Adam/AdamW and LAMB, shared by the CPU optimizers
// and the fused CUDA update kernels (kernels/ops.cu): one launch per parameter reads p, g and the
// moments once and writes them once (LAMB: two, around its per-tensor trust ratio).
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

/// LAMB (You et al. 2020, Algorithm 2, with Adam's bias correction), split where the per-tensor
/// trust ratio needs the whole tensor: lamb_moments and lamb_direction per element, the squared
/// norms sum(p^2) and sum(u^2) accumulated in double, lamb_scale from them, lamb_apply per element.
/// bc1 = 1 - b1^t and bc2 = 1 - b2^t are computed in double and rounded to T; lr stays double
/// until it is multiplied by the trust ratio (lr * trust is rounded to T once).
template <class T>
struct LambStep {
    T b1, b2, omb1, omb2, bc1, bc2, eps, wd;
    double lr;
};
/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2 (the gradient without weight decay).
template <class T>
MOEKD_HD inline void lamb_moments(T g, T& m, T& v, const LambStep<T>& s) {
    m = s.b1 * m + s.omb1 * g;
    v = s.b2 * v + s.omb2 * g * g;
}
/// u = m^ / (sqrt(v^) + eps) + wd p with m^ = m / bc1, v^ = v / bc2 (m, v already updated). The
/// decay term is added also when wd = 0, as the reference does.
template <class T>
MOEKD_HD inline T lamb_direction(T p, T m, T v, const LambStep<T>& s) {
    const T mh = m / s.bc1, vh = v / s.bc2;
    return mh / (std::sqrt(vh) + s.eps) + s.wd * p;
}
/// The trust ratio ||p|| / ||u|| from the two squared norms, 1 when either norm is 0 (a zero
/// weight, e.g. a fresh bias, takes a plain lr step; a zero direction leaves p as it is) or
/// NaN (the comparisons fail); an infinite ||p|| with a finite nonzero ||u|| gives inf.
MOEKD_HD inline double lamb_trust(double p_sq, double u_sq) {
    const double pn = std::sqrt(p_sq), un = std::sqrt(u_sq);
    return (pn > 0 && un > 0) ? pn / un : 1.0;
}
/// The step's scale T(lr * trust).
template <class T>
MOEKD_HD inline T lamb_scale(double lr, double p_sq, double u_sq) {
    return T(lr * lamb_trust(p_sq, u_sq));
}
/// p -= scale u.
template <class T>
MOEKD_HD inline void lamb_apply(T& p, T u, T scale) {
    p = p - scale * u;
}

}  // namespace moekd::kern
