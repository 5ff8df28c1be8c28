// cuda/blas.hpp — GEMM on 2-D device tensors through cuBLAS.
//
// cuBLAS is column-major; moekd is row-major. A row-major (R, C) matrix read as column-major is
// its transpose, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: the operands swap
// places and nothing is copied. A transposed view (strides (1, ld)) is also taken without a copy,
// by flipping its transpose flag. float and double only; no autograd (a device kernel layer).
//
//   c = cuda::matmul(a, b);                      // a: (M, K), b: (K, N) -> c: (M, N)
//   cuda::gemm(a, b, c, false, true, 1.f, 1.f);  // c += a @ b^T,  b: (N, K)
#pragma once

#include <cublas_v2.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "../core/tensor.hpp"
#include "allocator.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// This thread's cuBLAS handle for the current device (made on first use, kept for the
/// process lifetime). Defined in kernels/blas.cu.
cublasHandle_t cublas_handle();

namespace detail {

inline void cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    throw Error(msg("cuBLAS error: ", cublasGetStatusString(st), " (", cublasGetStatusName(st), ") in ", call, " [",
                    file, ":", line, "]"));
}

// Column-major GEMM, C = alpha op(A) op(B) + beta C (cublasSgemm / cublasDgemm). kernels/blas.cu.
void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc);
void gemm_colmajor(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
                   const double* b, int ldb, double beta, double* c, int ldc);

/// How cuBLAS reads a 2-D row-major tensor: the stored matrix is x (trans=false) or x^T
/// (trans=true, x is a transposed view), with leading dimension ld (its row stride).
struct BlasOperand {
    bool trans;
    int64_t ld;
};

template <class T>
BlasOperand blas_operand(const Tensor<T>& x, const char* op, const char* name) {
    MOEKD_CHECK(x.defined(), op, ": ", name, " is an undefined tensor");
    MOEKD_CHECK(x.dim() == 2, op, ": ", name, " must be 2-D, got shape ", x.shape());
    MOEKD_CHECK(x.device() == Device::CUDA, op, ": ", name, " of shape ", x.shape(), " is on ", x.device(),
                "; copy it with cuda::to_device() first");
    const int64_t r = x.size(0), c = x.size(1), s0 = x.strides()[0], s1 = x.strides()[1];
    const auto one = [](int64_t v) { return v > 1 ? v : int64_t(1); };
    if ((c <= 1 || s1 == 1) && (r <= 1 || s0 >= c)) return {false, one(r <= 1 ? c : s0)};
    if ((r <= 1 || s0 == 1) && (c <= 1 || s1 >= r)) return {true, one(c <= 1 ? r : s1)};
    MOEKD_CHECK(false, op, ": ", name, " of shape ", x.shape(), " has strides ", x.strides(),
                "; cuBLAS needs a row-major matrix or a transposed one (hint: contiguous() on the CPU first)");
    return {};
}

inline int blas_int(int64_t v, const char* op) {
    MOEKD_CHECK(v <= INT_MAX, op, ": dimension ", v, " exceeds cuBLAS's 32-bit limit");
    return static_cast<int>(v);
}

}  // namespace detail

/// c = alpha * op(a) @ op(b) + beta * c, op(x) = x^T when trans_x.
/// op(a): (M, K), op(b): (K, N), c: (M, N) with unit column stride (e.g. contiguous). All on the GPU.
template <class T>
void gemm(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& c, bool trans_a = false, bool trans_b = false,
          T alpha = T(1), T beta = T(0)) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda::gemm: float or double");
    const char* op = "cuda::gemm";
    const detail::BlasOperand va = detail::blas_operand(a, op, "a"), vb = detail::blas_operand(b, op, "b");
    MOEKD_CHECK(c.defined() && c.dim() == 2 && c.device() == Device::CUDA, op, ": c must be a 2-D tensor on the GPU");
    const int64_t m = trans_a ? a.size(1) : a.size(0), k = trans_a ? a.size(0) : a.size(1);
    const int64_t kb = trans_b ? b.size(1) : b.size(0), n = trans_b ? b.size(0) : b.size(1);
    MOEKD_CHECK(k == kb, op, ": inner dimensions differ: op(a) is (", m, ", ", k, ") from a of shape ", a.shape(),
                (trans_a ? " transposed" : ""), ", op(b) is (", kb, ", ", n, ") from b of shape ", b.shape(),
                (trans_b ? " transposed" : ""));
    MOEKD_CHECK(c.size(0) == m && c.size(1) == n, op, ": c has shape ", c.shape(), ", expected (", m, ", ", n, ")");
    MOEKD_CHECK((n <= 1 || c.strides()[1] == 1) && (m <= 1 || c.strides()[0] >= n), op, ": c of shape ", c.shape(),
                " strides ", c.strides(), " must be row-major (unit column stride)");
    if (m == 0 || n == 0) return;
    const int64_t ldc = m <= 1 ? (n > 1 ? n : 1) : c.strides()[0];
    // Row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T: B goes first.
    detail::gemm_colmajor(trans_b != vb.trans, trans_a != va.trans, detail::blas_int(n, op), detail::blas_int(m, op),
                          detail::blas_int(k, op), alpha, b.data(), detail::blas_int(vb.ld, op), a.data(),
                          detail::blas_int(va.ld, op), beta, c.data(), detail::blas_int(ldc, op));
}

/// a @ b.  a: (M, K), b: (K, N) -> (M, N), all on the GPU (transposed views are read as they are).
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
    MOEKD_CHECK(a.defined() && b.defined() && a.dim() == 2 && b.dim() == 2, "cuda::matmul: needs 2-D a and b, got ",
                a.defined() ? a.shape() : Shape{}, " and ", b.defined() ? b.shape() : Shape{});
    MOEKD_CHECK(a.size(1) == b.size(0), "cuda::matmul: a of shape ", a.shape(), " cannot multiply b of shape ",
                b.shape(), " (a.size(1) != b.size(0))");
    (void)detail::blas_operand(a, "cuda::matmul", "a");  // device and layout checks before allocating
    (void)detail::blas_operand(b, "cuda::matmul", "b");
    Tensor<T> c = Tensor<T>::empty(Shape{a.size(0), b.size(1)}, Device::CUDA);
    gemm(a, b, c);
    return c;
}

}  // namespace moekd::cuda
