// common.cuh — the markers shared by every kernel header and the CPU path.
//
// Arithmetic that must be identical on CPU and GPU lives in inline functions marked MOEKD_HD.
// Under nvcc they become __host__ __device__; under a host compiler the marker vanishes and the
// CPU ops call the very same functions, so CPU tests exercise the GPU's per-element math.
//
// MOEKD_CUDA_KERNELS is set where the __global__ kernels and their launchers are compiled: under
// nvcc, and in the emulated CUDA build (emu/README.md), where g++ compiles the same kernel
// sources against host fibers. Kernels are launched only through MOEKD_LAUNCH, so both builds
// read one source:
//   MOEKD_LAUNCH(grid, block, shared_bytes, stream, kernel<T>)(args...);
//   // nvcc: kernel<T><<<grid, block, shared_bytes, stream>>>(args...)
// MOEKD_DYNAMIC_SHARED(T, name) declares `T* name`, the launch's dynamic shared memory.
#pragma once

#if defined(__CUDACC__)
#define MOEKD_HD __host__ __device__
#define MOEKD_CUDA_KERNELS 1
#define MOEKD_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#define MOEKD_DYNAMIC_SHARED(T, name)                      \
    extern __shared__ __align__(16) unsigned char moekd_dynamic_smem_[]; \
    T* name = reinterpret_cast<T*>(moekd_dynamic_smem_)
#elif defined(MOEKD_EMULATED_CUDA)
#include <cuda_runtime.h>  // emu/include: the keywords, the built-in indices, the launch
#define MOEKD_HD
#define MOEKD_CUDA_KERNELS 1
#define MOEKD_LAUNCH(grid, block, smem, stream, ...) MOEKD_EMU_LAUNCH(grid, block, smem, stream, __VA_ARGS__)
#define MOEKD_DYNAMIC_SHARED(T, name) MOEKD_EMU_DYNAMIC_SHARED(T, name)
#else
#define MOEKD_HD
#endif
