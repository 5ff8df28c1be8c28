// cuda/copy.hpp — moving tensors between host and device memory.
//
// to_device(x) and to_cpu(x) return fresh contiguous tensors (x itself if it is already there).
// They are data moves, not ops: the result is a leaf with no autograd history. A strided
// device tensor is brought back by copying the span of storage it covers and re-striding it
// on the host, so views of device tensors need no device-side gather kernel.
#pragma once

#include <cstdint>

#include "../core/tensor.hpp"
#include "allocator.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// A contiguous copy of x in GPU memory (the current device). x: any shape, any strides.
template <class T>
Tensor<T> to_device(const Tensor<T>& x) {
    if (x.device() == Device::CUDA) return x;
    const Tensor<T> xc = moekd::detail::contiguous_data(x);
    Tensor<T> out = Tensor<T>::empty(x.shape(), Device::CUDA);
    if (out.numel() > 0)
        MOEKD_CUDA_CHECK(cudaMemcpy(out.data(), xc.data(), sizeof(T) * out.numel(), cudaMemcpyHostToDevice));
    return out;
}

/// A contiguous copy of x in host memory. x: any shape, any strides.
template <class T>
Tensor<T> to_cpu(const Tensor<T>& x) {
    if (x.device() == Device::CPU) return x;
    if (x.numel() == 0) return Tensor<T>::empty(x.shape());
    if (x.is_contiguous()) {
        Tensor<T> out = Tensor<T>::empty(x.shape());
        MOEKD_CUDA_CHECK(cudaMemcpy(out.data(), x.data(), sizeof(T) * out.numel(), cudaMemcpyDeviceToHost));
        return out;
    }
    // The storage span [lo, hi] that the view touches, copied whole, then gathered on the host.
    int64_t lo = x.offset(), hi = x.offset();
    for (int64_t i = 0; i < x.dim(); ++i) {
        const int64_t span = (x.shape()[i] - 1) * x.strides()[i];
        (span < 0 ? lo : hi) += span;
    }
    Tensor<T> raw = Tensor<T>::empty(Shape{hi - lo + 1});
    MOEKD_CUDA_CHECK(cudaMemcpy(raw.data(), x.impl()->storage->data() + lo, sizeof(T) * (hi - lo + 1),
                                cudaMemcpyDeviceToHost));
    // x is not contiguous, so neither is this view of raw: contiguous_data makes the copy.
    return moekd::detail::contiguous_data(moekd::detail::as_strided(raw, x.shape(), x.strides(), x.offset() - lo));
}

/// to_device(x) or to_cpu(x).
template <class T>
Tensor<T> to(const Tensor<T>& x, Device device) {
    return device == Device::CUDA ? to_device(x) : to_cpu(x);
}

}  // namespace moekd::cuda
