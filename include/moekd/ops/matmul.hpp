// matmul.hpp — matrix products: matmul (torch.matmul semantics), bmm, linear, and the low-level
// detail::gemm that other code (MoE grouped expert GEMMs) calls on raw strided views.
//
// Optimised path: every product ends in detail::gemm, which maps each operand with an Eigen::Map
// over its own strides. A row-major view (strides (s, 1)) is a RowMajor map with outer stride s;
// a transposed view (strides (1, s)) is a ColMajor map, never a copy. Only operands with neither
// unit stride (or overlapping rows, like an expand) are copied. With EIGEN_USE_BLAS (the moekd
// target defines it when OpenBLAS is found, MOEKD_BLAS=1) each Eigen product is one OpenBLAS
// sgemm/dgemm call. detail::matmul_reference is the naive triple loop (no Eigen) kept as the
// ground truth that tests compare against. Backward rules sit right under each forward.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../core/eigen.hpp"

#include "../autograd/node.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"
#include "view.hpp"

namespace moekd {
namespace detail {

// ---- low-level GEMM on strided views ---------------------------------------------------------

/// A strided 2-D view of raw memory: element (i, j) is data[i * rs + j * cs].
template <class T>
struct MatRef {
    T* data = nullptr;
    int64_t rows = 0, cols = 0;
    int64_t rs = 0, cs = 0;  // row stride, column stride (in elements)

