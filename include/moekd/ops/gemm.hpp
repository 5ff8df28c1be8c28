// gemm.hpp — the low-level fp32/fp64 GEMM on raw strided views (MatRef): what matmul, bmm,
// linear, the MoE expert GEMMs and the relation losses end in.
//
// Every product maps each operand with an Eigen::Map over its own strides. A row-major view
// (strides (s, 1)) is a RowMajor map with outer stride s; a transposed view (strides (1, s)) is a
// ColMajor map, never a copy. Only operands with neither unit stride (or overlapping rows, like
// an expand) are copied. With EIGEN_USE_BLAS (the moekd target defines it when OpenBLAS is found,
// MOEKD_BLAS=1) each product is one OpenBLAS sgemm/dgemm call. The bf16 product beside it is
// ops/gemm_bf16.hpp.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../core/eigen.hpp"
#include "../core/tensor.hpp"

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

}  // namespace detail
}  // namespace moekd
