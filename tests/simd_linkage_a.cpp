// simd_linkage_a.cpp — the AVX-512 half of simd_linkage_test: built with -mavx512f (tests/CMakeLists.txt),
// so an f32x16 passed or returned by value lives in a zmm register here.
#include <moekd/kernels/softmax.cuh>

#if defined(MOEKD_HOST_SIMD) && defined(__x86_64__) && !defined(__AVX512F__)
#error "simd_linkage_a.cpp must be compiled with AVX-512 (-mavx512f)"
#endif

namespace moekd_simd_linkage {

/// y[0..16) = exp(x[0..16)) through the f32x16 helpers (load, exp_fast, store), and their max and
/// sum through max_lanes / sum_lanes. Not inline: this unit's own copies of the helpers run.
float run_a(const float* x, float* y, float* max) {
#if defined(MOEKD_HOST_SIMD)
    namespace simd = moekd::kern::simd;
    const simd::f32x16 e = simd::exp_fast(simd::load(x));
    simd::store(y, e);
    *max = simd::max_lanes(e, -__builtin_inff());
    return simd::sum_lanes(e, 0.0f);
#else
    float s = 0.0f;
    *max = -__builtin_inff();
    for (int l = 0; l < 16; ++l) {
        y[l] = moekd::kern::exp_fast(x[l]);
        *max = y[l] > *max ? y[l] : *max;
        s += y[l];
    }
    return s;
#endif
}

}  // namespace moekd_simd_linkage
