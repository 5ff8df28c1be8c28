// common.cuh — the MOEKD_HD marker shared by every kernel header and the CPU path.
//
// Arithmetic that must be identical on CPU and GPU lives in inline functions marked MOEKD_HD.
// Under nvcc they become __host__ __device__; under a host compiler the marker vanishes and the
// CPU ops call the very same functions, so CPU tests exercise the GPU's per-element math.
#pragma once

#if defined(__CUDACC__)
#define MOEKD_HD __host__ __device__
#else
#define MOEKD_HD
#endif
