// relation.hpp — the cosine-relation losses of TCD (eq. 6-8 for token relations, eq. 9-11 for
// attention query-key relations), the token-group sampler, and a gather helper. Optimised code.
//
// The student and teacher may have different widths: what is compared is the N x N matrix of
// cosine similarities between tokens, which has the same size on both sides. Fused forward:
// normalise every row once (kernels/relation.cuh), one GEMM per group for each Gram matrix
// (detail::gemm, so OpenBLAS), E = Gs - Gt and the mean of E^2 in one pass. Backward in closed
// form: one GEMM per group for the normalised-row gradient, then the normalisation's backward.
// detail::relation_loss_reference / qk_relation_loss_reference are the naive double loops that
// the tests hold these to. On CUDA tensors both losses take the same steps on the device: the row
// kernels of kernels/relation.cu through the device table (a warp or a block per row, fixed-order
// reductions), the device table's GEMM per group, the upstream gradient read on the device.
#pragma once

#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "../kernels/relation.cuh"
#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/matmul.hpp"

namespace moekd {
namespace detail {

/// Rows normalised to unit length: y (rows, D) contiguous and each row's divisor max(||x||, eps).
template <class T>
struct NormRows {
    Tensor<T> y;
    std::vector<T> d;
    int64_t rows = 0, D = 0;
};

/// The eps of the cosine: rows with norm <= eps are divided by eps instead.
template <class T>
constexpr T relation_eps() {
    return static_cast<T>(1e-8);
}

/// Normalises the rows of x (any shape, last dim D) into a fresh contiguous (rows, D) tensor.
template <class T>
NormRows<T> normalize_rows(const Tensor<T>& x) {
    NormRows<T> n;
    n.D = x.shape()[x.dim() - 1];
    n.rows = n.D ? x.numel() / n.D : 0;
    const Tensor<T> xc = contiguous_data(x);
    n.y = Tensor<T>::empty({n.rows, n.D});
    n.d.resize(static_cast<size_t>(n.rows));
    for (int64_t r = 0; r < n.rows; ++r)
        n.d[r] = kern::l2_normalize_row(xc.data() + r * n.D, n.y.data() + r * n.D, n.D, relation_eps<T>());
    return n;
}

/// Gradient of the input of normalize_rows from the gradient gy (rows, D) of its output
/// (overwritten in place and returned).
template <class T>
Tensor<T> normalize_rows_backward(const NormRows<T>& n, Tensor<T> gy) {
    for (int64_t r = 0; r < n.rows; ++r)
        kern::l2_normalize_backward_row(n.y.data() + r * n.D, gy.data() + r * n.D, gy.data() + r * n.D, n.D, n.d[r],
                                        !(n.d[r] > relation_eps<T>()));
    return gy;
}

/// C_b = alpha * A_b B_b^T + beta * C_b for b < batch.  A: (batch, N, Da), B: (batch, M, Da),
/// C: (batch, N, M), all contiguous buffers.
template <class T>
void gram_batched(T alpha, const T* A, const T* B, T beta, T* C, int64_t batch, int64_t N, int64_t M, int64_t Da) {
    for (int64_t b = 0; b < batch; ++b) {
        MatRef<const T> a{A + b * N * Da, N, Da, Da, 1};
        MatRef<const T> bt{B + b * M * Da, Da, M, 1, Da};  // B_b^T as a view
        gemm(alpha, a, bt, beta, MatRef<T>{C + b * N * M, N, M, M, 1});
    }
}

/// Out_b = alpha * op(E_b) X_b.  E: (batch, N, M); op(E) = E (X: (batch, M, Dx), Out: (batch, N, Dx))
/// or E^T (X: (batch, N, Dx), Out: (batch, M, Dx)).
template <class T>
void gram_grad_batched(T alpha, const T* E, bool trans_e, const T* X, T* Out, int64_t batch, int64_t N, int64_t M,
                       int64_t Dx) {
    const int64_t R = trans_e ? M : N, K = trans_e ? N : M;
    for (int64_t b = 0; b < batch; ++b) {
        MatRef<const T> e{E + b * N * M, N, M, M, 1};
        gemm(alpha, trans_e ? e.t() : e, MatRef<const T>{X + b * K * Dx, K, Dx, Dx, 1}, T(0),
             MatRef<T>{Out + b * R * Dx, R, Dx, Dx, 1});
    }
}

/// Two operands of a relation loss on one device, or an error naming the op, both operands and
/// both devices.
template <class T>
void require_relation_device(const Tensor<T>& a, const char* na, const Tensor<T>& b, const char* nb, const char* op) {
    MOEKD_CHECK(a.device() == b.device(), op, ": ", na, " of shape ", a.shape(), " is on ", a.device(), " but ", nb,
                " of shape ", b.shape(), " is on ", b.device(),
                " (operands on different devices; move them with .to(device))");
}

// ---- the device half (kernels/relation.cu through the device table, GEMMs through its gemm) ----

/// Rows normalised on the device: y (rows, D) contiguous and the divisors nrm (rows), both there.
template <class T>
struct DeviceNormRows {
    Tensor<T> y, nrm;
    int64_t rows = 0, D = 0;
};

template <class T>
DeviceNormRows<T> normalize_rows_device(const Tensor<T>& x, const char* op) {
    DeviceNormRows<T> n;
    n.D = x.shape()[x.dim() - 1];
    n.rows = n.D ? x.numel() / n.D : 0;
    const Tensor<T> xc = contiguous_data(x).detach();
    n.y = Tensor<T>::empty({n.rows, n.D}, x.device());
    n.nrm = Tensor<T>::empty({n.rows}, x.device());
    device_entry(DeviceOps<T>::cuda().l2_normalize_rows, op, x.shape())(xc.data(), n.y.data(), n.nrm.data(), n.rows,
                                                                        n.D, relation_eps<T>());
    return n;
}

/// normalize_rows_backward on the device: gy (rows, D) is overwritten with the input's gradient
/// of scale[0] * gy (scale: a device scalar, the upstream gradient) and returned.
template <class T>
Tensor<T> normalize_rows_backward_device(const DeviceNormRows<T>& n, Tensor<T> gy, const Tensor<T>& scale,
                                         const char* op) {
    device_entry(DeviceOps<T>::cuda().l2_normalize_rows_backward, op, gy.shape())(
        n.y.data(), gy.data(), scale.data(), n.nrm.data(), gy.data(), n.rows, n.D, relation_eps<T>());
    return gy;
}

/// gram_batched on the device: one GEMM of the device table per batch entry.
template <class T>
void gram_batched_device(T alpha, const T* A, const T* B, T beta, T* C, int64_t batch, int64_t N, int64_t M,
                         int64_t Da, const char* op, const Shape& shape) {
    const auto gemm = device_entry(DeviceOps<T>::cuda().gemm, op, shape);
    for (int64_t b = 0; b < batch; ++b)
        gemm(false, true, N, M, Da, alpha, A + b * N * Da, Da, B + b * M * Da, Da, beta, C + b * N * M, M);
}

/// gram_grad_batched on the device: Out_b = alpha * op(E_b) X_b, one GEMM per batch entry.
template <class T>
void gram_grad_batched_device(T alpha, const T* E, bool trans_e, const T* X, T* Out, int64_t batch, int64_t N,
                              int64_t M, int64_t Dx, const char* op, const Shape& shape) {
    const auto gemm = device_entry(DeviceOps<T>::cuda().gemm, op, shape);
    const int64_t R = trans_e ? M : N, K = trans_e ? N : M;
    for (int64_t b = 0; b < batch; ++b)
        gemm(trans_e, false, R, Dx, K, alpha, E + b * N * M, M, X + b * K * Dx, Dx, T(0), Out + b * R * Dx, Dx);
}

/// The loss of E = (Gram of a_hat, b_hat) - (Gram of c_hat, d_hat), batch x N x N, on the device:
/// E is left in place for the backward; returns the scalar loss c * sum(E^2) on the device.
template <class T>
Tensor<T> relation_diff_device(Tensor<T>& E, const Tensor<T>& Gt, double c, const char* op) {
    const int64_t N = E.size(-1), rows = E.numel() / N;
    Tensor<T> sq = Tensor<T>::empty({rows}, E.device()), loss = Tensor<T>::empty(Shape{}, E.device());
    device_entry(DeviceOps<T>::cuda().relation_diff, op, E.shape())(E.data(), Gt.data(), sq.data(), loss.data(), rows,
                                                                     N, c);
    return loss;
}

/// The upstream gradient of a device loss, contiguous on `dev`.
template <class T>
Tensor<T> relation_upstream(const Tensor<T>& g, Device dev) {
    return contiguous_data(g.device() == dev ? g : g.detach().to(dev));
}

/// relation_loss's device half: the forward and backward of relation_loss below, step for step,
/// with the row kernels of the device table and its GEMM. The upstream gradient scales the rows
/// inside the normalisation's backward, so it is never copied to the host.
template <class T>
Tensor<T> relation_loss_device(const Tensor<T>& student, const Tensor<T>& teacher, bool detach_teacher, int64_t G,
                               int64_t N, int64_t Ds, int64_t Dt) {
    const char* op = "relation_loss";
    const Device dev = student.device();
    auto ns = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(student, op));
    auto nt = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(teacher, op));
    Tensor<T> E = Tensor<T>::empty({G, N, N}, dev), Gt = Tensor<T>::empty({G, N, N}, dev);
    gram_batched_device(T(1), ns->y.data(), ns->y.data(), T(0), E.data(), G, N, N, Ds, op, student.shape());
    gram_batched_device(T(1), nt->y.data(), nt->y.data(), T(0), Gt.data(), G, N, N, Dt, op, teacher.shape());
    const double c = 1.0 / double(G * N * N);
    Tensor<T> out = relation_diff_device(E, Gt, c, op);
    const Tensor<T> it = detach_teacher ? teacher.detach() : teacher;
    const bool want_s = needs_grad(student), want_t = needs_grad(it);
    const Shape ss = student.shape(), ts = teacher.shape();
    return record<T>(out, op, {student, it}, [ns, nt, E, G, N, Ds, Dt, c, want_s, want_t, ss, ts, op,
                                              dev](const Tensor<T>& g) {
        // as on the CPU: d/d s_hat = 4c g E s_hat (g applied in the normalisation's backward)
        const Tensor<T> gc = relation_upstream(g, dev);
        const T alpha = static_cast<T>(4.0 * c);
        Tensor<T> gs, gt;
        if (want_s) {
            Tensor<T> gy = Tensor<T>::empty({G * N, Ds}, dev);
            gram_grad_batched_device(alpha, E.data(), false, ns->y.data(), gy.data(), G, N, N, Ds, op, ss);
            gs = normalize_rows_backward_device(*ns, gy, gc, op).reshape(ss);
        }
        if (want_t) {
            Tensor<T> gy = Tensor<T>::empty({G * N, Dt}, dev);
            gram_grad_batched_device(static_cast<T>(-alpha), E.data(), false, nt->y.data(), gy.data(), G, N, N, Dt,
                                     op, ts);
            gt = normalize_rows_backward_device(*nt, gy, gc, op).reshape(ts);
        }
        return std::vector<Tensor<T>>{gs, gt};
    });
}

