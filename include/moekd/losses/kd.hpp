// kd.hpp — knowledge-transfer losses on logits: the symmetric KL of TSJT (eq. 3) and the soft /
// hard distillation of OneS (eq. 15-16). Optimised code, with naive references beside it.
//
// symmetric_kl is fused: one forward pass per row computes both log-softmaxes' statistics and
// KL(p_a || p_b) + KL(p_b || p_a) from four running sums (kernels/kl.cuh), and the backward writes
// both gradients in closed form in one pass; no graph of small ops, no temporaries the size of
// the logits besides the gradients themselves. Rows are split over threads (kt_parallel_rows)
// when the work is large. soft_distill is the same row kernel on the logits scaled by 1 / T.
// On CUDA tensors the three losses run the same math through the device table (kernels/kl.cu:
// a warp or a block per row, fixed-order reductions, so the same input gives the same bits;
// the row sums add in a different order than the CPU's, so the two agree to rounding, about
// 1e-15 relative in double), with the pad mask (on the logits' device), the kept-token count
// and the upstream gradient all read on the device: no host synchronisation. hard_distill is
// argmax + cross_entropy, both of which run on either device.
// detail::symmetric_kl_reference / soft_distill_reference are plain double loops kept as the
// ground truth of the tests.
#pragma once

#include <algorithm>
#include <vector>

#include "../core/parallel.hpp"
#include "../kernels/kl.cuh"
#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/loss.hpp"

