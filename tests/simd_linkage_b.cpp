// simd_linkage_b.cpp — the non-AVX-512 half of simd_linkage_test: built with -mno-avx512f
// (tests/CMakeLists.txt), so an f32x16 passed or returned by value goes through memory here.
#if defined(__AVX512F__)
#error "simd_linkage_b.cpp must be compiled without AVX-512 (-mno-avx512f)"
#endif
#define SIMD_LINKAGE_RUN run_b
#include "simd_linkage_unit.inc"
