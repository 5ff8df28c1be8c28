// shape.hpp — Shape (a list of sizes), strides, and the NumPy broadcasting rule.
//
// Shapes and strides are counted in elements, outermost dimension first, like PyTorch.
// Alphabet used in comments across moekd: B batch, T time/tokens, D model width, H heads,
// E experts, V vocabulary, N rows, K inner (GEMM) size.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <vector>

#include "error.hpp"

namespace moekd {

/// Sizes (or strides) per dimension. A std::vector so that everything a vector does works.
struct Shape : std::vector<int64_t> {
    using std::vector<int64_t>::vector;
    Shape() = default;
    Shape(std::initializer_list<int64_t> il) : std::vector<int64_t>(il) {}
    explicit Shape(const std::vector<int64_t>& v) : std::vector<int64_t>(v) {}
    int64_t rank() const { return static_cast<int64_t>(size()); }
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << '(';
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    if (s.size() == 1) os << ',';
    return os << ')';
}

/// Number of elements of a shape (1 for a scalar of rank 0).
inline int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

/// Row-major (C order) strides of a shape.
inline Shape contiguous_strides(const Shape& s) {
    Shape st(s.size());
    int64_t acc = 1;
    for (int64_t i = s.rank() - 1; i >= 0; --i) {
        st[i] = acc;
        acc *= s[i] > 0 ? s[i] : 1;
    }
    return st;
}

/// Maps a possibly negative dim to [0, rank); `op` names the caller in the error.
inline int64_t normalize_dim(int64_t dim, int64_t rank, const char* op) {
    int64_t r = rank == 0 ? 1 : rank;  // a scalar accepts dim 0 / -1, as in PyTorch
    MOEKD_CHECK(dim >= -r && dim < r, op, ": dim ", dim, " out of range for a tensor of rank ", rank);
    return dim < 0 ? dim + r : dim;
}

/// NumPy broadcasting: align from the right; sizes must match or one of them be 1.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    const int64_t r = std::max(a.rank(), b.rank());
    Shape out(r);
    for (int64_t i = 0; i < r; ++i) {
        int64_t da = i < r - a.rank() ? 1 : a[i - (r - a.rank())];
        int64_t db = i < r - b.rank() ? 1 : b[i - (r - b.rank())];
        MOEKD_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
                    " are not broadcastable (dim ", i, ": ", da, " vs ", db, ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

namespace detail {
/// Row-major multi-index of flat position `flat` in `shape` (for error messages).
inline Shape unravel_index(int64_t flat, const Shape& shape) {
    Shape pos(shape.rank());
    for (int64_t d = shape.rank() - 1; d >= 0; --d) {
        pos[d] = shape[d] > 0 ? flat % shape[d] : 0;
        flat = shape[d] > 0 ? flat / shape[d] : 0;
    }
    return pos;
}
}  // namespace detail

}  // namespace moekd
