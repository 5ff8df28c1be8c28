// matmul.hpp — matrix products with autograd: matmul (torch.matmul semantics), bmm, linear.
//
// Each product ends in detail::gemm_auto (ops/gemm_bf16.hpp): the strided fp32 GEMM of
// ops/gemm.hpp, or inside a bf16 autocast scope (core/precision.hpp) the bf16 product; a
// backward runs in the precision its forward ran in. detail::matmul_reference is the naive
// triple loop (no Eigen) kept as the ground truth that tests compare against. Backward rules sit
// right under each forward.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../autograd/node.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"
#include "view.hpp"
#include "gemm.hpp"
#include "gemm_bf16.hpp"

namespace moekd {
namespace detail {

// ---- shape rules --------------------------------------------------------------------------------

/// Checks a @ b under torch.matmul rules; returns the broadcast batch shape (empty when both
/// operands are at most 2-D).
template <class T>
Shape matmul_batch_shape(const Tensor<T>& a, const Tensor<T>& b, const char* op) {
    require_same_device(a, b, op);
    MOEKD_CHECK(a.dim() >= 1 && b.dim() >= 1, op, ": ", a.shape(), " @ ", b.shape(),
                ": both operands need at least 1 dimension (use mul for scalars)");
    const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
    MOEKD_CHECK(ka == kb, op, ": ", a.shape(), " @ ", b.shape(), ": inner sizes ", ka, " and ", kb, " differ");
    const Shape ba(a.shape().begin(), a.shape().end() - std::min<int64_t>(a.dim(), 2));
    const Shape bb(b.shape().begin(), b.shape().end() - std::min<int64_t>(b.dim(), 2));
    const int64_t r = std::max(ba.rank(), bb.rank());
    Shape out(r);
    for (int64_t i = 0; i < r; ++i) {
        const int64_t da = i < r - ba.rank() ? 1 : ba[i - (r - ba.rank())];
        const int64_t db = i < r - bb.rank() ? 1 : bb[i - (r - bb.rank())];
        MOEKD_CHECK(da == db || da == 1 || db == 1, op, ": ", a.shape(), " @ ", b.shape(), ": batch dims ", ba,
                    " and ", bb, " are not broadcastable");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

/// Strides of the batch dims of `x` (its last two dims excluded) broadcast to `batch`.
template <class T>
Shape batch_strides(const Tensor<T>& x, const Shape& batch) {
    Shape st(batch.rank(), 0);
    const int64_t xb = x.dim() - 2, lead = batch.rank() - xb;
    for (int64_t i = 0; i < xb; ++i) st[lead + i] = x.size(i) == 1 ? 0 : x.strides()[i];
    return st;
}

// ---- the products with autograd --------------------------------------------------------------

/// A 2-D device tensor as the GEMM reads it: the stored matrix is x (trans = false) or x^T
/// (trans = true: x is a transposed view), with row stride ld; anything else is copied first.
template <class T>
struct DeviceMat {
    Tensor<T> keep;  // the tensor whose data() is read (x, or its contiguous copy)
    bool trans;
    int64_t ld;
};
template <class T>
DeviceMat<T> device_mat(const Tensor<T>& x) {
    const int64_t r = x.size(0), c = x.size(1), s0 = x.strides()[0], s1 = x.strides()[1];
    const auto one = [](int64_t v) { return v > 1 ? v : int64_t(1); };
    if ((c <= 1 || s1 == 1) && (r <= 1 || s0 >= c)) return {x, false, one(r <= 1 ? c : s0)};
    if ((r <= 1 || s0 == 1) && (c <= 1 || s1 >= r)) return {x, true, one(c <= 1 ? r : s1)};
    return {contiguous_data(x), false, one(c)};
}

/// Whether an autocast-aware product of CUDA tensors of T runs in bf16 here (float, in a CUDA
/// bf16 scope): the device half of gemm_auto's choice.
template <class T>
bool device_bf16() {
    return std::is_same_v<T, float> && tl_precision.cuda == Precision::bf16;
}

/// The device table's GEMM for an autocast-aware product: `gemm_bf16` when device_bf16<T>(), else
/// the fp32 / fp64 `gemm`.
template <class T>
auto device_gemm_auto(const char* op, const Shape& shape) {
    return device_entry(device_bf16<T>() ? DeviceOps<T>::cuda().gemm_bf16 : DeviceOps<T>::cuda().gemm, op, shape);
}

/// c (M, N) = a (M, K) @ b (K, N) on the device, through the device table's GEMM (bf16 in a scope).
template <class T>
void device_mm(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& c) {
    const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
    if (M == 0 || N == 0) return;
    if (K == 0) {
        device_entry(DeviceOps<T>::cuda().fill, "matmul", c.shape())(c.data(), T(0), c.numel());
        return;
    }
    const DeviceMat<T> da = device_mat(a), db = device_mat(b);
    device_gemm_auto<T>("matmul", a.shape())(da.trans, db.trans, M, N, K, T(1), da.keep.data(), da.ld,
                                             db.keep.data(), db.ld, T(0), c.data(), N);
}

/// (N, K) @ (K, M) -> (N, M), one GEMM. Recorded as "matmul".
template <class T>
Tensor<T> mm(const Tensor<T>& a, const Tensor<T>& b) {
    require_same_device(a, b, "matmul");
    Tensor<T> c = Tensor<T>::empty({a.size(0), b.size(1)}, a.device());
    if (a.device() != Device::CPU) device_mm(a, b, c);
    else gemm_auto(T(1), mat_ref(a), mat_ref(b), T(0), mat_mut(c), param_owner(a), param_owner(b));
    const bool ga = needs_grad(a), gb = needs_grad(b);
    return record<T>(c, "matmul", {a, b},
                     [ga, gb, prec = tl_precision, ad = gb ? a.detach() : Tensor<T>(), bd = ga ? b.detach() : Tensor<T>()](
                         const Tensor<T>& g) {
                         PrecisionGuard pg(prec);
                         // grad_a = g @ b^T,  grad_b = a^T @ g  (transposes are views)
                         return std::vector<Tensor<T>>{ga ? mm(g, bd.t()) : Tensor<T>(),
                                                       gb ? mm(ad.t(), g) : Tensor<T>()};
                     });
}

/// batched_mm's device half: one GEMM per batch element through the device table (a strided
/// batched GEMM would be one call; the per-element loop keeps the broadcast strides as they are).
template <class T>
void batched_mm_device(const Tensor<T>& a, const Tensor<T>& b, const Shape& batch, const char* name, T alpha,
                       Tensor<T>& c) {
    const int64_t N = a.size(-2), K = a.size(-1), M = b.size(-1), nb = numel(batch);
    if (c.numel() == 0) return;
    if (K == 0) {
        device_entry(DeviceOps<T>::cuda().fill, name, c.shape())(c.data(), T(0), c.numel());
        return;
    }
    const auto gemm_fn = device_gemm_auto<T>(name, a.shape());
    // how the GEMM reads one (rows, cols) matrix with strides (rs, cs): stored as is, or transposed
    const auto layout = [](int64_t rs, int64_t cs, int64_t rows, int64_t cols, bool* trans, int64_t* ld) {
        const auto one = [](int64_t v) { return v > 1 ? v : int64_t(1); };
        if ((cols <= 1 || cs == 1) && (rows <= 1 || rs >= cols)) return *trans = false, *ld = one(rows <= 1 ? cols : rs), true;
        if ((rows <= 1 || rs == 1) && (cols <= 1 || cs >= rows)) return *trans = true, *ld = one(cols <= 1 ? rows : cs), true;
        return false;
    };
    bool ta = false, tb = false;
    int64_t lda = 1, ldb = 1;
    Tensor<T> au = a, bu = b;
    if (!layout(a.strides()[a.dim() - 2], a.strides()[a.dim() - 1], N, K, &ta, &lda)) {
        au = contiguous_data(a);
        layout(K, 1, N, K, &ta, &lda);
    }
    if (!layout(b.strides()[b.dim() - 2], b.strides()[b.dim() - 1], K, M, &tb, &ldb)) {
        bu = contiguous_data(b);
        layout(M, 1, K, M, &tb, &ldb);
    }
    const Shape sa = batch_strides(au, batch), sb = batch_strides(bu, batch);
    const T* base_a = au.impl()->storage->data();
    const T* base_b = bu.impl()->storage->data();
    for (int64_t p = 0; p < nb; ++p) {
        int64_t oa = au.offset(), ob = bu.offset(), rem = p;
        for (int64_t d = batch.rank() - 1; d >= 0; --d) {
            const int64_t i = rem % batch[d];
            rem /= batch[d];
            oa += i * sa[d], ob += i * sb[d];
        }
        gemm_fn(ta, tb, N, M, K, alpha, base_a + oa, lda, base_b + ob, ldb, T(0), c.data() + p * N * M, M);
    }
}

/// a: (*A, N, K) @ b: (*B, K, M) -> (*batch, N, M), one GEMM per batch element, broadcast batch
/// dims read through stride 0 (never materialised). Both operands at least 2-D.
template <class T>
Tensor<T> batched_mm(const Tensor<T>& a, const Tensor<T>& b, const Shape& batch, const char* name, T alpha = T(1)) {
    const int64_t N = a.size(-2), K = a.size(-1), M = b.size(-1);
    Shape out_shape = batch;
    out_shape.push_back(N);
    out_shape.push_back(M);
    Tensor<T> c = Tensor<T>::empty(out_shape, a.device());
    if (a.device() != Device::CPU) {
        batched_mm_device(a, b, batch, name, alpha, c);
    } else {
    // an operand BLAS cannot read is made contiguous once, not once per batch element
    const Tensor<T> au = blas_ready(a) ? a : contiguous_data(a);
    const Tensor<T> bu = blas_ready(b) ? b : contiguous_data(b);
    const Shape sa = batch_strides(au, batch), sb = batch_strides(bu, batch);
    const int64_t ar = au.strides()[au.dim() - 2], ac = au.strides()[au.dim() - 1];
    const int64_t br = bu.strides()[bu.dim() - 2], bc = bu.strides()[bu.dim() - 1];
    const T* base_a = au.impl()->storage->data();
    const T* base_b = bu.impl()->storage->data();
    T* pc = c.data();
    const int64_t nb = numel(batch);
    if (N * M * K <= 128 * 128 * 128 && nb > 1) {
        // small products: OpenBLAS runs each on one thread, so split the batch across threads
        parallel_for(nb, 1, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) {
                int64_t oa = au.offset(), ob = bu.offset(), rem = p;
                for (int64_t d = batch.rank() - 1; d >= 0; --d) {
                    const int64_t i = rem % batch[d];
                    rem /= batch[d];
                    oa += i * sa[d], ob += i * sb[d];
                }
                gemm_auto(alpha, MatRef<const T>{base_a + oa, N, K, ar, ac}, MatRef<const T>{base_b + ob, K, M, br, bc}, T(0),
                     MatRef<T>{pc + p * N * M, N, M, M, 1});
            }
        });
    } else {
    Shape idx(batch.rank(), 0);
    int64_t oa = au.offset(), ob = bu.offset();
    for (int64_t p = 0; p < nb; ++p) {
        gemm_auto(alpha, MatRef<const T>{base_a + oa, N, K, ar, ac}, MatRef<const T>{base_b + ob, K, M, br, bc}, T(0),
             MatRef<T>{pc + p * N * M, N, M, M, 1});
        for (int64_t d = batch.rank() - 1; d >= 0; --d) {  // odometer step over the batch index
            oa += sa[d], ob += sb[d];
            if (++idx[d] < batch[d]) break;
            oa -= sa[d] * batch[d], ob -= sb[d] * batch[d];
            idx[d] = 0;
        }
    }
    }
    }
    const bool ga = needs_grad(a), gb = needs_grad(b);
    const Shape a_shape = a.shape(), b_shape = b.shape();
    return record<T>(c, name, {a, b},
                     [ga, gb, a_shape, b_shape, batch, name, alpha, prec = tl_precision, ad = gb ? a.detach() : Tensor<T>(),
                      bd = ga ? b.detach() : Tensor<T>()](const Tensor<T>& g) {
                         PrecisionGuard pg(prec);
                         // per batch element as in mm; broadcast batch dims are summed back (sum_to)
                         Tensor<T> gx, gy;
                         if (ga) gx = sum_to(batched_mm(g, bd.transpose(-1, -2), batch, name, alpha), a_shape);
                         if (gb) gy = sum_to(batched_mm(ad.transpose(-1, -2), g, batch, name, alpha), b_shape);
                         return std::vector<Tensor<T>>{gx, gy};
                     });
}

}  // namespace detail

// ---- public ops ---------------------------------------------------------------------------------

/// torch.matmul. a: (K) or (*A, N, K); b: (K) or (*B, K, M).
///   (K) @ (K) -> ()            dot product
///   (N, K) @ (K, M) -> (N, M)  one GEMM
///   (K) @ (K, M) -> (M), (N, K) @ (K) -> (N)   the 1-D side is promoted, then squeezed
///   (*A, N, K) @ (*B, K, M) -> (*broadcast(A, B), N, M)   batched; when b has no batch dims
///   the leading dims of a are folded into rows and the whole product is one GEMM.
/// The 1-D promotions are unsqueeze/squeeze views, so their backward is the views' backward.
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
    const Shape batch = detail::matmul_batch_shape(a, b, "matmul");
    const int64_t K = a.size(-1);
    if (a.dim() == 1 && b.dim() == 1) return detail::mm(a.unsqueeze(0), b.unsqueeze(1)).reshape(Shape{});
    if (a.dim() <= 2 && b.dim() <= 2) {
        if (a.dim() == 1) return detail::mm(a.unsqueeze(0), b).squeeze(0);
        if (b.dim() == 1) return detail::mm(a, b.unsqueeze(1)).squeeze(1);
        return detail::mm(a, b);
    }
    if (b.dim() <= 2) {  // (*A, N, K) @ (K, M) or (K): fold the rows of a into one GEMM
        Shape out_shape(a.shape().begin(), a.shape().end() - 1);
        const int64_t rows = numel(out_shape);
        Tensor<T> a2 = a.reshape({rows, K});
        if (b.dim() == 1) return detail::mm(a2, b.unsqueeze(1)).reshape(out_shape);
        out_shape.push_back(b.size(1));
        return detail::mm(a2, b).reshape(out_shape);
    }
    const Tensor<T> a2 = a.dim() == 1 ? a.unsqueeze(0) : a;  // (K) -> (1, K)
    const Tensor<T> b2 = b.dim() == 1 ? b.unsqueeze(1) : b;  // (K) -> (K, 1)
    Tensor<T> c = detail::batched_mm(a2, b2, batch, "matmul");
    if (a.dim() == 1) return c.squeeze(-2);
    if (b.dim() == 1) return c.squeeze(-1);
    return c;
}

