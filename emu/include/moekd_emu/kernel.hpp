// moekd_emu/kernel.hpp — device code on the host: the CUDA keywords, the built-in indices,
// __syncthreads, warp shuffles / votes, atomics, and the launch behind MOEKD_LAUNCH.
//
// A kernel is an ordinary function here. A launch (emu::Launch below) checks its configuration
// and its pointer arguments, then runs every block of the grid in order on the calling thread;
// each thread of a block is a fiber (src/fibers.cpp) that runs until it finishes or reaches a
// barrier or a warp collective, so __syncthreads and shuffles synchronise exactly the threads
// they would on the device. __shared__ variables are function statics per host thread: blocks
// run one at a time, so each block sees its own (uninitialised, as on the device) copy.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime.hpp"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

namespace moekd::emu {

/// One launch: a kernel's name (as written at the launch), its grid, block, dynamic shared bytes
/// and stream.
struct LaunchConfig {
    const char* kernel;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    const void* func;
};

namespace detail {
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared();
void sync_block(const std::source_location& where);

enum class WarpOp { Sync, Idx, Up, Down, Xor, Ballot, Any, All };
/// One warp collective of the calling thread: waits until every lane of `mask` has reached a
/// collective with the same mask, then returns this lane's result (bits of the value read).
uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int arg, int width, const std::source_location& where);

/// Runs body() as every thread of every block of the launch, with the allocations of `pointers`
/// (the kernel's pointer arguments) open to it; returns the launch's error.
cudaError_t run_kernel(const LaunchConfig& cfg, const std::function<void()>& body,
                       const std::vector<const void*>& pointers);
/// A kernel argument that is a pointer must be null or point into device memory.
bool check_pointer_arg(const LaunchConfig& cfg, int index, const void* p);

template <class T>
uint64_t to_bits(T v) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <class P>
bool check_arg(const LaunchConfig& cfg, int index, const P& v, std::vector<const void*>& pointers) {
    if constexpr (std::is_pointer_v<P>) {
        pointers.push_back(static_cast<const void*>(v));
        return check_pointer_arg(cfg, index, static_cast<const void*>(v));
    } else {
        return true;
    }
}
}  // namespace detail

/// The object MOEKD_LAUNCH(...) makes; calling it with the kernel's arguments runs the launch.
template <class... P>
struct Launch {
    LaunchConfig cfg;
    void (*fn)(P...);

    template <class... A>
    void operator()(A&&... a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        const std::tuple<P...> args(static_cast<P>(std::forward<A>(a))...);  // converted as a call would
        bool ok = true;
        int i = 0;
        std::vector<const void*> pointers;
        std::apply([&](const auto&... v) { ((ok = ok && detail::check_arg(cfg, i++, v, pointers)), ...); }, args);
        if (!ok) return;  // the error is recorded for cudaGetLastError
        (void)detail::run_kernel(cfg, [&] { std::apply(fn, args); }, pointers);
    }
};

template <class... P>
Launch<P...> make_launch(const char* name, void (*fn)(P...), dim3 grid, dim3 block, size_t shared_bytes,
                         cudaStream_t stream) {
    return Launch<P...>{LaunchConfig{name, grid, block, shared_bytes, stream, reinterpret_cast<const void*>(fn)}, fn};
}

}  // namespace moekd::emu

// ---- built-in variables --------------------------------------------------------------------------
#define threadIdx (::moekd::emu::detail::thread_idx())
#define blockIdx (::moekd::emu::detail::block_idx())
#define blockDim (::moekd::emu::detail::block_dim())
#define gridDim (::moekd::emu::detail::grid_dim())
inline constexpr int warpSize = ::moekd::emu::kWarpSize;

// ---- synchronisation -----------------------------------------------------------------------------
inline void __syncthreads(const std::source_location& where = std::source_location::current()) {
    ::moekd::emu::detail::sync_block(where);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location& where = std::source_location::current()) {
    (void)::moekd::emu::detail::warp_collective(::moekd::emu::detail::WarpOp::Sync, mask, 0, 0, warpSize, where);
}

#define MOEKD_EMU_SHFL(NAME, OP, ARG_T)                                                                     \
    template <class T>                                                                                        \
    T NAME(unsigned mask, T var, ARG_T arg, int width = warpSize,                                             \
           const std::source_location& where = std::source_location::current()) {                            \
        using namespace ::moekd::emu::detail;                                                                 \
        return from_bits<T>(warp_collective(WarpOp::OP, mask, to_bits(var), static_cast<int>(arg), width, where)); \
    }
MOEKD_EMU_SHFL(__shfl_sync, Idx, int)
MOEKD_EMU_SHFL(__shfl_up_sync, Up, unsigned)
MOEKD_EMU_SHFL(__shfl_down_sync, Down, unsigned)
MOEKD_EMU_SHFL(__shfl_xor_sync, Xor, int)
#undef MOEKD_EMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
    using namespace ::moekd::emu::detail;
    return static_cast<unsigned>(warp_collective(WarpOp::Ballot, mask, pred != 0, 0, warpSize, where));
}
inline int __any_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
    using namespace ::moekd::emu::detail;
    return static_cast<int>(warp_collective(WarpOp::Any, mask, pred != 0, 0, warpSize, where));
}
inline int __all_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
    using namespace ::moekd::emu::detail;
    return static_cast<int>(warp_collective(WarpOp::All, mask, pred != 0, 0, warpSize, where));
}

// ---- atomics (std::atomic_ref: blocks run one at a time today, but the code stays right if not) --
template <class T>
T atomicAdd(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
T atomicSub(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <class T>
T atomicExch(T* p, T v) {
    return std::atomic_ref<T>(*p).exchange(v);
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;  // the old value, whether or not it was swapped
}
template <class T>
T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <class T>
T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v > old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// ---- device intrinsics the kernels use -------------------------------------------------------------
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
template <class T>
T __ldg(const T* p) {
    return *p;
}
inline float __expf(float x) { return __builtin_expf(x); }
inline float __logf(float x) { return __builtin_logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / __builtin_sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / __builtin_sqrt(x); }

/// Dynamic shared memory: MOEKD_DYNAMIC_SHARED(float, buf) declares `float* buf`, the launch's
/// shared_bytes (kernels/common.cuh defines the nvcc form).
#define MOEKD_EMU_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::moekd::emu::detail::dynamic_shared())

/// The one launch macro (kernels/common.cuh gives the nvcc form, kernel<<<grid, block, smem, stream>>>).
#define MOEKD_EMU_LAUNCH(grid, block, smem, stream, ...) \
    ::moekd::emu::make_launch(#__VA_ARGS__, &__VA_ARGS__, (grid), (block), (smem), (stream))