/// qk_relation_loss's device half, as relation_loss_device.
template <class T>
Tensor<T> qk_relation_loss_device(const Tensor<T>& q_s, const Tensor<T>& k_s, const Tensor<T>& q_t,
                                  const Tensor<T>& k_t, bool detach_teacher, int64_t B, int64_t N, int64_t Ds,
                                  int64_t Dt) {
    const char* op = "qk_relation_loss";
    const Device dev = q_s.device();
    auto nqs = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(q_s, op));
    auto nks = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(k_s, op));
    auto nqt = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(q_t, op));
    auto nkt = std::make_shared<DeviceNormRows<T>>(normalize_rows_device(k_t, op));
    Tensor<T> E = Tensor<T>::empty({B, N, N}, dev), Ct = Tensor<T>::empty({B, N, N}, dev);
    gram_batched_device(T(1), nqs->y.data(), nks->y.data(), T(0), E.data(), B, N, N, Ds, op, q_s.shape());
    gram_batched_device(T(1), nqt->y.data(), nkt->y.data(), T(0), Ct.data(), B, N, N, Dt, op, q_t.shape());
    const double c = 1.0 / double(B * N * N);
    Tensor<T> out = relation_diff_device(E, Ct, c, op);
    const Tensor<T> iqt = detach_teacher ? q_t.detach() : q_t, ikt = detach_teacher ? k_t.detach() : k_t;
    const bool w[4] = {needs_grad(q_s), needs_grad(k_s), needs_grad(iqt), needs_grad(ikt)};
    const Shape ss = q_s.shape(), ts = q_t.shape();
    return record<T>(out, op, {q_s, k_s, iqt, ikt},
                     [nqs, nks, nqt, nkt, E, B, N, Ds, Dt, c, w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], ss, ts, op,
                      dev](const Tensor<T>& g) {
                         // as on the CPU: d/d q_hat = dC k_hat, d/d k_hat = dC^T q_hat, dC = +-2c g E
                         const Tensor<T> gc = relation_upstream(g, dev);
                         const T alpha = static_cast<T>(2.0 * c);
                         auto side = [&](bool want, T a, bool trans, const DeviceNormRows<T>& other,
                                         const DeviceNormRows<T>& self, int64_t D, const Shape& shape) {
                             if (!want) return Tensor<T>();
                             Tensor<T> gy = Tensor<T>::empty({B * N, D}, dev);
                             gram_grad_batched_device(a, E.data(), trans, other.y.data(), gy.data(), B, N, N, D, op,
                                                      shape);
                             return normalize_rows_backward_device(self, gy, gc, op).reshape(shape);
                         };
                         return std::vector<Tensor<T>>{side(w0, alpha, false, *nks, *nqs, Ds, ss),
                                                       side(w1, alpha, true, *nqs, *nks, Ds, ss),
                                                       side(w2, static_cast<T>(-alpha), false, *nkt, *nqt, Dt, ts),
                                                       side(w3, static_cast<T>(-alpha), true, *nqt, *nkt, Dt, ts)};
                     });
}