namespace moekd {
namespace detail {

/// Calls f(r0, r1) on contiguous blocks of [0, rows), on the pool's threads (core/parallel.hpp)
/// when rows * row_cost (elements touched) is at least 2^18, enough to pay for waking them. Every
/// row is written by one call, so the split never changes a result. f must not throw.
template <class F>
void kt_parallel_rows(int64_t rows, int64_t row_cost, F f) {
    // parallel_for splits when rows >= 2 * grain, i.e. when rows * row_cost >= 2^18
    const int64_t grain = std::max<int64_t>(1, ((int64_t(1) << 17) + row_cost - 1) / std::max<int64_t>(row_cost, 1));
    parallel_for(rows, grain, f);
}

/// Two operands of a loss on one device, or an error naming the op, both operands and both devices.
template <class A, class B>
void require_loss_device(const Tensor<A>& a, const char* na, const Tensor<B>& b, const char* nb, const char* op) {
    MOEKD_CHECK(a.device() == b.device(), op, ": ", na, " of shape ", a.shape(), " is on ", a.device(), " but ", nb,
                " of shape ", b.shape(), " is on ", b.device(),
                " (operands on different devices; move them with .to(device))");
}

/// Checks two logit tensors of the same shape (..., V), V >= 1, at least 2-D, on one device;
/// returns V.
template <class T>
int64_t check_logit_pair(const Tensor<T>& a, const Tensor<T>& b, const char* op, const char* na, const char* nb) {
    require_loss_device(a, na, b, nb, op);
    MOEKD_CHECK(a.dim() >= 2, op, ": ", na, " must be (N, V) or (B, T, V), got shape ", a.shape());
    MOEKD_CHECK(a.shape() == b.shape(), op, ": ", na, " of shape ", a.shape(), " and ", nb, " of shape ", b.shape(),
                " must have the same shape");
    const int64_t V = a.shape()[a.dim() - 1];
    MOEKD_CHECK(V > 0, op, ": ", na, " of shape ", a.shape(), " has an empty vocabulary dim");
    return V;
}

/// Checks a pad mask (if defined) against the logits: their leading shape, their device.
template <class T>
void check_pad_mask(const Tensor<uint8_t>& mask, const Tensor<T>& logits, const char* op) {
    if (!mask.defined()) return;
    const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
    MOEKD_CHECK(mask.shape() == lead, op, ": pad_mask of shape ", mask.shape(), " for logits of shape ",
                logits.shape(), "; expected ", lead, " (one byte per token, 1 = padding)");
    require_loss_device(mask, "pad_mask", logits, "logits", op);
}

/// The pad mask as one byte per row (empty vector: no mask); checks its shape against the
/// logits' leading shape.
template <class T>
std::vector<uint8_t> row_pad_mask(const Tensor<uint8_t>& mask, const Tensor<T>& logits, const char* op) {
    check_pad_mask(mask, logits, op);
    if (!mask.defined()) return {};
    return mask.to_vector();
}

/// A device pad mask as the kernels read it: one contiguous byte per row (a strided view is
/// copied on the device); undefined stays undefined (no mask).
inline Tensor<uint8_t> device_pad_mask(const Tensor<uint8_t>& mask) {
    return mask.defined() ? contiguous_data(mask) : mask;
}

/// symmetric_kl's device half: the fused row kernels of the device table (kernels/kl.cuh). The
/// kept-token count and the loss stay on the device; the backward reads the upstream gradient and
/// the count there too (no host synchronisation).
template <class T>
Tensor<T> symmetric_kl_device(const Tensor<T>& logits_a, const Tensor<T>& logits_b, const Tensor<uint8_t>& pad_mask,
                              bool detach_a, bool detach_b, int64_t V) {
    const char* op = "symmetric_kl";
    const Device dev = logits_a.device();
    const Tensor<T> ac = contiguous_data(logits_a).detach();
    const Tensor<T> bc = contiguous_data(logits_b).detach();
    const Tensor<uint8_t> mask = device_pad_mask(pad_mask);  // kept alive by the closure
    const uint8_t* mp = mask.defined() ? mask.data() : nullptr;
    const int64_t rows = ac.numel() / V;
    Tensor<T> stats = Tensor<T>::empty({rows, int64_t(sizeof(kern::KlRowStats<T>) / sizeof(T))}, dev);
    Tensor<int64_t> count = Tensor<int64_t>::empty({1}, dev);
    Tensor<T> out = Tensor<T>::empty(Shape{}, dev);
    device_entry(DeviceOps<T>::cuda().symmetric_kl, op, logits_a.shape())(ac.data(), bc.data(), mp, stats.data(),
                                                                          out.data(), count.data(), rows, V);
    const Tensor<T> ia = detach_a ? logits_a.detach() : logits_a;
    const Tensor<T> ib = detach_b ? logits_b.detach() : logits_b;
    const bool want_a = needs_grad(ia), want_b = needs_grad(ib);
    return record<T>(out, op, {ia, ib}, [ac, bc, mask, stats, count, V, rows, want_a, want_b, op](const Tensor<T>& g) {
        Tensor<T> ga = want_a ? Tensor<T>::empty(ac.shape(), ac.device()) : Tensor<T>();
        Tensor<T> gb = want_b ? Tensor<T>::empty(bc.shape(), bc.device()) : Tensor<T>();
        if (want_a || want_b) {
            const Tensor<T> gc = contiguous_data(g.device() == ac.device() ? g : g.detach().to(ac.device()));
            device_entry(DeviceOps<T>::cuda().symmetric_kl_backward, op, ac.shape())(
                ac.data(), bc.data(), mask.defined() ? mask.data() : nullptr, stats.data(), gc.data(), count.data(),
                want_a ? ga.data() : nullptr, want_b ? gb.data() : nullptr, rows, V);
        }
        return std::vector<Tensor<T>>{ga, gb};
    });
}

/// soft_distill's device half: the same fused row kernel with the logits scaled by 1 / T as they
/// are read (no scaled copies), and a per-element backward.
template <class T>
Tensor<T> soft_distill_device(const Tensor<T>& student_logits, const Tensor<T>& teacher_logits, double temperature,
                              int64_t V) {
    const char* op = "soft_distill";
    const Device dev = student_logits.device();
    const Tensor<T> sc = contiguous_data(student_logits).detach();
    const Tensor<T> tc = contiguous_data(teacher_logits).detach();
    const int64_t rows = sc.numel() / V;
    Tensor<T> stats = Tensor<T>::empty({rows, int64_t(sizeof(kern::KlRowStats<T>) / sizeof(T))}, dev);
    Tensor<T> out = Tensor<T>::empty(Shape{}, dev);
    device_entry(DeviceOps<T>::cuda().soft_distill, op, student_logits.shape())(sc.data(), tc.data(), temperature,
                                                                                stats.data(), out.data(), rows, V);
    return record<T>(out, op, {student_logits}, [sc, tc, stats, V, rows, temperature, op](const Tensor<T>& g) {
        Tensor<T> gs = Tensor<T>::empty(sc.shape(), sc.device());
        if (rows > 0) {
            const Tensor<T> gc = contiguous_data(g.device() == sc.device() ? g : g.detach().to(sc.device()));
            device_entry(DeviceOps<T>::cuda().soft_distill_backward, op, sc.shape())(
                sc.data(), tc.data(), temperature, stats.data(), gc.data(), gs.data(), rows, V);
        }
        return std::vector<Tensor<T>>{gs};
    });
}

/// Naive symmetric KL: per token sum_v p (log p - log q) + q (log q - log p) in double, averaged
/// over the tokens whose mask byte is 0 (0 if there are none). No autograd.
template <class T>
double symmetric_kl_reference(const Tensor<T>& a, const Tensor<T>& b, const Tensor<uint8_t>& pad_mask = {}) {
    const int64_t V = check_logit_pair(a, b, "symmetric_kl_reference", "logits_a", "logits_b");
    const std::vector<uint8_t> pad = row_pad_mask(pad_mask, a, "symmetric_kl_reference");
    const std::vector<T> va = a.to_vector(), vb = b.to_vector();
    const int64_t rows = static_cast<int64_t>(va.size()) / V;
    double total = 0;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; ++r) {
        if (!pad.empty() && pad[r]) continue;
        auto lsm = [&](const std::vector<T>& v) {
            double m = -INFINITY, s = 0;
            for (int64_t i = 0; i < V; ++i) m = std::max(m, double(v[r * V + i]));
            for (int64_t i = 0; i < V; ++i) s += std::exp(double(v[r * V + i]) - m);
            std::vector<double> out(V);
            for (int64_t i = 0; i < V; ++i) out[i] = double(v[r * V + i]) - m - std::log(s);
            return out;
        };
        const std::vector<double> la = lsm(va), lb = lsm(vb);
        for (int64_t i = 0; i < V; ++i)
            total += std::exp(la[i]) * (la[i] - lb[i]) + std::exp(lb[i]) * (lb[i] - la[i]);
        ++count;
    }
    return count ? total / double(count) : 0.0;
}

/// Naive soft distillation: T^2 * mean over rows of KL(softmax(t / T) || softmax(s / T)), double.
template <class T>
double soft_distill_reference(const Tensor<T>& student, const Tensor<T>& teacher, double temperature) {
    const int64_t V = check_logit_pair(student, teacher, "soft_distill_reference", "student_logits", "teacher_logits");
    const std::vector<T> vs = student.to_vector(), vt = teacher.to_vector();
    const int64_t rows = static_cast<int64_t>(vs.size()) / V;
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
        auto lsm = [&](const std::vector<T>& v) {
            double m = -INFINITY, s = 0;
            for (int64_t i = 0; i < V; ++i) m = std::max(m, double(v[r * V + i]) / temperature);
            for (int64_t i = 0; i < V; ++i) s += std::exp(double(v[r * V + i]) / temperature - m);
            std::vector<double> out(V);
            for (int64_t i = 0; i < V; ++i) out[i] = double(v[r * V + i]) / temperature - m - std::log(s);
            return out;
        };
        const std::vector<double> ls = lsm(vs), lt = lsm(vt);
        for (int64_t i = 0; i < V; ++i) total += std::exp(lt[i]) * (lt[i] - ls[i]);
    }
    return rows ? temperature * temperature * total / double(rows) : 0.0;
}

}  // namespace detail

