// allocator.hpp — the CPU caching allocator.
//
// A training step makes hundreds of temporaries of the same few sizes. Going to malloc for each
// costs page faults and zeroing (large blocks are mmap'ed fresh every time). Like PyTorch's
// CUDA caching allocator, freed blocks are kept in per-size free lists and handed out again.
// Sizes are rounded up (to 64 bytes under 4 KiB, then to 1/8 of the next power of two) so
// that near sizes share a list. All blocks are 64-byte aligned (one cache line, AVX-512).
//
// deallocate() runs inside destructors (~Storage), also while an exception unwinds the stack, so
// it never allocates and never throws: each size class is a fixed slot of an array, and its free
// list is intrusive (a cached block's first word points at the next cached block). Running out of
// memory in allocate() is a moekd::OutOfMemoryError saying how many bytes were asked for (Storage
// adds the element type and count); the cache is given back to the system and the allocation
// tried once more first, and a small heap reserve is freed so that the message itself can be
// built when memory is gone entirely.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>

#include "error.hpp"

namespace moekd {

/// Thrown when memory for a tensor cannot be had (a moekd::Error: programs report it and exit 1).
class OutOfMemoryError : public Error {
public:
    explicit OutOfMemoryError(const std::string& what) : Error(what) {}
};

struct AllocatorStats {
    uint64_t allocations = 0;  // calls to allocate
    uint64_t cache_hits = 0;   // served from a free list
    size_t bytes_in_use = 0;   // handed out and not yet returned
    size_t bytes_cached = 0;   // held in free lists
    size_t peak_bytes_in_use = 0;
};

class CpuAllocator {
public:
    /// The largest request served (2^62 bytes); larger ones are an error, never a wrapped size.
    static constexpr size_t kMaxBytes = size_t(1) << 62;

    static CpuAllocator& instance() {
        static CpuAllocator* a = new CpuAllocator();  // never destroyed: storages may outlive statics
        return *a;
    }

    /// The size actually reserved for a request of `bytes` (bytes <= kMaxBytes).
    static size_t round_size(size_t bytes) {
        if (bytes == 0) bytes = 1;
        if (bytes <= 4096) return (bytes + 63) & ~size_t(63);
        const size_t step = std::bit_ceil(bytes) / 8;
        return (bytes + step - 1) / step * step;
    }

    /// A 64-byte aligned block of at least `bytes`, or nullptr when the system has no memory left.
    void* try_allocate(size_t bytes) noexcept {
        if (bytes > kMaxBytes) return nullptr;
        const size_t n = round_size(bytes);
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.allocations;
        FreeBlock*& head = free_[size_class(n)];
        void* p = nullptr;
        if (head) {
            p = head;
            head = head->next;
            ++stats_.cache_hits;
            stats_.bytes_cached -= n;
        } else {
            p = std::aligned_alloc(64, n);
            if (!p) {  // out of memory: give the cache back to the system and try once more
                release_locked();
                p = std::aligned_alloc(64, n);
                if (!p) {  // and free the reserve, so that the error message can be built
                    std::free(reserve_);
                    reserve_ = nullptr;
                    return nullptr;
                }
            }
        }
        if (!reserve_) reserve_ = std::malloc(kReserve);
        stats_.bytes_in_use += n;
        if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
        return p;
    }

    /// try_allocate, or an OutOfMemoryError naming the size (`what` says what it was for).
    void* allocate(size_t bytes, const char* what = "a tensor") {
        void* p = try_allocate(bytes);
        if (!p) throw OutOfMemoryError(out_of_memory_message(bytes, what));
        return p;
    }

    /// Gives a block back (to its free list, or to the system when caching is off). Never
    /// allocates, never throws: it runs in destructors.
    void deallocate(void* p, size_t bytes) noexcept {
        if (!p) return;
        const size_t n = round_size(bytes);
        std::lock_guard<std::mutex> lock(mu_);
        stats_.bytes_in_use -= n;
        if (!caching_) {
            std::free(p);
            return;
        }
        FreeBlock*& head = free_[size_class(n)];
        head = new (p) FreeBlock{head};
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

    /// "out of memory: cannot allocate 1.0 PiB (1125899906842624 bytes) for <what> ..." .
    std::string out_of_memory_message(size_t bytes, const std::string& what) const {
        const AllocatorStats s = stats();
        return msg("out of memory: cannot allocate ", human_bytes(bytes), " (", bytes, " bytes) for ", what,
                   bytes > kMaxBytes ? " (more than any machine has)" : "", "; moekd holds ",
                   human_bytes(s.bytes_in_use), " in live tensors. HINT: a smaller model, batch or --experts, "
                   "or a larger memory limit (ulimit -v)");
    }

    static std::string human_bytes(size_t b) {
        const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        double v = double(b);
        int u = 0;
        while (v >= 1024 && u < 6) v /= 1024, ++u;
        char buf[32];
        std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, unit[u]);
        return buf;
    }

private:
    struct FreeBlock {
        FreeBlock* next;
    };
    // size classes: 64, 128, ..., 4096 (64 of them), then 4 per power of two p = 2^13 .. 2^62
    // (5p/8, 6p/8, 7p/8, p: what round_size makes of the sizes in (p/2, p])
    static constexpr size_t kClasses = 64 + 4 * (62 - 13 + 1);
    static size_t size_class(size_t n) {  // n = round_size(...)
        if (n <= 4096) return n / 64 - 1;
        const size_t p = std::bit_ceil(n);
        return 64 + 4 * size_t(std::countr_zero(p) - 13) + (n / (p / 8) - 5);
    }

    CpuAllocator() {
#if defined(__SANITIZE_ADDRESS__)
        caching_ = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
        caching_ = false;
#endif
#endif
    }
    void release_locked() noexcept {
        for (FreeBlock*& head : free_)
            while (head) {
                FreeBlock* next = head->next;
                std::free(head);
                head = next;
            }
        stats_.bytes_cached = 0;
    }
    static constexpr size_t kReserve = 64 << 10;  // heap kept back for the out-of-memory message
    mutable std::mutex mu_;
    void* reserve_ = nullptr;
    std::array<FreeBlock*, kClasses> free_{};
    AllocatorStats stats_;
    bool caching_ = true;
};

}  // namespace moekd