/// cos(x_i, y_j) in double for rows of the naive references (norms clamped at eps like the op).
template <class T>
double cosine_reference(const std::vector<T>& v, int64_t i, const std::vector<T>& w, int64_t j, int64_t D) {
    double xy = 0, xx = 0, yy = 0;
    for (int64_t k = 0; k < D; ++k) {
        xy += double(v[i * D + k]) * double(w[j * D + k]);
        xx += double(v[i * D + k]) * double(v[i * D + k]);
        yy += double(w[j * D + k]) * double(w[j * D + k]);
    }
    const double eps = double(relation_eps<T>());
    return xy / (std::max(std::sqrt(xx), eps) * std::max(std::sqrt(yy), eps));
}

/// Naive relation loss: mean over groups and token pairs of (cos_s - cos_t)^2, double loops.
/// student: (N, Ds) or (G, N, Ds); teacher: (N, Dt) or (G, N, Dt).
template <class T>
double relation_loss_reference(const Tensor<T>& student, const Tensor<T>& teacher) {
    const int64_t Ds = student.size(-1), Dt = teacher.size(-1), N = student.size(-2);
    const int64_t G = student.dim() == 3 ? student.size(0) : 1;
    const std::vector<T> s = student.to_vector(), t = teacher.to_vector();
    double total = 0;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < N; ++j) {
                const double e = cosine_reference(s, g * N + i, s, g * N + j, Ds) -
                                 cosine_reference(t, g * N + i, t, g * N + j, Dt);
                total += e * e;
            }
    return total / double(G * N * N);
}

