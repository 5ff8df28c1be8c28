// strided.hpp — the one loop that walks N tensors of the same shape through their own strides.
//
// Reference-grade code: every op that does not have a contiguous fast path falls back to it.
// `f` receives the N element offsets of one position; the innermost dimension is the tight loop.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "shape.hpp"

namespace moekd::detail {

template <size_t N, class F>
void strided_loop(const Shape& shape, const std::array<const Shape*, N>& strides,
                  std::array<int64_t, N> offs, F&& f) {
    const int64_t r = shape.rank();
    for (int64_t d : shape)
        if (d == 0) return;
    if (r == 0) {
        f(offs);
        return;
    }
    std::vector<int64_t> idx(r, 0);
    std::array<int64_t, N> inner{};
    for (size_t k = 0; k < N; ++k) inner[k] = (*strides[k])[r - 1];
    const int64_t n_inner = shape[r - 1];
    while (true) {
        std::array<int64_t, N> o = offs;
        for (int64_t i = 0; i < n_inner; ++i) {
            f(o);
            for (size_t k = 0; k < N; ++k) o[k] += inner[k];
        }
        // advance the outer dimensions like an odometer
        int64_t d = r - 2;
        for (; d >= 0; --d) {
            ++idx[d];
            for (size_t k = 0; k < N; ++k) offs[k] += (*strides[k])[d];
            if (idx[d] < shape[d]) break;
            for (size_t k = 0; k < N; ++k) offs[k] -= (*strides[k])[d] * shape[d];
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

}  // namespace moekd::detail
