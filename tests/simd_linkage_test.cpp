// simd_linkage_test.cpp — one program linking two units that use the host SIMD helpers of
// kernels/softmax.cuh with different target flags: simd_linkage_a.cpp with AVX-512 (an f32x16 by
// value in a zmm register), simd_linkage_b.cpp without (the same f32x16 in memory). Both are built
// at -O0, so every helper is a real call. Were the helpers of vague linkage, the linker would keep
// one unit's copy for both and the other unit would call it with the wrong calling convention
// (garbage values, or SIGILL on a CPU without AVX-512); each unit must get its own exp values.
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

namespace moekd_simd_linkage {
float run_a(const float* x, float* y, float* max);  // simd_linkage_a.cpp (AVX-512)
float run_b(const float* x, float* y, float* max);  // simd_linkage_b.cpp (no AVX-512)
}  // namespace moekd_simd_linkage

namespace {

// 16 lanes: both signs, the clamps' neighbourhood (exp_fast gives 0 below -87.3, +inf above 88.7).
const float kX[16] = {0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 2.75f, -3.25f, 10.0f,
                      -10.0f, 20.5f, -20.5f, 40.0f, -40.0f, 80.0f, -80.0f, 88.0f};

void check_against_std_exp(float (*run)(const float*, float*, float*), const char* unit) {
    float y[16] = {}, max = 0.0f;
    const float sum = run(kX, y, &max);
    double ref_sum = 0.0, ref_max = 0.0;
    for (int l = 0; l < 16; ++l) {
        const double ref = std::exp(static_cast<double>(kX[l]));
        INFO(unit << " lane " << l << ": exp(" << kX[l] << ") = " << y[l] << ", std::exp " << ref);
        CHECK(std::abs(y[l] - ref) <= 1e-6 * ref);  // exp_fast: < 2 ulp (1.2e-7 relative)
        ref_sum += ref;
        ref_max = ref > ref_max ? ref : ref_max;
    }
    INFO(unit << ": sum " << sum << " vs " << ref_sum << ", max " << max << " vs " << ref_max);
    CHECK(std::abs(sum - ref_sum) <= 1e-6 * ref_sum);
    CHECK(std::abs(max - ref_max) <= 1e-6 * ref_max);
}

}  // namespace

TEST_CASE("simd helpers in a non-AVX-512 unit give exp, linked with an AVX-512 unit", "[simd][linkage]") {
    check_against_std_exp(moekd_simd_linkage::run_b, "simd_linkage_b (no AVX-512)");
}

TEST_CASE("simd helpers in an AVX-512 unit give exp, linked with a non-AVX-512 unit", "[simd][linkage]") {
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("avx512f")) {  // (Catch2 v2 has no SKIP)
        WARN("skipped: this CPU has no AVX-512F, simd_linkage_a.cpp cannot run here");
        return;
    }
#endif
    check_against_std_exp(moekd_simd_linkage::run_a, "simd_linkage_a (AVX-512)");
}