/// Naive query-key relation loss: mean over (batch, head, i, j) of (cos(qs_i, ks_j) - cos(qt_i, kt_j))^2.
template <class T>
double qk_relation_loss_reference(const Tensor<T>& q_s, const Tensor<T>& k_s, const Tensor<T>& q_t,
                                  const Tensor<T>& k_t) {
    const int64_t Ds = q_s.size(-1), Dt = q_t.size(-1), N = q_s.size(-2);
    const int64_t B = q_s.numel() / (N * Ds);
    const std::vector<T> qs = q_s.to_vector(), ks = k_s.to_vector(), qt = q_t.to_vector(), kt = k_t.to_vector();
    double total = 0;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < N; ++j) {
                const double e = cosine_reference(qs, b * N + i, ks, b * N + j, Ds) -
                                 cosine_reference(qt, b * N + i, kt, b * N + j, Dt);
                total += e * e;
            }
    return total / double(B * N * N);
}

}  // namespace detail

/// Token-relation loss (TCD eq. 6-8): for each group, the N x N matrices of cosine similarities
/// between the student's tokens and between the teacher's tokens are compared:
///   loss = 1 / (G N^2) * sum_g sum_{i,j} (cos(s_gi, s_gj) - cos(t_gi, t_gj))^2
/// (the mean over groups and token pairs, diagonal included). A row's norm is clamped at 1e-8.
/// student: (N, Ds) or (G, N, Ds) groups; teacher: (N, Dt) or (G, N, Dt), same N and G, widths
/// may differ. detach_teacher (default): no gradient to the teacher. Returns a scalar.
template <class T>
Tensor<T> relation_loss(const Tensor<T>& student, const Tensor<T>& teacher, bool detach_teacher = true) {
    const char* op = "relation_loss";
    detail::require_relation_device(student, "student", teacher, "teacher", op);
    MOEKD_CHECK((student.dim() == 2 || student.dim() == 3) && teacher.dim() == student.dim(), op,
                ": student of shape ", student.shape(), " and teacher of shape ", teacher.shape(),
                " must both be (N, D) tokens or both (G, N, D) groups of tokens");
    MOEKD_CHECK(student.size(-2) == teacher.size(-2) && (student.dim() == 2 || student.size(0) == teacher.size(0)),
                op, ": student of shape ", student.shape(), " and teacher of shape ", teacher.shape(),
                " have different token counts; HINT: both sides must describe the same tokens (widths may differ)");
    const int64_t N = student.size(-2), Ds = student.size(-1), Dt = teacher.size(-1);
    const int64_t G = student.dim() == 3 ? student.size(0) : 1;
    MOEKD_CHECK(N > 0 && Ds > 0 && Dt > 0 && G > 0, op, ": empty input (student ", student.shape(), ", teacher ",
                teacher.shape(), ")");
    if (student.device() != Device::CPU)
        return detail::relation_loss_device(student, teacher, detach_teacher, G, N, Ds, Dt);
    auto ns = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(student));
    auto nt = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(teacher));
    // E = Gs - Gt: (G, N, N)
    Tensor<T> E = Tensor<T>::empty({G, N, N}), Gt = Tensor<T>::empty({G, N, N});
    detail::gram_batched(T(1), ns->y.data(), ns->y.data(), T(0), E.data(), G, N, N, Ds);
    detail::gram_batched(T(1), nt->y.data(), nt->y.data(), T(0), Gt.data(), G, N, N, Dt);
    double total = 0;
    for (int64_t r = 0; r < G * N; ++r) total += kern::relation_diff_row(E.data() + r * N, Gt.data() + r * N, N);
    const double c = 1.0 / double(G * N * N);
    Tensor<T> out = Tensor<T>::scalar(static_cast<T>(total * c));
    const Tensor<T> it = detach_teacher ? teacher.detach() : teacher;
    const bool want_s = needs_grad(student), want_t = needs_grad(it);
    const Shape ss = student.shape(), ts = teacher.shape();
    return record<T>(out, op, {student, it}, [ns, nt, E, G, N, Ds, Dt, c, want_s, want_t, ss, ts](const Tensor<T>& g) {
        // d loss / d Gs = 2c g E; E is symmetric, so d/d s_hat = (dGs + dGs^T) s_hat = 4c g E s_hat.
        const T alpha = static_cast<T>(4.0 * c * double(detail::contiguous_data(g).data()[0]));
        Tensor<T> gs, gt;
        if (want_s) {
            Tensor<T> gy = Tensor<T>::empty({G * N, Ds});
            detail::gram_grad_batched(alpha, E.data(), false, ns->y.data(), gy.data(), G, N, N, Ds);
            gs = detail::normalize_rows_backward(*ns, gy).reshape(ss);
        }
        if (want_t) {
            Tensor<T> gy = Tensor<T>::empty({G * N, Dt});
            detail::gram_grad_batched(-alpha, E.data(), false, nt->y.data(), gy.data(), G, N, N, Dt);
            gt = detail::normalize_rows_backward(*nt, gy).reshape(ts);
        }
        return std::vector<Tensor<T>>{gs, gt};
    });
}