/// Symmetric KL divergence between two token distributions (the form of TSJT eq. 3; the paper
/// gives no reduction, so the one below, a mean over tokens of the vocabulary sum, is ours):
///   loss = (1 / #tokens kept) * sum over kept tokens t of
///          sum_v [ p_a(v) log(p_a(v) / p_b(v)) + p_b(v) log(p_b(v) / p_a(v)) ]
/// with p_a = softmax(logits_a[t]), p_b = softmax(logits_b[t]) over the last (vocabulary) dim.
/// That is, the mean over non-pad tokens of the vocabulary sum; in PyTorch terms
///   (F.kl_div(lb, la, log_target=True, reduction='sum') + F.kl_div(la, lb, log_target=True,
///    reduction='sum')) / #kept tokens,   la/lb = log_softmax of logits_a/b on the kept rows.
/// logits_a, logits_b: (N, V) or (B, T, V), same shape, any strides.
/// pad_mask: optional Tensor<uint8_t> of the leading shape ((N) or (B, T)); a nonzero byte marks a
/// padding token, which adds nothing to the loss and gets a zero gradient. When every token is
/// padding the loss is 0 with zero gradients (not NaN).
/// detach_a / detach_b: no gradient flows to that side (as if it were .detach()ed).
/// Returns a scalar.
template <class T>
Tensor<T> symmetric_kl(const Tensor<T>& logits_a, const Tensor<T>& logits_b, const Tensor<uint8_t>& pad_mask = {},
                       bool detach_a = false, bool detach_b = false) {
    const char* op = "symmetric_kl";
    const int64_t V = detail::check_logit_pair(logits_a, logits_b, op, "logits_a", "logits_b");
    if (logits_a.device() != Device::CPU) {
        detail::check_pad_mask(pad_mask, logits_a, op);
        return detail::symmetric_kl_device(logits_a, logits_b, pad_mask, detach_a, detach_b, V);
    }
    const std::vector<uint8_t> pad = detail::row_pad_mask(pad_mask, logits_a, op);
    const Tensor<T> ac = detail::contiguous_data(logits_a).detach();
    const Tensor<T> bc = detail::contiguous_data(logits_b).detach();
    const int64_t rows = ac.numel() / V;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; ++r) count += pad.empty() || !pad[r];
    auto stats = std::make_shared<std::vector<kern::KlRowStats<T>>>(static_cast<size_t>(rows));
    std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
    detail::kt_parallel_rows(rows, V, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            if (!pad.empty() && pad[r]) continue;
            const auto st = kern::kl_forward_row(ac.data() + r * V, bc.data() + r * V, V);
            (*stats)[r] = st;
            row_loss[r] = double(st.kl_ab) + double(st.kl_ba);
        }
    });
    double total = 0;
    for (double v : row_loss) total += v;
    Tensor<T> out = Tensor<T>::scalar(static_cast<T>(count ? total / double(count) : 0.0));
    const Tensor<T> ia = detach_a ? logits_a.detach() : logits_a;
    const Tensor<T> ib = detach_b ? logits_b.detach() : logits_b;
    const bool want_a = needs_grad(ia), want_b = needs_grad(ib);
    return record<T>(out, op, {ia, ib}, [ac, bc, pad, stats, V, rows, count, want_a, want_b](const Tensor<T>& g) {
        Tensor<T> ga = want_a ? Tensor<T>::empty(ac.shape()) : Tensor<T>();
        Tensor<T> gb = want_b ? Tensor<T>::empty(bc.shape()) : Tensor<T>();
        const T scale = count ? detail::contiguous_data(g).data()[0] / static_cast<T>(count) : T(0);
        T* pa = want_a ? ga.data() : nullptr;
        T* pb = want_b ? gb.data() : nullptr;
        detail::kt_parallel_rows(rows, 2 * V, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) {
                T* ra = pa ? pa + r * V : nullptr;
                T* rb = pb ? pb + r * V : nullptr;
                if ((!pad.empty() && pad[r]) || count == 0) {
                    if (ra) std::fill_n(ra, V, T(0));
                    if (rb) std::fill_n(rb, V, T(0));
                    continue;
                }
                kern::kl_sym_backward_row(ac.data() + r * V, bc.data() + r * V, V, (*stats)[r], scale, ra, rb);
            }
        });
        return std::vector<Tensor<T>>{ga, gb};
    });
}

