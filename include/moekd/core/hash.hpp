// hash.hpp — 64-bit FNV-1a, the one byte hash of the library: configuration checks between ranks,
// corpus and tokenizer fingerprints, shard integrity, split keys. Fast and platform-independent,
// not cryptographic. `h` continues a hash, so several pieces hash into one value; a caller that
// needs another starting value (a seed) passes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moekd {

inline constexpr uint64_t kFnv1aOffset = 14695981039346656037ull;  // the FNV-1a 64 offset basis
inline constexpr uint64_t kFnv1aPrime = 1099511628211ull;

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
inline uint64_t fnv1a64(std::string_view bytes, uint64_t h = kFnv1aOffset) {
    for (char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= kFnv1aPrime;
    }
    return h;
}

/// The same over `n` raw bytes at `p` (its own name: as an fnv1a64 overload, fnv1a64("text", h)
/// would pick it, with h as the length).
inline uint64_t fnv1a64_bytes(const void* p, size_t n, uint64_t h = kFnv1aOffset) {
    return fnv1a64(std::string_view(static_cast<const char*>(p), n), h);
}

}  // namespace moekd
