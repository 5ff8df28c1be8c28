// loss.hpp — cross_entropy (fused log_softmax + nll + label smoothing) and nll_loss, with their
// backward right below.
//
// Layout: the class dim is the LAST dim. logits: (..., C), targets: Tensor<int64_t> of shape (...)
// — e.g. (N, C) with (N), or (B, T, C) with (B, T), flattened to rows internally. (torch puts
// classes at dim 1 for (N, C, d1, ...) inputs; from that layout pass logits.permute(...) with
// the class dim moved last.) The forward keeps the row max and log-sum-exp per row and the
// backward writes (softmax - smoothed one-hot) * g / count directly: no graph of small ops is built.
//
// Semantics follow torch.nn.functional.cross_entropy:
//   per row   loss_i = (1 - e) * (-log p[t_i]) + e * mean over classes of (-log p)
//   Mean      sum of loss_i over rows with t_i != ignore_index, divided by their count
//   Sum / None  the sum / the per-row losses (0 for ignored rows), None shaped like targets
// One deliberate difference: when EVERY target is ignored, torch's Mean gives NaN (0 / 0); we
// return 0 with a zero gradient, so a fully padded batch does not poison training.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "../kernels/softmax.cuh"
#include "elementwise.hpp"

namespace moekd {

/// How a loss reduces its per-row values.
enum class Reduction { Mean, Sum, None };

namespace detail {

/// Checks (..., C) scores against (...) targets; returns C. Targets are validated per row later.
template <class T>
int64_t check_class_last(const Tensor<T>& scores, const Tensor<int64_t>& targets, const char* op, const char* what,
                         bool device_ok = false) {
    if (!device_ok) {
        require_cpu(scores, op);
        require_cpu(targets, op);
    }
    MOEKD_CHECK(scores.device() == targets.device(), op, ": ", what, " of shape ", scores.shape(), " on ",
                scores.device(), ", targets of shape ", targets.shape(), " on ", targets.device(),
                " (operands on different devices)");
    MOEKD_CHECK(scores.dim() >= 1, op, ": ", what, " must have a class dim, got a scalar");
    Shape want(scores.shape().begin(), scores.shape().end() - 1);
    MOEKD_CHECK(targets.shape() == want, op, ": targets of shape ", targets.shape(), " for ", what, " of shape ",
                scores.shape(), "; expected targets of shape ", want,
                ". HINT: classes are the last dim: (N, C) with (N), or (B, T, C) with (B, T)");
    const int64_t C = scores.shape()[scores.dim() - 1];
    MOEKD_CHECK(C > 0, op, ": ", what, " of shape ", scores.shape(), " has no classes");
    return C;
}

/// Validated target of row r: -1 if ignored, else in [0, C); throws naming the value and position.
inline int64_t checked_target(const Tensor<int64_t>& tc, int64_t r, int64_t C, int64_t ignore_index,
                              const Shape& tshape, const char* op) {
    const int64_t t = tc.data()[r];
    if (t == ignore_index) return -1;
    MOEKD_CHECK(t >= 0 && t < C, op, ": target ", t, " at position ", unravel_index(r, tshape),
                " is out of range for ", C, " classes (valid: 0..", C - 1, ", or ignore_index ", ignore_index, ")");
    return t;
}

/// The number of targets that are not ignore_index, for targets on the device: every value is
/// checked on a host copy first (an error names the value and position, as on the CPU, where a
/// GPU kernel would only assert).
inline int64_t count_device_targets(const Tensor<int64_t>& tc, int64_t C, int64_t ignore_index, const Shape& tshape,
                                    const char* op) {
    const Tensor<int64_t> th = tc.to(Device::CPU);
    int64_t count = 0;
    for (int64_t r = 0; r < th.numel(); ++r) count += checked_target(th, r, C, ignore_index, tshape, op) >= 0;
    return count;
}

/// The per-row upstream gradient scale for a reduction: g / count, g, or g[r].
template <class T>
struct RowScale {
    Reduction red;
    Tensor<T> g;  // contiguous
    int64_t count;
    T operator()(int64_t r) const {
        if (red == Reduction::None) return g.data()[r];
        if (red == Reduction::Sum) return g.data()[0];
        return count > 0 ? g.data()[0] / static_cast<T>(count) : T(0);
    }
};

/// The reduced output from per-row losses (ignored rows hold 0).
template <class T>
Tensor<T> reduce_rows(const Tensor<T>& rows, const Shape& tshape, Reduction red, int64_t count) {
    if (red == Reduction::None) return rows.detach().reshape(tshape);
    double total = 0;
    for (int64_t r = 0; r < rows.numel(); ++r) total += rows.data()[r];
    if (red == Reduction::Mean) total = count > 0 ? total / static_cast<double>(count) : 0.0;
    return Tensor<T>::scalar(static_cast<T>(total));
}

/// cross_entropy's device half. The targets are checked on a host copy (out-of-range targets are
/// an error naming the value and position, as on the CPU, where a GPU kernel would only assert),
/// then the fused kernels of the device table run on the device's logits and targets.
template <class T>
Tensor<T> cross_entropy_device(const Tensor<T>& logits, const Tensor<int64_t>& targets, int64_t C,
                               int64_t ignore_index, double label_smoothing, Reduction reduction) {
    const char* op = "cross_entropy";
    const Tensor<T> xc = contiguous_data(logits).detach();
    const Tensor<int64_t> tc = contiguous_data(targets).detach();
    const Shape tshape = targets.shape();
    const int64_t N = tc.numel();
    const int64_t count = count_device_targets(tc, C, ignore_index, tshape, op);
    const Device dev = logits.device();
    Tensor<T> rows = Tensor<T>::zeros({N}, dev), rmax = Tensor<T>::zeros({N}, dev), lsum = Tensor<T>::zeros({N}, dev);
    Tensor<T> loss = Tensor<T>::zeros({}, dev);
    const double divisor = reduction == Reduction::Mean ? static_cast<double>(count) : 1.0;
    const T eps = static_cast<T>(label_smoothing);
    if (N > 0)
        device_entry(DeviceOps<T>::cuda().cross_entropy, op, logits.shape())(
            xc.data(), tc.data(), rows.data(), rmax.data(), lsum.data(),
            reduction == Reduction::None ? nullptr : loss.data(), N, C, ignore_index, eps, divisor);
    Tensor<T> out = reduction == Reduction::None ? rows.reshape(tshape) : loss;
    return record<T>(out, op, {logits}, [xc, tc, rmax, lsum, N, C, ignore_index, eps, reduction, count,
                                         op](const Tensor<T>& g) {
        Tensor<T> gx = Tensor<T>::zeros(xc.shape(), xc.device());
        if (N == 0 || (reduction == Reduction::Mean && count == 0)) return std::vector<Tensor<T>>{gx};
        const Tensor<T> gc = contiguous_data(g);
        const T divisor = reduction == Reduction::Mean ? static_cast<T>(count) : T(1);
        device_entry(DeviceOps<T>::cuda().cross_entropy_backward, op, xc.shape())(
            xc.data(), tc.data(), rmax.data(), lsum.data(), gc.data(), reduction == Reduction::None, divisor, gx.data(), N,
            C, ignore_index, eps);
        return std::vector<Tensor<T>>{gx};
    });
}

/// Naive reference of cross_entropy: double loops, the torch formula term by term, no autograd.
template <class T>
Tensor<T> cross_entropy_reference(const Tensor<T>& logits, const Tensor<int64_t>& targets, int64_t ignore_index = -100,
                                  double label_smoothing = 0.0, Reduction reduction = Reduction::Mean) {
    const int64_t C = check_class_last(logits, targets, "cross_entropy_reference", "logits");
    const std::vector<T> v = logits.to_vector();
    const std::vector<int64_t> t = targets.to_vector();
    const int64_t N = static_cast<int64_t>(t.size());
    std::vector<double> per(N, 0.0);
    double nll = 0, smooth = 0;
    int64_t count = 0;
    for (int64_t r = 0; r < N; ++r) {
        if (t[r] == ignore_index) continue;
        MOEKD_CHECK(t[r] >= 0 && t[r] < C, "cross_entropy_reference: target ", t[r], " out of range");
        double m = -INFINITY, s = 0, neg_logp_sum = 0;
        for (int64_t c = 0; c < C; ++c) m = std::max(m, static_cast<double>(v[r * C + c]));
        for (int64_t c = 0; c < C; ++c) s += std::exp(v[r * C + c] - m);
        auto logp = [&](int64_t c) { return v[r * C + c] - m - std::log(s); };
        for (int64_t c = 0; c < C; ++c) neg_logp_sum -= logp(c);
        per[r] = (1 - label_smoothing) * -logp(t[r]) + label_smoothing * neg_logp_sum / C;
        nll += -logp(t[r]);
        smooth += neg_logp_sum;
        ++count;
    }
    if (reduction == Reduction::None) {
        Tensor<T> out = Tensor<T>::empty(targets.shape());
        for (int64_t r = 0; r < N; ++r) out.data()[r] = static_cast<T>(per[r]);
        return out;
    }
    double total = (1 - label_smoothing) * nll + label_smoothing / C * smooth;
    if (reduction == Reduction::Mean) total = count ? total / count : 0.0;
    return Tensor<T>::scalar(static_cast<T>(total));
}

/// nll_loss's device half: targets checked on a host copy (as cross_entropy_device), then the
/// device table's nll rows + reduction, and its backward.
template <class T>
Tensor<T> nll_loss_device(const Tensor<T>& log_probs, const Tensor<int64_t>& targets, int64_t C, int64_t ignore_index,
                          Reduction reduction) {
    const char* op = "nll_loss";
    const Tensor<T> xc = contiguous_data(log_probs).detach();
    const Tensor<int64_t> tc = contiguous_data(targets).detach();
    const Shape tshape = targets.shape();
    const int64_t N = tc.numel();
    const int64_t count = count_device_targets(tc, C, ignore_index, tshape, op);
    const Device dev = log_probs.device();
    Tensor<T> rows = Tensor<T>::zeros({N}, dev), loss = Tensor<T>::zeros({}, dev);
    const double divisor = reduction == Reduction::Mean ? static_cast<double>(count) : 1.0;
    device_entry(DeviceOps<T>::cuda().nll_rows, op, log_probs.shape())(
        xc.data(), tc.data(), rows.data(), reduction == Reduction::None ? nullptr : loss.data(), N, C, ignore_index,
        divisor);
    Tensor<T> out = reduction == Reduction::None ? rows.reshape(tshape) : loss;
    const Shape xshape = log_probs.shape();
    return record<T>(out, op, {log_probs}, [tc, xshape, N, C, ignore_index, reduction, divisor](const Tensor<T>& g) {
        Tensor<T> gc = contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(xshape, gc.device());
        device_entry(DeviceOps<T>::cuda().nll_backward, "nll_loss", xshape)(
            tc.data(), gc.data(), reduction == Reduction::None, static_cast<T>(divisor), gx.data(), N, C, ignore_index);
        return std::vector<Tensor<T>>{gx};
    });
}

}  // namespace detail

/// Cross-entropy of class logits against integer targets, as torch.nn.functional.cross_entropy
/// with the class dim last (see the top of this file).
/// logits: (..., C); targets: (...) int64 in [0, C) or ignore_index; label_smoothing in [0, 1].
/// Returns a scalar (Mean, Sum) or a tensor shaped like targets (None).
template <class T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& targets, int64_t ignore_index = -100,
                        double label_smoothing = 0.0, Reduction reduction = Reduction::Mean) {
    const char* op = "cross_entropy";
    const int64_t C = detail::check_class_last(logits, targets, op, "logits", true);
    MOEKD_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
                label_smoothing);
    if (logits.device() != Device::CPU)
        return detail::cross_entropy_device(logits, targets, C, ignore_index, label_smoothing, reduction);
    const Tensor<T> xc = detail::contiguous_data(logits).detach();
    const Tensor<int64_t> tc = detail::contiguous_data(targets).detach();
    const Shape tshape = targets.shape();
    const int64_t N = tc.numel();
    const T eps = static_cast<T>(label_smoothing);
    std::vector<int64_t> tgt(N);
    int64_t count = 0;
    for (int64_t r = 0; r < N; ++r) {  // validate every target before any arithmetic
        tgt[r] = detail::checked_target(tc, r, C, ignore_index, tshape, op);
        count += tgt[r] >= 0;
    }
    // per row: the loss, the row max and log(sum(exp(x - max))) (kept for the backward)
    Tensor<T> rows = Tensor<T>::zeros({N}), rmax = Tensor<T>::zeros({N}), lsum = Tensor<T>::zeros({N});
    for (int64_t r = 0; r < N; ++r)
        if (tgt[r] >= 0)
            rows.data()[r] = kern::cross_entropy_row(xc.data() + r * C, C, tgt[r], eps, rmax.data() + r, lsum.data() + r);
    Tensor<T> out = detail::reduce_rows(rows, tshape, reduction, count);
    return record<T>(out, op, {logits}, [xc, tgt, rmax, lsum, C, N, eps, reduction, count](const Tensor<T>& g) {
        const detail::RowScale<T> scale{reduction, detail::contiguous_data(g), count};
        Tensor<T> gx = Tensor<T>::zeros(xc.shape());
        for (int64_t r = 0; r < N; ++r)
            if (tgt[r] >= 0)
                kern::cross_entropy_backward_row(xc.data() + r * C, C, tgt[r], eps, rmax.data()[r], lsum.data()[r],
                                                 scale(r), gx.data() + r * C);
        return std::vector<Tensor<T>>{gx};
    });
}