/// torch.bmm: a: (B, N, K) @ b: (B, K, M) -> (B, N, M). Strictly 3-D, equal batch sizes.
template <class T>
Tensor<T> bmm(const Tensor<T>& a, const Tensor<T>& b) {
    detail::require_same_device(a, b, "bmm");
    MOEKD_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: ", a.shape(), " @ ", b.shape(),
                ": both operands must be 3-D (B, N, K) and (B, K, M). HINT: matmul broadcasts");
    MOEKD_CHECK(a.size(0) == b.size(0), "bmm: ", a.shape(), " @ ", b.shape(), ": batch sizes ", a.size(0),
                " and ", b.size(0), " differ");
    MOEKD_CHECK(a.size(2) == b.size(1), "bmm: ", a.shape(), " @ ", b.shape(), ": inner sizes ", a.size(2),
                " and ", b.size(1), " differ");
    return detail::batched_mm(a, b, Shape{a.size(0)}, "bmm");
}

/// y = x @ w^T + bias.  x: (*, in), w: (out, in), bias: (out) or undefined -> y: (*, out).
/// All leading dims of x go into one GEMM; w is read transposed in place (no copy).
template <class T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& bias = Tensor<T>(), bool fuse_relu = false) {
    detail::require_same_device(x, w, "linear");
    if (x.device() != Device::CPU) {  // composed on the device: one GEMM, a broadcast add, the relu
        MOEKD_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1), "linear: input ", x.shape(),
                    " and weight ", w.shape(), ": expected (*, in_features) and (out_features, in_features)");
        if (bias.defined()) detail::require_same_device(x, bias, "linear");
        Tensor<T> y = matmul(x, w.t());
        if (bias.defined()) y = y + bias;
        return fuse_relu ? relu(y) : y;
    }
    MOEKD_CHECK(x.dim() >= 1 && w.dim() == 2, "linear: input ", x.shape(), " and weight ", w.shape(),
                ": the weight must be 2-D (out_features, in_features) and the input at least 1-D");
    const int64_t in = w.size(1), out = w.size(0);
    MOEKD_CHECK(x.size(-1) == in, "linear: input ", x.shape(), " and weight ", w.shape(), ": in_features ",
                x.size(-1), " vs ", in, " (the weight is (out_features, in_features))");
    const bool has_bias = bias.defined();
    if (has_bias) {
        detail::require_same_device(x, bias, "linear");
        MOEKD_CHECK(bias.dim() == 1 && bias.size(0) == out, "linear: bias ", bias.shape(), " for weight ",
                    w.shape(), ": expected (", out, ",)");
    }
    const int64_t P = x.dim() == 1 ? 1 : numel(Shape(x.shape().begin(), x.shape().end() - 1));
    // x as a (P, in) matrix: a 2-D input is used with its own strides, else a contiguous view
    Tensor<T> x2;
    if (x.dim() == 2) {
        x2 = x.detach();
    } else {
        Tensor<T> xc = detail::contiguous_data(x);
        x2 = detail::as_strided(xc, Shape{P, in}, Shape{in, 1}, xc.offset());
    }
    Shape out_shape(x.shape().begin(), x.shape().end() - 1);
    out_shape.push_back(out);
    Tensor<T> y = Tensor<T>::empty(out_shape);
    detail::MatRef<T> y2{y.data(), P, out, out, 1};
    if (has_bias) {
        Tensor<T> bc = detail::contiguous_data(bias);
        detail::parallel_for(P, std::max<int64_t>(1, detail::kGrainElems / out), [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) std::copy_n(bc.data(), out, y.data() + i * out);
        });
    }
    const std::shared_ptr<const void> w_owner = detail::param_owner(w);
    detail::gemm_auto(T(1), detail::mat_ref(x2), detail::mat_ref(w).t(), has_bias ? T(1) : T(0), y2, nullptr, w_owner);
    if (fuse_relu) {  // relu in place on the fresh output (one pass, no second buffer)
        T* py = y.data();
        detail::parallel_for(y.numel(), detail::kGrainElems, [py](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) py[i] = py[i] > T(0) ? py[i] : T(0);
        });
    }

    std::vector<Tensor<T>> inputs{x, w};
    if (has_bias) inputs.push_back(bias);
    const bool gx = needs_grad(x), gw = needs_grad(w), gb = has_bias && needs_grad(bias);
    const Shape x_shape = x.shape();
    return record<T>(y, fuse_relu ? "linear_relu" : "linear", std::move(inputs),
                     [gx, gw, gb, has_bias, x_shape, P, in, out, fuse_relu, prec = detail::tl_precision, w_owner,
                      xd = gw ? x2 : Tensor<T>(), wd = gx ? w.detach() : Tensor<T>(),
                      yd = fuse_relu ? y.detach() : Tensor<T>()](const Tensor<T>& g) {
                         detail::PrecisionGuard pg(prec);
                         // g: (*, out) viewed as (P, out)
                         Tensor<T> g2;
                         if (fuse_relu) {  // through the relu: g where y > 0
                             Tensor<T> gc = detail::contiguous_data(g);
                             Tensor<T> gm = Tensor<T>::empty({P, out});
                             const T *pg = gc.data(), *py = yd.data();
                             T* pm = gm.data();
                             // pointers by value and an unconditional load of g: the loop vectorises (the
                             // branchy form was 11% of a bf16 encoder step)
                             detail::parallel_for(P * out, detail::kGrainElems, [pg, py, pm](int64_t b, int64_t e) {
                                 for (int64_t i = b; i < e; ++i) {
                                     const T gv = pg[i];
                                     pm[i] = py[i] > T(0) ? gv : T(0);
                                 }
                             });
                             g2 = gm;
                         } else if (g.dim() == 2) {
                             g2 = g;
                         } else {
                             Tensor<T> gc = detail::contiguous_data(g);
                             g2 = detail::as_strided(gc, Shape{P, out}, Shape{out, 1}, gc.offset());
                         }
                         std::vector<Tensor<T>> grads(has_bias ? 3 : 2);
                         detail::Bf16Operand g16;  // in bf16: g's copy, made by dx's product, reused by dW's
                         if (gx) {  // grad_x = g @ w: (P, out) @ (out, in)
                             Tensor<T> dx = Tensor<T>::empty(x_shape);
                             detail::gemm_auto(T(1), detail::mat_ref(g2), detail::mat_ref(wd), T(0),
                                               detail::MatRef<T>{dx.data(), P, in, in, 1}, nullptr, w_owner, &g16);
                             grads[0] = dx;
                         }
                         if (gw) {  // grad_w = g^T @ x: (out, P) @ (P, in)
                             Tensor<T> dw = Tensor<T>::empty({out, in});
                             detail::Bf16Operand g16t = detail::transposed(g16);
                             detail::gemm_auto(T(1), detail::mat_ref(g2).t(), detail::mat_ref(xd), T(0), detail::mat_mut(dw),
                                               nullptr, nullptr, &g16t);
                             grads[1] = dw;
                         }
                         if (gb) {  // grad_bias = column sums of g
                             std::vector<detail::Acc<T>> acc(static_cast<size_t>(out), 0);
                             const auto m = detail::mat_ref(g2);
                             detail::parallel_for(out, 64, [&](int64_t j0, int64_t j1) {  // columns per thread
                                 detail::Acc<T>* a = acc.data();
                                 if (m.cs == 1) {  // rows read contiguously: the inner loop vectorises
                                     for (int64_t i = 0; i < P; ++i) {
                                         const T* row = m.data + i * m.rs;
                                         for (int64_t j = j0; j < j1; ++j) a[j] += row[j];
                                     }
                                 } else {
                                     for (int64_t i = 0; i < P; ++i)
                                         for (int64_t j = j0; j < j1; ++j) a[j] += m.data[i * m.rs + j * m.cs];
                                 }
                             });
                             Tensor<T> db = Tensor<T>::empty({out});
                             for (int64_t j = 0; j < out; ++j) db.data()[j] = static_cast<T>(acc[j]);
                             grads[2] = db;
                         }
                         return grads;
                     });
}

