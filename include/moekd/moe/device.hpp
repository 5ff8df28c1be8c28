// device.hpp — what the MoE ops share for their device half: the device table (core/backend.hpp's
// MoE entries, filled by kernels/gating.cu), host copies of small integer operands (routing,
// pad masks, per-token check results) and a row-major GEMM through the table's `gemm`.
//
// The MoE ops (router.hpp, balance.hpp, dispatch.hpp) check their arguments, then branch to the
// device only for device tensors; the CPU code paths are untouched. Integer tensors on the device
// must be contiguous (the device table copies floating tensors only).
#pragma once

#include <cstdint>

#include "../core/backend.hpp"
#include "../core/tensor.hpp"

namespace moekd::moe::detail {

/// The device table of element type T.
template <class T>
DeviceOps<T>& dev_ops() {
    return DeviceOps<T>::cuda();
}

/// A contiguous host copy of an integer tensor on any device (a CPU tensor is copied too, so the
/// caller owns it).
template <class I>
Tensor<I> host_copy(const Tensor<I>& t, const char* op, const char* what) {
    if (t.device() == Device::CPU) {
        Tensor<I> c = Tensor<I>::empty(t.shape());
        moekd::detail::copy_into(c, t);
        return c;
    }
    MOEKD_CHECK(t.is_contiguous(), op, ": ", what, " of shape ", t.shape(), " on ", t.device(),
                " must be contiguous (integer tensors are not copied on the device)");
    return t.to(Device::CPU);
}

/// `t` on `dev`, contiguous: uploaded from the host when it is there, else as it is (device
/// integer tensors must be contiguous already).
template <class I>
Tensor<I> on_device(const Tensor<I>& t, Device dev, const char* op, const char* what) {
    if (t.device() == dev) {
        MOEKD_CHECK(dev == Device::CPU || t.is_contiguous(), op, ": ", what, " of shape ", t.shape(), " on ", dev,
                    " must be contiguous (integer tensors are not copied on the device)");
        return t;
    }
    return host_copy(t, op, what).to(dev);
}

/// Row-major C (m, n) = op(A) op(B) (+ C when accumulate) through the device table's gemm; lda,
/// ldb, ldc are the row strides of the stored matrices. Nothing to do when m or n is 0; k = 0
/// gives 0 (or C unchanged).
template <class T>
void dev_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
              T* c, int64_t ldc, const char* op, bool accumulate = false) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        MOEKD_CHECK(accumulate || ldc == n, op, ": an empty inner dimension into a strided output");
        if (!accumulate) moekd::detail::device_entry(dev_ops<T>().fill, op, Shape{m, n})(c, T(0), m * n);
        return;
    }
    moekd::detail::device_entry(dev_ops<T>().gemm, op, Shape{m, n})(ta, tb, m, n, k, T(1), a, lda, b, ldb,
                                                                     accumulate ? T(1) : T(0), c, ldc);
}

/// Both operands on one device (an MoE op's operands never mix devices).
template <class A, class B>
void same_device(const Tensor<A>& a, const Tensor<B>& b, const char* op, const char* what_a, const char* what_b) {
    MOEKD_CHECK(a.device() == b.device(), op, ": ", what_a, " of shape ", a.shape(), " is on ", a.device(), ", ",
                what_b, " of shape ", b.shape(), " on ", b.device(), " (operands on different devices)");
}

}  // namespace moekd::moe::detail
