// simd_linkage_a.cpp — the AVX-512 half of simd_linkage_test: built with -mavx512f (tests/CMakeLists.txt),
// so an f32x16 passed or returned by value lives in a zmm register here.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX512F__)
#error "simd_linkage_a.cpp must be compiled with AVX-512 (-mavx512f)"
#endif
#define SIMD_LINKAGE_RUN run_a
#include "simd_linkage_unit.inc"
