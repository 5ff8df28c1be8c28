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
//   // nvcc: kernel<T><<<grid, block, shared_bytes, stream>>>(args...), and a failed launch throws
//   // moekd::Error naming the kernel and its configuration (the emulation checks the same limits)
// MOEKD_DYNAMIC_SHARED(T, name) declares `T* name`, the launch's dynamic shared memory.
#pragma once

#if defined(__CUDACC__)
#define MOEKD_HD __host__ __device__
#define MOEKD_CUDA_KERNELS 1
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "../core/error.hpp"
namespace moekd::kern::cuda {
/// What MOEKD_LAUNCH is under nvcc: kernel<<<grid, block, smem, stream>>>(args...), then a launch
/// that failed (an invalid configuration, too much shared memory, no kernel image for this GPU)
/// becomes an error naming the kernel and its configuration, at the launch that caused it.
template <class K>
struct Launch {
    K kernel;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    const char* name;
    template <class... A>
    void operator()(A&&... a) const {
        kernel<<<grid, block, smem, stream>>>(std::forward<A>(a)...);
        if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess)
            throw Error(msg("CUDA launch of ", name, " failed: ", cudaGetErrorString(e), " (", cudaGetErrorName(e),
                            "); grid (", grid.x, ", ", grid.y, ", ", grid.z, "), block (", block.x, ", ", block.y, ", ",
                            block.z, "), ", smem, " bytes of dynamic shared memory"));
    }
};
template <class K>
Launch<K> make_launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* name) {
    return Launch<K>{kernel, grid, block, smem, stream, name};
}
}  // namespace moekd::kern::cuda
#define MOEKD_LAUNCH(grid, block, smem, stream, ...)                                                       \
    ::moekd::kern::cuda::make_launch(&__VA_ARGS__, dim3(grid), dim3(block), static_cast<size_t>(smem), stream, \
                                     #__VA_ARGS__)
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

#if defined(MOEKD_CUDA_KERNELS)
#include <cstdint>
namespace moekd::kern::cuda {
/// A 1-D grid of `blocks` blocks, clamped to [1, 65535] (the kernels loop grid-stride past it).
inline unsigned grid_1d(int64_t blocks) {
    return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}
/// The grid of a grid-stride loop over n items with `block` threads a block.
inline unsigned grid_for(int64_t n, unsigned block = 256) { return grid_1d((n + block - 1) / block); }
}  // namespace moekd::kern::cuda
#endif
