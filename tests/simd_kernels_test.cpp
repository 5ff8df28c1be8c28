// simd_kernels_test.cpp — the host SIMD paths of the kernel row functions (kernels/softmax.cuh,
// kernels/gating.cuh; GCC/Clang vector extensions, taken for float rows of 16 or more) give what
// the scalar code gives, the one nvcc compiles: the same bits for exp, softmax, argmax and the
// finite check; the softmax backward within float rounding of a double reference. Rows of
// lengths around the 16-lane blocks, ties across lanes and in the tail, NaN / inf anywhere.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <moekd/kernels/gating.cuh>
#include <moekd/kernels/softmax.cuh>

using namespace moekd;

namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

/// The scalar softmax of one contiguous row, in the 16-lane order of kern::softmax_row_contig.
std::vector<float> softmax_lanes_reference(const std::vector<float>& x) {
    const int64_t n = static_cast<int64_t>(x.size());
    constexpr int W = 16;
    float mv[W];
    for (float& v : mv) v = -INFINITY;
    int64_t i = 0;
    for (; i + W <= n; i += W)
        for (int l = 0; l < W; ++l) mv[l] = x[i + l] > mv[l] ? x[i + l] : mv[l];
    float m = -INFINITY;
    for (float v : mv) m = v > m ? v : m;
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) m = 0.0f;
    std::vector<float> y(x.size());
    float sv[W] = {}, s = 0.0f;
    for (i = 0; i + W <= n; i += W)
        for (int l = 0; l < W; ++l) sv[l] += (y[i + l] = kern::exp_fast(x[i + l] - m));
    for (float v : sv) s += v;
    for (; i < n; ++i) s += (y[i] = kern::exp_fast(x[i] - m));
    const float inv = 1.0f / s;
    for (float& v : y) v *= inv;
    return y;
}

const std::vector<int64_t> kLengths{1, 2, 8, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100, 257};

}  // namespace

#if defined(MOEKD_HOST_SIMD)
TEST_CASE("simd exp_fast gives exp_fast's bits lane by lane", "[simd]") {
    std::vector<float> in{0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 88.7228f, 88.8f, -87.3365f, -87.4f, 1e-40f, -1e-40f,
                          1e30f, -1e30f, INFINITY, -INFINITY, NAN};
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> wide(-100.0f, 100.0f), narrow(-1.0f, 1.0f);
    for (int i = 0; i < 200000; ++i) in.push_back(i % 2 ? wide(rng) : narrow(rng));
    while (in.size() % kern::simd::kLanes) in.push_back(0.25f);
    int64_t differ = 0;
    for (size_t i = 0; i < in.size(); i += kern::simd::kLanes) {
        const kern::simd::f32x16 v = kern::simd::exp_fast(kern::simd::load(in.data() + i));
        for (int l = 0; l < kern::simd::kLanes; ++l) differ += same_bits(v[l], kern::exp_fast(in[i + l])) ? 0 : 1;
    }
    CHECK(differ == 0);
}
#endif

TEST_CASE("float softmax rows give the scalar lanes' bits (finite, -inf, NaN, all -inf)", "[simd][softmax]") {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.0f, 4.0f);
    for (int64_t n : kLengths)
        for (int variant = 0; variant < 5; ++variant) {
            std::vector<float> x(n);
            for (float& v : x) v = variant == 1 ? 300.0f * nd(rng) : nd(rng);
            if (variant == 2) x[rng() % n] = -INFINITY;
            if (variant == 3) x[rng() % n] = NAN;
            if (variant == 4) std::fill(x.begin(), x.end(), -INFINITY);
            std::vector<float> y(n);
            kern::softmax_row(x.data(), y.data(), n);
            const std::vector<float> ref = softmax_lanes_reference(x);
            int64_t differ = 0;
            for (int64_t i = 0; i < n; ++i) differ += same_bits(y[i], ref[i]) ? 0 : 1;
            INFO("n = " << n << ", variant " << variant);
            CHECK(differ == 0);
            if (variant == 3 || variant == 4) CHECK(std::isnan(y[0]));  // NaN spreads; all -inf is NaN (torch)
        }
}

TEST_CASE("float argmax / top-1 picks the first largest, ties across lanes and in the tail, NaN", "[simd][moe]") {
    std::mt19937 rng(13);
    std::uniform_int_distribution<int> small(0, 5);  // few distinct values: many ties
    for (int64_t n : kLengths)
        for (int rep = 0; rep < 200; ++rep) {
            std::vector<float> x(n);
            for (float& v : x) v = rep % 2 ? static_cast<float>(small(rng)) : std::ldexp(float(rng() % 1000), -10);
            if (rep % 7 == 0) x[n - 1] = 1e9f;                     // the max in the tail
            if (rep % 11 == 0 && n > 20) x[3] = x[19] = 2e9f;     // the same lane in two blocks
            if (rep % 13 == 0) x[rng() % n] = NAN;                 // a NaN never wins (x[0]: never beaten)
            if (rep % 17 == 0) x[0] = NAN;
            int64_t want = 0;
            for (int64_t i = 1; i < n; ++i)
                if (x[i] > x[want]) want = i;
            int64_t got = -1;
            kern::topk_row(x.data(), n, 1, &got);
            INFO("n = " << n << ", rep " << rep);
            REQUIRE(kern::argmax_row(x.data(), n) == want);
            REQUIRE(got == want);
            // the double path (scalar everywhere) agrees
            std::vector<double> xd(x.begin(), x.end());
            REQUIRE(kern::argmax_row(xd.data(), n) == want);
        }
}

TEST_CASE("float row_all_finite finds NaN, inf and -inf at every position", "[simd][moe]") {
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int64_t n : kLengths) {
        std::vector<float> x(n, 1.5f);
        x[0] = std::numeric_limits<float>::max();  // finite extremes stay finite
        if (n > 1) x[1] = -std::numeric_limits<float>::max();
        REQUIRE(kern::row_all_finite(x.data(), n));
        for (int64_t i = 0; i < n; ++i)
            for (float b : bad) {
                const float keep = x[i];
                x[i] = b;
                INFO("n = " << n << ", position " << i << ", value " << b);
                REQUIRE_FALSE(kern::row_all_finite(x.data(), n));
                x[i] = keep;
            }
    }
}

TEST_CASE("float softmax backward rows match a double reference", "[simd][softmax]") {
    std::mt19937 rng(17);
    std::normal_distribution<float> nd;
    for (int64_t n : kLengths) {
        std::vector<float> x(n), g(n), y(n), gx(n);
        for (int64_t i = 0; i < n; ++i) x[i] = nd(rng), g[i] = nd(rng);
        kern::softmax_row(x.data(), y.data(), n);
        kern::softmax_backward_row(y.data(), g.data(), gx.data(), n);
        double dot = 0;
        for (int64_t i = 0; i < n; ++i) dot += double(g[i]) * double(y[i]);
        for (int64_t i = 0; i < n; ++i) {
            INFO("n = " << n << ", element " << i);
            REQUIRE(gx[i] == Approx(double(y[i]) * (double(g[i]) - dot)).margin(1e-6));
        }
    }
}
