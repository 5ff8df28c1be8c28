// eigen.hpp — <Eigen/Core> for the CPU ops, included the one way every header must use.
//
// GCC 12 flags the `__m256d __Y = __Y;` idiom inside its own AVX-512 intrinsics (used by Eigen's
// packets) as maybe-uninitialized, or uninitialized where BDCSVD inlines it: a known false
// positive. The intrinsics headers are first included by Eigen, so silencing the warning around that first include silences it wherever the
// packets are inlined later; a header including <Eigen/Core> directly before this one would
// bring the warnings back.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
