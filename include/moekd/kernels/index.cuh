// index.cuh — the per-element math of the index, select and reduce ops that the CPU loops
// (ops/index.hpp, select.hpp, reduce.hpp) and the CUDA kernels (kernels/index.cu) share.
#pragma once

#include <cstdint>

#include "../core/backend.hpp"
#include "common.cuh"

namespace moekd::kern {

/// True when `a` (at position ia) ranks before `b` (at ib) in a descending top-k: NaN first (as
/// torch, NaN counts as the largest), then larger values, then the lower position on ties. A
/// strict total order, so argmax / top-k results are unique.
template <class T>
MOEKD_HD inline bool topk_before(T a, int64_t ia, T b, int64_t ib) {
    const bool na = a != a, nb = b != b;
    if (na != nb) return na;
    if (!na && a != b) return a > b;
    return ia < ib;
}

/// The running max (is_max) or min with v folded in; a NaN on either side wins (as torch.amax).
template <class T>
MOEKD_HD inline T extreme_fold(T best, T v, bool is_max) {
    if (best != best || v != v) return best != best ? best : v;
    return (is_max ? v > best : v < best) ? v : best;
}

template <class T>
MOEKD_HD inline bool compare(CompareOp op, T a, T b) {
    switch (op) {
        case CompareOp::Eq: return a == b;
        case CompareOp::Ne: return a != b;
        case CompareOp::Lt: return a < b;
        case CompareOp::Le: return a <= b;
        case CompareOp::Gt: return a > b;
        case CompareOp::Ge: return a >= b;
    }
    return false;
}

MOEKD_HD inline bool logic(LogicOp op, uint8_t a, uint8_t b) {
    switch (op) {
        case LogicOp::Not: return a == 0;
        case LogicOp::And: return a != 0 && b != 0;
        case LogicOp::Or: return a != 0 || b != 0;
    }
    return false;
}

}  // namespace moekd::kern
