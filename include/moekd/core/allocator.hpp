// allocator.hpp — the CPU caching allocator.
//
// A training step makes hundreds of temporaries of the same few sizes. Going to malloc for each
// costs page faults and zeroing (large blocks are mmap'ed fresh every time). Like PyTorch's
// CUDA caching allocator, freed blocks are kept in per-size free lists and handed out again.
// Sizes are rounded up (to 64 bytes under 4 KiB, then to 1/8 of the next power of two) so
// that near sizes share a list. All blocks are 64-byte aligned (one cache line, AVX-512).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace moekd {

struct AllocatorStats {
    uint64_t allocations = 0;  // calls to allocate
    uint64_t cache_hits = 0;   // served from a free list
    size_t bytes_in_use = 0;   // handed out and not yet returned
    size_t bytes_cached = 0;   // held in free lists
    size_t peak_bytes_in_use = 0;
};

class CpuAllocator {
public:
    static CpuAllocator& instance() {
        static CpuAllocator* a = new CpuAllocator();  // never destroyed: storages may outlive statics
        return *a;
    }

    static size_t round_size(size_t bytes) {
        if (bytes == 0) bytes = 1;
        if (bytes <= 4096) return (bytes + 63) & ~size_t(63);
        size_t p = 4096;
        while (p < bytes) p <<= 1;
        size_t step = p / 8;
        return (bytes + step - 1) / step * step;
    }

    void* allocate(size_t bytes) {
        const size_t n = round_size(bytes);
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.allocations;
        auto it = free_.find(n);
        void* p = nullptr;
        if (it != free_.end() && !it->second.empty()) {
            p = it->second.back();
            it->second.pop_back();
            ++stats_.cache_hits;
            stats_.bytes_cached -= n;
        } else {
            p = std::aligned_alloc(64, n);
            if (!p) {  // out of memory: give the cache back to the system and try once more
                release_locked();
                p = std::aligned_alloc(64, n);
                if (!p) throw std::bad_alloc();
            }
        }
        stats_.bytes_in_use += n;
        if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
        return p;
    }

    void deallocate(void* p, size_t bytes) {
        if (!p) return;
        const size_t n = round_size(bytes);
        std::lock_guard<std::mutex> lock(mu_);
        stats_.bytes_in_use -= n;
        if (!caching_) { std::free(p); return; }
        free_[n].push_back(p);
        stats_.bytes_cached += n;
    }

    /// Returns every cached block to the system (e.g. between phases of a program).
    void empty_cache() {
        std::lock_guard<std::mutex> lock(mu_);
        release_locked();
    }

    /// Turning caching off (e.g. under AddressSanitizer to catch use-after-free) frees blocks at once.
    void set_caching(bool on) {
        std::lock_guard<std::mutex> lock(mu_);
        caching_ = on;
        if (!on) release_locked();
    }

    AllocatorStats stats() const {
        std::lock_guard<std::mutex> lock(mu_);
        return stats_;
    }

private:
    CpuAllocator() {
#if defined(__SANITIZE_ADDRESS__)
        caching_ = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
        caching_ = false;
#endif
#endif
    }
    void release_locked() {
        for (auto& [n, v] : free_)
            for (void* p : v) std::free(p);
        free_.clear();
        stats_.bytes_cached = 0;
    }
    mutable std::mutex mu_;
    std::map<size_t, std::vector<void*>> free_;
    AllocatorStats stats_;
    bool caching_ = true;
};

}  // namespace moekd
