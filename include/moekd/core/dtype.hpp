// dtype.hpp — element types. Training runs in float, gradient checks in double; int64_t holds
// indices (token ids, targets, expert ids). bf16 and half are 16-bit *storage* types for the GPU
// path: convertible to and from float, no arithmetic of their own (compute happens in float).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../kernels/common.cuh"

namespace moekd {

/// bfloat16: the top 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
    uint16_t bits = 0;
    bf16() = default;
    MOEKD_HD explicit bf16(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) { bits = 0x7fc0; return; }  // NaN stays NaN
        u += 0x7fffu + ((u >> 16) & 1u);
        bits = static_cast<uint16_t>(u >> 16);
    }
    MOEKD_HD explicit operator float() const {
        uint32_t u = static_cast<uint32_t>(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

/// IEEE binary16, round to nearest even; subnormals and infinities handled.
struct half {
    uint16_t bits = 0;
    half() = default;
    MOEKD_HD explicit half(float f) {
        uint32_t x;
        std::memcpy(&x, &f, 4);
        uint32_t sign = (x >> 16) & 0x8000u;
        uint32_t mag = x & 0x7fffffffu;
        if (mag > 0x7f800000u) { bits = static_cast<uint16_t>(sign | 0x7e00u); return; }
        if (mag >= 0x47800000u) { bits = static_cast<uint16_t>(sign | 0x7c00u); return; }  // overflow -> inf
        if (mag < 0x38800000u) {  // subnormal half (or zero)
            float a;
            std::memcpy(&a, &mag, 4);
            uint32_t sub = static_cast<uint32_t>(a * 16777216.0f + 0.5f);  // a / 2^-24, rounded
            // round-half-even correction for exact ties
            float back = static_cast<float>(sub) - a * 16777216.0f;
            if (back == 0.5f && (sub & 1u)) --sub;
            bits = static_cast<uint16_t>(sign | sub);
            return;
        }
        uint32_t e = ((mag >> 23) - 112u) << 10;
        uint32_t m = (mag >> 13) & 0x3ffu;
        uint32_t rest = mag & 0x1fffu;
        uint32_t h = e | m;
        if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) ++h;
        bits = static_cast<uint16_t>(sign | h);
    }
    MOEKD_HD explicit operator float() const {
        uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
        uint32_t e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu, u;
        if (e == 0) {
            float f = static_cast<float>(m) * (1.0f / 16777216.0f);
            std::memcpy(&u, &f, 4);
            u |= sign;
        } else if (e == 31) {
            u = sign | 0x7f800000u | (m << 13);
        } else {
            u = sign | ((e + 112u) << 23) | (m << 13);
        }
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

template <class T> constexpr const char* dtype_name() {
    if constexpr (std::is_same_v<T, float>) return "float32";
    else if constexpr (std::is_same_v<T, double>) return "float64";
    else if constexpr (std::is_same_v<T, int64_t>) return "int64";
    else if constexpr (std::is_same_v<T, int32_t>) return "int32";
    else if constexpr (std::is_same_v<T, uint8_t>) return "uint8";
    else if constexpr (std::is_same_v<T, bool>) return "bool";
    else if constexpr (std::is_same_v<T, bf16>) return "bfloat16";
    else if constexpr (std::is_same_v<T, half>) return "float16";
    else return "unknown";
}

/// Element types that carry gradients.
template <class T> concept Floating = std::is_same_v<T, float> || std::is_same_v<T, double>;

}  // namespace moekd