    /// The transpose, as a view (swaps sizes and strides; no data moves).
    MatRef t() const { return MatRef{data, cols, rows, cs, rs}; }
    operator MatRef<const T>() const
        requires(!std::is_const_v<T>)
    {
        return MatRef<const T>{data, rows, cols, rs, cs};
    }
};

/// The (2-D) tensor `x` as a MatRef (read-only, or writable for an output).
template <class T>
MatRef<const T> mat_ref(const Tensor<T>& x) {
    MOEKD_CHECK(x.dim() == 2, "mat_ref: expects a 2-D tensor, got ", x.shape());
    return {x.data(), x.size(0), x.size(1), x.strides()[0], x.strides()[1]};
}
template <class T>
MatRef<T> mat_mut(Tensor<T>& x) {
    MOEKD_CHECK(x.dim() == 2, "mat_mut: expects a 2-D tensor, got ", x.shape());
    return {x.data(), x.size(0), x.size(1), x.strides()[0], x.strides()[1]};
}

/// How BLAS (and an Eigen map) can read a view: row-major or column-major with leading
/// dimension `ld`, or not at all (no unit stride, or rows that overlap such as stride 0).
struct BlasLayout {
    bool ok = false;
    bool row_major = true;
    int64_t ld = 1;
};

inline BlasLayout blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    // Row-major: (i, j) at i * ld + j. A dim of size <= 1 accepts any stride.
    if (cols <= 1 || cs == 1) {
        const int64_t ld = rows <= 1 ? std::max<int64_t>(cols, 1) : rs;
        if (ld >= std::max<int64_t>(cols, 1)) return {true, true, ld};
    }
    // Column-major: (i, j) at i + j * ld.
    if (rows <= 1 || rs == 1) {
        const int64_t ld = cols <= 1 ? std::max<int64_t>(rows, 1) : cs;
        if (ld >= std::max<int64_t>(rows, 1)) return {true, false, ld};
    }
    return {};
}

template <class T>
BlasLayout blas_layout(const MatRef<T>& m) {
    return blas_layout(m.rows, m.cols, m.rs, m.cs);
}

/// True when the last two dims of `x` can go to BLAS without a copy.
template <class T>
bool blas_ready(const Tensor<T>& x) {
    const int64_t r = x.dim();
    return blas_layout(x.size(r - 2), x.size(r - 1), x.strides()[r - 2], x.strides()[r - 1]).ok;
}

template <class T, int Order>
using EigenMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>;
template <class T, int Order>
using ConstMap = Eigen::Map<const EigenMat<T, Order>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T, int Order>
using MutMap = Eigen::Map<EigenMat<T, Order>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// Calls f(map) with the Eigen map matching a BLAS-readable view.
template <class T, class F>
void with_map(const T* p, int64_t rows, int64_t cols, const BlasLayout& l, F&& f) {
    if (l.row_major) f(ConstMap<T, Eigen::RowMajor>(p, rows, cols, Eigen::OuterStride<>(l.ld)));
    else f(ConstMap<T, Eigen::ColMajor>(p, rows, cols, Eigen::OuterStride<>(l.ld)));
}
template <class T, class F>
void with_mut_map(T* p, int64_t rows, int64_t cols, const BlasLayout& l, F&& f) {
    if (l.row_major) f(MutMap<T, Eigen::RowMajor>(p, rows, cols, Eigen::OuterStride<>(l.ld)));
    else f(MutMap<T, Eigen::ColMajor>(p, rows, cols, Eigen::OuterStride<>(l.ld)));
}

/// Packs any strided view into a dense row-major buffer.
template <class T>
void pack_rows(const MatRef<const T>& m, std::vector<T>& buf) {
    buf.resize(static_cast<size_t>(m.rows * m.cols));
    for (int64_t i = 0; i < m.rows; ++i)
        for (int64_t j = 0; j < m.cols; ++j) buf[i * m.cols + j] = m.data[i * m.rs + j * m.cs];
}

/// C = alpha * A @ B + beta * C.   A: (M, K), B: (K, N), C: (M, N), each any strided view.
/// Transposes are expressed as views: gemm(1, a.t(), b, 0, c) computes C = A^T B. C must not
/// overlap A or B. beta == 0 ignores C's old contents (NaNs included), as BLAS does.
template <class T>
void gemm(T alpha, MatRef<const T> a, MatRef<const T> b, T beta, MatRef<T> c) {
    MOEKD_CHECK(a.cols == b.rows && a.rows == c.rows && b.cols == c.cols, "gemm: (", a.rows, ", ", a.cols,
                ") @ (", b.rows, ", ", b.cols, ") into (", c.rows, ", ", c.cols, "): sizes do not agree");
    if (c.rows == 0 || c.cols == 0) return;
    std::vector<T> abuf, bbuf, cbuf;
    BlasLayout la = blas_layout(a), lb = blas_layout(b), lc = blas_layout(c);
    const T* pa = a.data;
    const T* pb = b.data;
    T* pc = c.data;
    if (!la.ok) pack_rows(a, abuf), pa = abuf.data(), la = {true, true, std::max<int64_t>(a.cols, 1)};
    if (!lb.ok) pack_rows(b, bbuf), pb = bbuf.data(), lb = {true, true, std::max<int64_t>(b.cols, 1)};
    if (!lc.ok) {  // compute into a dense buffer, then scatter back
        if (beta != T(0)) pack_rows(MatRef<const T>(c), cbuf);
        else cbuf.assign(static_cast<size_t>(c.rows * c.cols), T(0));
        pc = cbuf.data();
        lc = {true, true, std::max<int64_t>(c.cols, 1)};
    }
#if defined(MOEKD_BLAS) && defined(EIGEN_USE_BLAS)
    // One BLAS call, beta as given: Eigen's `C = A * B` would first zero C (setZero) and then
    // call sgemm with beta = 1, an extra write and read of C on every product.
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        const int M = int(c.rows), N = int(c.cols), K = int(a.cols);
        const int ia = int(la.ld), ib = int(lb.ld), ic = int(lc.ld);
        if (lc.row_major) {
            // C^T (N, M) col-major = B^T A^T: a row-major operand read as col-major is its transpose
            const char ta = la.row_major ? 'N' : 'T', tb = lb.row_major ? 'N' : 'T';
            if constexpr (std::is_same_v<T, float>) sgemm_(&tb, &ta, &N, &M, &K, &alpha, pb, &ib, pa, &ia, &beta, pc, &ic);
            else dgemm_(&tb, &ta, &N, &M, &K, &alpha, pb, &ib, pa, &ia, &beta, pc, &ic);
        } else {
            const char ta = la.row_major ? 'T' : 'N', tb = lb.row_major ? 'T' : 'N';
            if constexpr (std::is_same_v<T, float>) sgemm_(&ta, &tb, &M, &N, &K, &alpha, pa, &ia, pb, &ib, &beta, pc, &ic);
            else dgemm_(&ta, &tb, &M, &N, &K, &alpha, pa, &ia, pb, &ib, &beta, pc, &ic);
        }
        if (!cbuf.empty())
            for (int64_t i = 0; i < c.rows; ++i)
                for (int64_t j = 0; j < c.cols; ++j) c.data[i * c.rs + j * c.cs] = cbuf[i * c.cols + j];
        return;
    }
#endif
    with_map(pa, a.rows, a.cols, la, [&](const auto& A) {
        with_map(pb, b.rows, b.cols, lb, [&](const auto& B) {
            with_mut_map(pc, c.rows, c.cols, lc, [&](auto C) {
                if (beta == T(0)) {
                    if (alpha == T(1)) C.noalias() = A * B;
                    else C.noalias() = (alpha * A) * B;
                } else {
                    if (beta != T(1)) C *= beta;
                    if (alpha == T(1)) C.noalias() += A * B;
                    else C.noalias() += (alpha * A) * B;
                }
            });
        });
    });
    if (!cbuf.empty())
        for (int64_t i = 0; i < c.rows; ++i)
            for (int64_t j = 0; j < c.cols; ++j) c.data[i * c.rs + j * c.cs] = cbuf[i * c.cols + j];
}

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

/// c (M, N) = a (M, K) @ b (K, N) on the device, through the device table's GEMM.
template <class T>
void device_mm(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& c) {
    const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
    if (M == 0 || N == 0) return;
    if (K == 0) {
        device_entry(DeviceOps<T>::cuda().fill, "matmul", c.shape())(c.data(), T(0), c.numel());
        return;
    }
    const DeviceMat<T> da = device_mat(a), db = device_mat(b);
    device_entry(DeviceOps<T>::cuda().gemm, "matmul", a.shape())(da.trans, db.trans, M, N, K, T(1), da.keep.data(),
                                                                 da.ld, db.keep.data(), db.ld, T(0), c.data(), N);
}

