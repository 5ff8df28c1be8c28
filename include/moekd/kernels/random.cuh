// random.cuh — Philox4x32-10, the counter-based generator of Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3" (SC 2011), as cuRAND and PyTorch's CUDA generator use it: ten
// rounds of two 32x32->64-bit multiplies turn a 128-bit counter and a 64-bit key into four
// 32-bit words. Any element's random number comes from its index alone, so the CPU loop and
// every GPU thread draw the same numbers in any order (dropout's mask is the same on both
// backends for the same seed).
#pragma once

#include <cstdint>

#include "common.cuh"

namespace moekd::kern {

struct Philox4 {
    uint32_t v[4];
};

MOEKD_HD inline Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < 10; ++r) {
        const uint64_t p0 = uint64_t(M0) * c.v[0], p1 = uint64_t(M1) * c.v[2];
        const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
        c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        k0 += W0;
        k1 += W1;
    }
    return c;
}

/// The 32-bit random word of element i under `seed`: word i % 4 of the block for counter i / 4.
MOEKD_HD inline uint32_t philox_word(uint64_t seed, int64_t i) {
    const uint64_t blk = static_cast<uint64_t>(i) >> 2;
    const Philox4 r = philox4x32_10(Philox4{{uint32_t(blk), uint32_t(blk >> 32), 0u, 0u}}, uint32_t(seed),
                                    uint32_t(seed >> 32));
    return r.v[i & 3];
}

/// Dropout keeps element i with probability 1 - p: u = word * 2^-32 in [0, 1), kept iff u >= p
/// (exact in double, so both backends decide alike).
MOEKD_HD inline bool dropout_keep(uint64_t seed, int64_t i, double p) {
    return static_cast<double>(philox_word(seed, i)) * 0x1p-32 >= p;
}

}  // namespace moekd::kern
