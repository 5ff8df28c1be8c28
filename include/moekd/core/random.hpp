// random.hpp — an explicit, seedable, serialisable random generator.
//
// xoshiro256** seeded through splitmix64, and our own uniform / normal transforms, so the same
// seed gives the same numbers with every compiler and standard library (std::normal_distribution
// does not promise that). The state is four words: checkpoints save and restore it exactly.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace moekd {

class Generator {
public:
    explicit Generator(uint64_t seed = 0x5eed) { manual_seed(seed); }

    void manual_seed(uint64_t seed) {
        uint64_t x = seed;
        for (auto& w : s_) w = splitmix64(x);
        has_spare_ = false;
    }

    uint64_t next_u64() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    /// Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

    /// Uniform integer in [lo, hi) (hi > lo), without modulo bias.
    int64_t randint(int64_t lo, int64_t hi) {
        const uint64_t range = static_cast<uint64_t>(hi - lo);
        const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
        uint64_t r;
        do r = next_u64();
        while (r >= limit);
        return lo + static_cast<int64_t>(r % range);
    }

    /// Standard normal by the Box-Muller transform (the second value is kept for the next call).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u1;
        do u1 = uniform();
        while (u1 <= 0.0);
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        spare_ = r * std::sin(2.0 * M_PI * u2);
        has_spare_ = true;
        return r * std::cos(2.0 * M_PI * u2);
    }

    struct State {
        std::array<uint64_t, 4> s;
        bool has_spare;
        double spare;
        bool operator==(const State&) const = default;
    };
    State state() const { return {s_, has_spare_, spare_}; }
    void set_state(const State& st) {
        s_ = st.s;
        has_spare_ = st.has_spare;
        spare_ = st.spare;
    }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    static uint64_t splitmix64(uint64_t& x) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    std::array<uint64_t, 4> s_{};
    bool has_spare_ = false;
    double spare_ = 0.0;
};

/// The process-wide default generator, used when a call is given none.
inline Generator& default_generator() {
    static Generator g(0x5eed);
    return g;
}

}  // namespace moekd
