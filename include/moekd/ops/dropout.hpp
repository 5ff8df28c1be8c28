// dropout.hpp — inverted dropout with an explicit, seedable Generator, and its backward.
//
// Training: each element is kept with probability 1 - p and scaled by 1 / (1 - p), so the
// expected value is unchanged and evaluation needs no rescaling. The mask comes from a
// counter-based generator (Philox4x32-10, kernels/random.cuh): each call draws one 64-bit seed
// from `gen`, and element i (row-major) is kept iff its Philox number u_i >= p. So the same
// generator state gives the same mask, on the CPU and on the GPU alike (the device kernel
// computes u_i from i, in any order). The backward reuses the saved mask. Evaluation
// (training = false) and p = 0 return x itself; p = 1 gives zeros (as torch) and draws nothing.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../kernels/random.cuh"
#include "elementwise.hpp"

namespace moekd {
namespace detail {

/// The keep mask (1 = kept) of dropout with probability p for `seed` (kern::dropout_keep).
inline Tensor<uint8_t> dropout_mask(const Shape& shape, double p, uint64_t seed) {
    Tensor<uint8_t> m = Tensor<uint8_t>::empty(shape);
    uint8_t* pm = m.data();
    for (int64_t i = 0, n = m.numel(); i < n; ++i) pm[i] = kern::dropout_keep(seed, i, p) ? 1 : 0;
    return m;
}

}  // namespace detail

/// y = x * mask / (1 - p) while training; x itself otherwise.   x: any shape
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, bool training, Generator& gen = default_generator()) {
    MOEKD_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got ", p, " (input ", x.shape(), ")");
    if (!training || p == 0.0) return x;
    const int64_t n = x.numel();
    const uint64_t seed = p == 1.0 ? 0 : gen.next_u64();  // p = 1 keeps nothing whatever u is
    const T scale = p == 1.0 ? T(0) : static_cast<T>(1.0 / (1.0 - p));
    Tensor<T> xc = detail::contiguous_data(x);
    if (x.device() != Device::CPU) {  // kernels/ops.cu: the mask and y in one pass
        Tensor<uint8_t> mask = Tensor<uint8_t>::empty(x.shape(), x.device());
        Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
        if (n > 0)
            detail::device_entry(DeviceOps<T>::cuda().dropout, "dropout", x.shape())(xc.data(), y.data(), mask.data(),
                                                                                   n, seed, p, scale);
        return record<T>(y, "dropout", {x}, [mask, scale](const Tensor<T>& g) {
            Tensor<T> gc = detail::contiguous_data(g);
            Tensor<T> gx = Tensor<T>::empty(mask.shape(), mask.device());
            if (gx.numel() > 0)
                detail::device_entry(DeviceOps<T>::cuda().dropout_backward, "dropout", mask.shape())(
                    mask.data(), gc.data(), gx.data(), gx.numel(), scale);
            return std::vector<Tensor<T>>{gx};
        });
    }
    Tensor<uint8_t> mask = detail::dropout_mask(x.shape(), p, seed);
    Tensor<T> y = Tensor<T>::empty(x.shape());
    {
        const T* px = xc.data();
        const uint8_t* pm = mask.data();
        T* py = y.data();
        for (int64_t i = 0; i < n; ++i) py[i] = pm[i] ? px[i] * scale : T(0);
    }
    return record<T>(y, "dropout", {x}, [mask, scale](const Tensor<T>& g) {
        Tensor<T> gc = detail::contiguous_data(g);
        Tensor<T> gx = Tensor<T>::empty(mask.shape());
        const uint8_t* pm = mask.data();
        for (int64_t i = 0, n = gx.numel(); i < n; ++i) gx.data()[i] = pm[i] ? gc.data()[i] * scale : T(0);
        return std::vector<Tensor<T>>{gx};
    });
}

}  // namespace moekd
