// dropout.hpp — inverted dropout with an explicit, seedable Generator, and its backward.
//
// Training: each element is kept with probability 1 - p and scaled by 1 / (1 - p), so the
// expected value is unchanged and evaluation needs no rescaling. The mask is drawn on the host
// from `gen` in row-major order (one uniform per element: kept iff u >= p), so the same generator
// state gives the same mask; the backward reuses the saved mask. Evaluation (training = false) and
// p = 0 return x itself; p = 1 gives zeros (as torch) and draws nothing.
// A CUDA path would need a counter-based generator (Philox) instead of this sequential one.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "elementwise.hpp"

namespace moekd {
namespace detail {

/// The keep mask (1 = kept) of dropout with probability p, drawn from gen in row-major order.
inline Tensor<uint8_t> dropout_mask(const Shape& shape, double p, Generator& gen) {
    Tensor<uint8_t> m = Tensor<uint8_t>::empty(shape);
    uint8_t* pm = m.data();
    for (int64_t i = 0, n = m.numel(); i < n; ++i) pm[i] = gen.uniform() >= p ? 1 : 0;
    return m;
}

}  // namespace detail

/// y = x * mask / (1 - p) while training; x itself otherwise.   x: any shape
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, bool training, Generator& gen = default_generator()) {
    MOEKD_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got ", p, " (input ", x.shape(), ")");
    detail::require_cpu(x, "dropout");
    if (!training || p == 0.0) return x;
    const int64_t n = x.numel();
    Tensor<uint8_t> mask = p == 1.0 ? Tensor<uint8_t>::zeros(x.shape()) : detail::dropout_mask(x.shape(), p, gen);
    const T scale = p == 1.0 ? T(0) : static_cast<T>(1.0 / (1.0 - p));
    Tensor<T> xc = detail::contiguous_data(x);
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
