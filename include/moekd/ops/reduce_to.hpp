// reduce_to.hpp — forward declarations the view and elementwise headers need from reduce.hpp.
#pragma once

#include "../core/tensor.hpp"

namespace moekd {
/// Sums `x` over the dims that broadcasting added or expanded so the result has `shape`.
template <class T>
Tensor<T> sum_to(const Tensor<T>& x, const Shape& shape);
}  // namespace moekd