/// Negative log-likelihood of log-probabilities (e.g. log_softmax output) against targets:
/// loss_i = -log_probs[i, t_i]; same layout, ignore_index and reductions as cross_entropy
/// (including 0, not NaN, for a Mean over all-ignored targets).
/// log_probs: (..., C); targets: (...) int64.
template <class T>
Tensor<T> nll_loss(const Tensor<T>& log_probs, const Tensor<int64_t>& targets, int64_t ignore_index = -100,
                   Reduction reduction = Reduction::Mean) {
    const char* op = "nll_loss";
    const int64_t C = detail::check_class_last(log_probs, targets, op, "log_probs", true);
    if (log_probs.device() != Device::CPU) return detail::nll_loss_device(log_probs, targets, C, ignore_index, reduction);
    const Tensor<T> xc = detail::contiguous_data(log_probs).detach();
    const Tensor<int64_t> tc = detail::contiguous_data(targets).detach();
    const Shape tshape = targets.shape();
    const int64_t N = tc.numel();
    std::vector<int64_t> tgt(N);
    int64_t count = 0;
    for (int64_t r = 0; r < N; ++r) {
        tgt[r] = detail::checked_target(tc, r, C, ignore_index, tshape, op);
        count += tgt[r] >= 0;
    }
    Tensor<T> rows = Tensor<T>::zeros({N});
    for (int64_t r = 0; r < N; ++r)
        if (tgt[r] >= 0) rows.data()[r] = -xc.data()[r * C + tgt[r]];
    Tensor<T> out = detail::reduce_rows(rows, tshape, reduction, count);
    const Shape xshape = log_probs.shape();
    return record<T>(out, op, {log_probs}, [xshape, tgt, C, N, reduction, count](const Tensor<T>& g) {
        const detail::RowScale<T> scale{reduction, detail::contiguous_data(g), count};
        Tensor<T> gx = Tensor<T>::zeros(xshape);
        for (int64_t r = 0; r < N; ++r)
            if (tgt[r] >= 0) gx.data()[r * C + tgt[r]] = -scale(r);
        return std::vector<Tensor<T>>{gx};
    });
}

}  // namespace moekd