namespace detail {

/// The ground truth: torch.matmul semantics by a plain triple loop over broadcast indices,
/// accumulating in double for float inputs. No Eigen, no BLAS, no autograd.
template <class T>
Tensor<T> matmul_reference(const Tensor<T>& a, const Tensor<T>& b) {
    NoGrad ng;
    const Shape batch = matmul_batch_shape(a, b, "matmul");
    const Tensor<T> a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
    const Tensor<T> b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    const int64_t N = a2.size(-2), K = a2.size(-1), M = b2.size(-1);
    Shape sa = batch, sb = batch, sc = batch;
    sa.insert(sa.end(), {N, K});
    sb.insert(sb.end(), {K, M});
    sc.insert(sc.end(), {N, M});
    const Tensor<T> ae = contiguous_data(a2.expand(sa)), be = contiguous_data(b2.expand(sb));
    Tensor<T> c = Tensor<T>::empty(sc);
    const T *pa = ae.data(), *pb = be.data();
    T* pc = c.data();
    for (int64_t p = 0, nb = numel(batch); p < nb; ++p)
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < M; ++j) {
                Acc<T> acc = 0;
                for (int64_t k = 0; k < K; ++k)
                    acc += static_cast<Acc<T>>(pa[(p * N + i) * K + k]) * static_cast<Acc<T>>(pb[(p * K + k) * M + j]);
                pc[(p * N + i) * M + j] = static_cast<T>(acc);
            }
    Shape out_shape = batch;
    if (a.dim() > 1) out_shape.push_back(N);
    if (b.dim() > 1) out_shape.push_back(M);
    return c.reshape(out_shape);
}

}  // namespace detail
}  // namespace moekd
