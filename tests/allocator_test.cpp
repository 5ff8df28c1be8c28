// allocator_test.cpp — the caching CPU allocator under memory pressure: deallocate() (run by
// destructors, also while an exception unwinds) allocates nothing, and an allocation that cannot
// be served is a moekd::OutOfMemoryError naming the bytes, the element type and count, never a
// bare std::bad_alloc, a wrapped size or an abort. (tests/oom runs the same under `ulimit -v`.)
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

// AddressSanitizer's malloc aborts on a request beyond its maximum (unless ASAN_OPTIONS has
// allocator_may_return_null=1), so the cases that make the system allocator fail skip there.
#if defined(__SANITIZE_ADDRESS__)
#define MOEKD_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOEKD_TEST_ASAN 1
#endif
#endif

// Counts operator new calls of this binary while `counting` is set (the property under test:
// CpuAllocator::deallocate makes none).
namespace {
std::atomic<bool> counting{false};
std::atomic<long> news{0};
}  // namespace
void* operator new(size_t n) {
    if (counting.load()) ++news;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
// Every form that a delete below may receive is replaced too, so new/delete pairs match (the
// sanitizer checks that memory from its own nothrow new is not given to free).
void* operator new(size_t n, const std::nothrow_t&) noexcept {
    if (counting.load()) ++news;
    return std::malloc(n ? n : 1);
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return operator new(n, std::nothrow); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

TEST_CASE("deallocate allocates nothing, for every size class", "[allocator]") {
    auto& a = CpuAllocator::instance();
    std::vector<std::pair<void*, size_t>> blocks;
    blocks.reserve(512);
    // sizes no other test used: each is a size class seen for the first time (a new free list)
    for (size_t s = 5000, i = 0; i < 60; ++i, s = s * 9 / 8 + 64) {
        void* p = a.allocate(s);
        REQUIRE(p != nullptr);
        CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
        blocks.emplace_back(p, s);
    }
    for (size_t s : {64, 128, 4096, 4097, 100000}) blocks.emplace_back(a.allocate(s), s);
    const auto before = a.stats();
    news = 0;
    counting = true;
    for (auto& [p, s] : blocks) a.deallocate(p, s);
    counting = false;
    CHECK(news.load() == 0);
    const auto after = a.stats();
    size_t total = 0;
    for (auto& [p, s] : blocks) total += CpuAllocator::round_size(s);
    CHECK(before.bytes_in_use - after.bytes_in_use == total);
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(after.bytes_cached - before.bytes_cached == total);
    // and the cached blocks are handed out again, the newest of a class first
    void* again = a.allocate(blocks.back().second);
    CHECK(again == blocks.back().first);
    a.deallocate(again, blocks.back().second);
#endif
    a.empty_cache();
    CHECK(a.stats().bytes_cached == 0);
}

TEST_CASE("size classes: rounding, alignment and reuse are unchanged", "[allocator]") {
    CHECK(CpuAllocator::round_size(0) == 64);
    CHECK(CpuAllocator::round_size(65) == 128);
    CHECK(CpuAllocator::round_size(4096) == 4096);
    CHECK(CpuAllocator::round_size(4097) == 5120);
    CHECK(CpuAllocator::round_size(8193) == 10240);
    CHECK(CpuAllocator::round_size((size_t(1) << 40) + 1) == (size_t(1) << 41) / 8 * 5);
    CHECK(CpuAllocator::round_size(CpuAllocator::kMaxBytes) == CpuAllocator::kMaxBytes);
}

TEST_CASE("an impossible tensor is a clear out-of-memory error, not an abort", "[allocator][oom]") {
#ifdef MOEKD_TEST_ASAN
    WARN("skipped under AddressSanitizer: its malloc aborts on a 1 PiB request (tests/oom runs this in the release build)");
    return;
#endif
    // 2^48 floats = 2^50 bytes (1 PiB): more than the address space, the allocation fails
    const int64_t n = int64_t(1) << 48;
    try {
        auto t = Tensor<float>::empty({n});
        FAIL("a 1 PiB tensor was allocated");
    } catch (const OutOfMemoryError& e) {
        const std::string m = e.what();
        CHECK_THAT(m, Contains("out of memory"));
        CHECK_THAT(m, Contains("1125899906842624 bytes"));
        CHECK_THAT(m, Contains("281474976710656 elements of float32"));
    }
    CHECK_THROWS_AS(Tensor<double>::zeros({int64_t(1) << 20, int64_t(1) << 27}), Error);
    // the allocator still works afterwards
    auto ok = Tensor<float>::ones({1000});
    CHECK(ok.data()[999] == 1.0f);
}

TEST_CASE("an element count whose byte size overflows is refused, not wrapped", "[allocator][oom]") {
    // 2^62 floats: n * 4 wraps to 0 in 64 bits; that must not become a 64-byte allocation
    CHECK_THROWS_WITH(Storage<float>(size_t(1) << 62), Contains("4611686018427387904 elements of float32"));
    CHECK_THROWS_AS(Storage<double>(~size_t(0) / 4), OutOfMemoryError);
    CHECK_THROWS_WITH(CpuAllocator::instance().allocate(~size_t(0), "the test"),
                      Contains("more than any machine has"));
    CHECK(CpuAllocator::instance().try_allocate(CpuAllocator::kMaxBytes + 1) == nullptr);
}