/// (N, K) @ (K, M) -> (N, M), one GEMM. Recorded as "matmul".
template <class T>
Tensor<T> mm(const Tensor<T>& a, const Tensor<T>& b) {
    require_same_device(a, b, "matmul");
    Tensor<T> c = Tensor<T>::empty({a.size(0), b.size(1)}, a.device());
    if (a.device() != Device::CPU) device_mm(a, b, c);
    else gemm(T(1), mat_ref(a), mat_ref(b), T(0), mat_mut(c));
    const bool ga = needs_grad(a), gb = needs_grad(b);
    return record<T>(c, "matmul", {a, b},
                     [ga, gb, ad = gb ? a.detach() : Tensor<T>(), bd = ga ? b.detach() : Tensor<T>()](
                         const Tensor<T>& g) {
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
    const auto gemm_fn = device_entry(DeviceOps<T>::cuda().gemm, name, a.shape());
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
                gemm(alpha, MatRef<const T>{base_a + oa, N, K, ar, ac}, MatRef<const T>{base_b + ob, K, M, br, bc}, T(0),
                     MatRef<T>{pc + p * N * M, N, M, M, 1});
            }
        });
    } else {
    Shape idx(batch.rank(), 0);
    int64_t oa = au.offset(), ob = bu.offset();
    for (int64_t p = 0; p < nb; ++p) {
        gemm(alpha, MatRef<const T>{base_a + oa, N, K, ar, ac}, MatRef<const T>{base_b + ob, K, M, br, bc}, T(0),
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
                     [ga, gb, a_shape, b_shape, batch, name, alpha, ad = gb ? a.detach() : Tensor<T>(),
                      bd = ga ? b.detach() : Tensor<T>()](const Tensor<T>& g) {
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
    detail::gemm(T(1), detail::mat_ref(x2), detail::mat_ref(w).t(), has_bias ? T(1) : T(0), y2);
    if (fuse_relu) {  // relu in place on the fresh output (one pass, no second buffer)
        T* py = y.data();
        detail::parallel_for(y.numel(), detail::kGrainElems, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) py[i] = py[i] > T(0) ? py[i] : T(0);
        });
    }

    std::vector<Tensor<T>> inputs{x, w};
    if (has_bias) inputs.push_back(bias);
    const bool gx = needs_grad(x), gw = needs_grad(w), gb = has_bias && needs_grad(bias);
    const Shape x_shape = x.shape();
    return record<T>(y, fuse_relu ? "linear_relu" : "linear", std::move(inputs),
                     [gx, gw, gb, has_bias, x_shape, P, in, out, fuse_relu, xd = gw ? x2 : Tensor<T>(),
                      wd = gx ? w.detach() : Tensor<T>(), yd = fuse_relu ? y.detach() : Tensor<T>()](const Tensor<T>& g) {
                         // g: (*, out) viewed as (P, out)
                         Tensor<T> g2;
                         if (fuse_relu) {  // through the relu: g where y > 0
                             Tensor<T> gc = detail::contiguous_data(g);
                             Tensor<T> gm = Tensor<T>::empty({P, out});
                             const T *pg = gc.data(), *py = yd.data();
                             T* pm = gm.data();
                             detail::parallel_for(P * out, detail::kGrainElems, [&](int64_t b, int64_t e) {
                                 for (int64_t i = b; i < e; ++i) pm[i] = py[i] > T(0) ? pg[i] : T(0);
                             });
                             g2 = gm;
                         } else if (g.dim() == 2) {
                             g2 = g;
                         } else {
                             Tensor<T> gc = detail::contiguous_data(g);
                             g2 = detail::as_strided(gc, Shape{P, out}, Shape{out, 1}, gc.offset());
                         }
                         std::vector<Tensor<T>> grads(has_bias ? 3 : 2);
                         if (gx) {  // grad_x = g @ w: (P, out) @ (out, in)
                             Tensor<T> dx = Tensor<T>::empty(x_shape);
                             detail::gemm(T(1), detail::mat_ref(g2), detail::mat_ref(wd), T(0),
                                          detail::MatRef<T>{dx.data(), P, in, in, 1});
                             grads[0] = dx;
                         }
                         if (gw) {  // grad_w = g^T @ x: (out, P) @ (P, in)
                             Tensor<T> dw = Tensor<T>::empty({out, in});
                             detail::gemm(T(1), detail::mat_ref(g2).t(), detail::mat_ref(xd), T(0), detail::mat_mut(dw));
                             grads[1] = dw;
                         }
                         if (gb) {  // grad_bias = column sums of g
                             std::vector<detail::Acc<T>> acc(static_cast<size_t>(out), 0);
                             const auto m = detail::mat_ref(g2);
                             detail::parallel_for(out, 64, [&](int64_t j0, int64_t j1) {  // columns per thread
                                 for (int64_t i = 0; i < P; ++i)
                                     for (int64_t j = j0; j < j1; ++j) acc[j] += m.data[i * m.rs + j * m.cs];
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
