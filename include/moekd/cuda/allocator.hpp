// cuda/allocator.hpp — the caching allocator for GPU memory, and its hook into Storage.
//
// cudaMalloc/cudaFree synchronise the device and cost tens of microseconds, so like the CPU
// allocator (core/allocator.hpp) and PyTorch's CUDA caching allocator, freed blocks go into
// per-(device, size) free lists and are handed out again. Sizes round up to 512 bytes, then to
// 1/8 of the next power of two. All work runs on the default stream, so a block freed by the
// host is only reused by work queued after the work that last read it.
//
// Including this header (or <moekd/cuda.hpp>) installs the allocator into
// DeviceAllocHooks::cuda(), so Tensor<T>::empty(shape, Device::CUDA) allocates GPU memory.
// The definitions live in kernels/runtime.cu (link moekd::cuda).
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/allocator.hpp"
#include "../core/storage.hpp"
#include "error.hpp"

namespace moekd::cuda {

class CudaAllocator {
public:
    /// The process-wide allocator (never destroyed: storages may outlive static destructors).
    static CudaAllocator& instance();

    static size_t round_size(size_t bytes);

    /// A block of at least `bytes` on the current device. Throws moekd::Error (with the CUDA
    /// error string) when cudaMalloc fails even after the cache was returned to the driver.
    void* allocate(size_t bytes);
    /// Returns a block from allocate() to its free list. Never throws and never allocates (it
    /// runs in destructors, also while an exception unwinds).
    void deallocate(void* p, size_t bytes);

    /// cudaFree every cached block (e.g. before handing the GPU to another library).
    void empty_cache();
    /// Caching off (e.g. with compute-sanitizer) frees blocks at once.
    void set_caching(bool on);
    AllocatorStats stats() const;

private:
    CudaAllocator() = default;
    void release_locked();
    struct Block {
        size_t size;
        int device;
    };
    mutable std::mutex mu_;
    std::map<std::pair<int, size_t>, std::vector<void*>> free_;  // (device, rounded size) -> blocks;
                                                                  // capacity >= blocks_ (see allocate)
    std::map<std::pair<int, size_t>, size_t> blocks_;            // blocks of that size that exist
    std::unordered_map<void*, Block> live_;                       // handed out, not yet returned
    AllocatorStats stats_;
    bool caching_ = true;
};

/// Points DeviceAllocHooks::cuda() at CudaAllocator (idempotent; touches no GPU).
void install_allocator();

/// The GPU caching allocator's counters: bytes in use, cached and at peak, allocations, cache hits.
inline AllocatorStats memory_stats() { return CudaAllocator::instance().stats(); }

/// Returns every cached (free) GPU block to the driver (e.g. before handing the GPU to another
/// library); blocks in use stay.
inline void empty_cache() { CudaAllocator::instance().empty_cache(); }

namespace detail {
// Runs install_allocator() during static initialisation of every program that includes this
// header; it also makes the linker keep kernels/runtime.cu from the static library.
inline const bool allocator_installed = (install_allocator(), true);
}  // namespace detail

}  // namespace moekd::cuda