/// Attention query-key relation loss (TCD eq. 9-11): per head, the N x N matrix of cosines
/// cos(q_i, k_j) of the student is compared with the teacher's:
///   loss = 1 / (G H N^2) * sum_{g,h,i,j} (cos(qs_ghi, ks_ghj) - cos(qt_ghi, kt_ghj))^2
/// q_s, k_s: (G, H, N, Ds); q_t, k_t: (G, H, N, Dt) (any rank >= 3: every dim but the head width
/// must match between student and teacher; the head counts must be equal). detach_teacher
/// (default): no gradient to q_t, k_t. Returns a scalar.
template <class T>
Tensor<T> qk_relation_loss(const Tensor<T>& q_s, const Tensor<T>& k_s, const Tensor<T>& q_t, const Tensor<T>& k_t,
                           bool detach_teacher = true) {
    const char* op = "qk_relation_loss";
    detail::require_relation_device(q_s, "q_s", k_s, "k_s", op);
    detail::require_relation_device(q_s, "q_s", q_t, "q_t", op);
    detail::require_relation_device(q_s, "q_s", k_t, "k_t", op);
    MOEKD_CHECK(q_s.dim() >= 3 && q_s.shape() == k_s.shape(), op, ": student queries ", q_s.shape(), " and keys ",
                k_s.shape(), " must have the same shape (G, H, N, Dh)");
    MOEKD_CHECK(q_t.dim() >= 3 && q_t.shape() == k_t.shape(), op, ": teacher queries ", q_t.shape(), " and keys ",
                k_t.shape(), " must have the same shape (G, H, N, Dh)");
    MOEKD_CHECK(q_s.dim() == q_t.dim(), op, ": student q/k of shape ", q_s.shape(), " and teacher q/k of shape ",
                q_t.shape(), " have different ranks");
    MOEKD_CHECK(q_s.size(-3) == q_t.size(-3), op, ": student has ", q_s.size(-3), " heads (q/k of shape ",
                q_s.shape(), "), teacher has ", q_t.size(-3), " (q/k of shape ", q_t.shape(),
                "); HINT: the heads must match one to one");
    for (int64_t d = 0; d + 1 < q_s.dim(); ++d)
        MOEKD_CHECK(q_s.shape()[d] == q_t.shape()[d], op, ": student q/k of shape ", q_s.shape(),
                    " and teacher q/k of shape ", q_t.shape(), " differ in dim ", d,
                    " (only the head width, the last dim, may differ)");
    const int64_t N = q_s.size(-2), Ds = q_s.size(-1), Dt = q_t.size(-1);
    MOEKD_CHECK(N > 0 && Ds > 0 && Dt > 0 && q_s.numel() > 0, op, ": empty input (student ", q_s.shape(),
                ", teacher ", q_t.shape(), ")");
    const int64_t B = q_s.numel() / (N * Ds);  // groups x heads
    if (q_s.device() != Device::CPU)
        return detail::qk_relation_loss_device(q_s, k_s, q_t, k_t, detach_teacher, B, N, Ds, Dt);
    auto nqs = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(q_s));
    auto nks = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(k_s));
    auto nqt = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(q_t));
    auto nkt = std::make_shared<detail::NormRows<T>>(detail::normalize_rows(k_t));
    Tensor<T> E = Tensor<T>::empty({B, N, N}), Ct = Tensor<T>::empty({B, N, N});
    detail::gram_batched(T(1), nqs->y.data(), nks->y.data(), T(0), E.data(), B, N, N, Ds);
    detail::gram_batched(T(1), nqt->y.data(), nkt->y.data(), T(0), Ct.data(), B, N, N, Dt);
    double total = 0;
    for (int64_t r = 0; r < B * N; ++r) total += kern::relation_diff_row(E.data() + r * N, Ct.data() + r * N, N);
    const double c = 1.0 / double(B * N * N);
    Tensor<T> out = Tensor<T>::scalar(static_cast<T>(total * c));
    const Tensor<T> iqt = detach_teacher ? q_t.detach() : q_t, ikt = detach_teacher ? k_t.detach() : k_t;
    const bool w[4] = {needs_grad(q_s), needs_grad(k_s), needs_grad(iqt), needs_grad(ikt)};
    const Shape ss = q_s.shape(), ts = q_t.shape();
    return record<T>(out, op, {q_s, k_s, iqt, ikt},
                     [nqs, nks, nqt, nkt, E, B, N, Ds, Dt, c, w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], ss,
                      ts](const Tensor<T>& g) {
                         // d loss / d C = 2c g E (student), -2c g E (teacher); C = q_hat k_hat^T, so
                         // d/d q_hat = dC k_hat and d/d k_hat = dC^T q_hat.
                         const T alpha = static_cast<T>(2.0 * c * double(detail::contiguous_data(g).data()[0]));
                         auto side = [&](bool want, T a, bool trans, const detail::NormRows<T>& other,
                                         const detail::NormRows<T>& self, int64_t D, const Shape& shape) {
                             if (!want) return Tensor<T>();
                             Tensor<T> gy = Tensor<T>::empty({B * N, D});
                             detail::gram_grad_batched(a, E.data(), trans, other.y.data(), gy.data(), B, N, N, D);
                             return detail::normalize_rows_backward(self, gy).reshape(shape);
                         };
                         return std::vector<Tensor<T>>{side(w0, alpha, false, *nks, *nqs, Ds, ss),
                                                       side(w1, alpha, true, *nqs, *nks, Ds, ss),
                                                       side(w2, -alpha, false, *nkt, *nqt, Dt, ts),
                                                       side(w3, -alpha, true, *nqt, *nkt, Dt, ts)};
                     });
}