/// Soft distillation (OneS eq. 15, "T^2 L_KL(w(z_s/T), w(z_t/T))", which does not say which way
/// the KL runs; ours is Hinton's, as torch's kd recipes): T^2 * KL(softmax(teacher / T) ||
/// softmax(student / T)), averaged over rows, rows = every leading position ((N) of (N, V), B * T of (B, T, V)).
/// This is F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction='batchmean') * T^2
/// on the 2-D (rows, V) views (torch's batchmean divides by size(0) of what it is given; for a
/// (B, T, V) tensor fed unflattened it would divide by B). The teacher side is always detached.
/// student_logits, teacher_logits: (N, V) or (B, T, V), same shape. temperature > 0.
template <class T>
Tensor<T> soft_distill(const Tensor<T>& student_logits, const Tensor<T>& teacher_logits, double temperature = 1.0) {
    const char* op = "soft_distill";
    const int64_t V = detail::check_logit_pair(student_logits, teacher_logits, op, "student_logits", "teacher_logits");
    MOEKD_CHECK(temperature > 0 && std::isfinite(temperature), op, ": temperature must be positive, got ",
                temperature);
    if (student_logits.device() != Device::CPU)
        return detail::soft_distill_device(student_logits, teacher_logits, temperature, V);
    const T inv_t = static_cast<T>(1.0 / temperature);
    // Scaled contiguous copies: a = teacher / T (the target p), b = student / T.
    Tensor<T> a = Tensor<T>::empty(teacher_logits.shape()), b = Tensor<T>::empty(student_logits.shape());
    {
        const Tensor<T> tc = detail::contiguous_data(teacher_logits), sc = detail::contiguous_data(student_logits);
        for (int64_t i = 0, n = a.numel(); i < n; ++i) a.data()[i] = tc.data()[i] * inv_t;
        for (int64_t i = 0, n = b.numel(); i < n; ++i) b.data()[i] = sc.data()[i] * inv_t;
    }
    const int64_t rows = a.numel() / V;
    auto stats = std::make_shared<std::vector<kern::KlRowStats<T>>>(static_cast<size_t>(rows));
    std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
    detail::kt_parallel_rows(rows, V, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            (*stats)[r] = kern::kl_forward_row(a.data() + r * V, b.data() + r * V, V);
            row_loss[r] = double((*stats)[r].kl_ab);
        }
    });
    double total = 0;
    for (double v : row_loss) total += v;
    const double t2 = temperature * temperature;
    Tensor<T> out = Tensor<T>::scalar(static_cast<T>(rows ? t2 * total / double(rows) : 0.0));
    return record<T>(out, op, {student_logits}, [a, b, stats, V, rows, temperature](const Tensor<T>& g) {
        // d/ds = T^2 * (1 / T) * (q - p) / rows
        const T scale = rows ? static_cast<T>(detail::contiguous_data(g).data()[0] * temperature / double(rows)) : T(0);
        Tensor<T> gs = Tensor<T>::empty(b.shape());
        detail::kt_parallel_rows(rows, 2 * V, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r)
                kern::kl_target_backward_row(a.data() + r * V, b.data() + r * V, V, (*stats)[r], scale,
                                             gs.data() + r * V);
        });
        return std::vector<Tensor<T>>{gs};
    });
}

/// Hard distillation (OneS eq. 16): cross-entropy of the student against the teacher's argmax
/// class per row (ties: the first maximum). Only the student gets a gradient.
/// student_logits, teacher_logits: (N, V) or (B, T, V), same shape. Returns the mean over rows.
/// On a device both steps run there: argmax (ops/index.hpp) and the fused cross_entropy.
template <class T>
Tensor<T> hard_distill(const Tensor<T>& student_logits, const Tensor<T>& teacher_logits) {
    detail::check_logit_pair(student_logits, teacher_logits, "hard_distill", "student_logits", "teacher_logits");
    const Tensor<int64_t> targets = argmax(teacher_logits.detach(), -1);
    return cross_entropy(student_logits, targets);
}

}  // namespace moekd