/// G groups of N distinct token positions in [0, num_tokens) (TCD samples 32 groups of 128):
/// without replacement within a group, independently across groups (a partial Fisher-Yates
/// shuffle per group). Returns Tensor<int64_t> of shape (G, N).
inline Tensor<int64_t> sample_token_groups(int64_t num_tokens, int64_t groups, int64_t group_size, Generator& gen) {
    MOEKD_CHECK(groups >= 1 && group_size >= 1, "sample_token_groups: need groups >= 1 and group_size >= 1, got ",
                groups, " and ", group_size);
    MOEKD_CHECK(group_size <= num_tokens, "sample_token_groups: group_size ", group_size, " exceeds num_tokens ",
                num_tokens, " (tokens are drawn without replacement within a group)");
    std::vector<int64_t> perm(static_cast<size_t>(num_tokens));
    std::iota(perm.begin(), perm.end(), int64_t(0));
    Tensor<int64_t> out = Tensor<int64_t>::empty({groups, group_size});
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t i = 0; i < group_size; ++i) {
            // the permutation left by the previous group is as good a start as the identity
            std::swap(perm[i], perm[gen.randint(i, num_tokens)]);
            out.data()[g * group_size + i] = perm[i];
        }
    return out;
}

/// The rows of x picked by a (G, N) index tensor, as (G, N, D) groups (differentiable in x).
/// x: (M, D); idx: (G, N) int64 in [0, M) (e.g. from sample_token_groups).
template <class T>
Tensor<T> gather_token_groups(const Tensor<T>& x, const Tensor<int64_t>& idx) {
    MOEKD_CHECK(x.dim() == 2 && idx.dim() == 2, "gather_token_groups: x must be (M, D) and idx (G, N), got ",
                x.shape(), " and ", idx.shape());
    const Tensor<int64_t> flat = Tensor<int64_t>::from_vector(idx.to_vector(), Shape{idx.numel()}).to(x.device());
    return index_select(x, 0, flat).reshape({idx.size(0), idx.size(1), x.size(1)});
}

}  // namespace moekd
