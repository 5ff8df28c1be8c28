// mlm_test.cpp — BERT masked-LM corruption (data/mlm.hpp): the 15% / 80-10-10 distribution
// checked statistically (tolerances of 5 binomial standard deviations), specials never chosen,
// labels, fresh masks per call, and bad configurations.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include <moekd/data/mlm.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Matchers::Contains;

namespace {
constexpr int64_t PAD = 0, CLS = 1, SEP = 2, MASK = 3, V = 1000;

data::MlmConfig config() {
    data::MlmConfig c;
    c.mask_id = MASK;
    c.vocab_size = V;
    c.special_ids = {PAD, CLS, SEP};
    return c;
}

// (B, T) rows: [CLS] random words [SEP] then padding of a row-dependent length.
Tensor<int64_t> batch(int64_t B, int64_t T, Generator& g) {
    auto t = Tensor<int64_t>::randint(4, V, {B, T}, g);
    auto* p = t.data();
    for (int64_t b = 0; b < B; ++b) {
        const int64_t len = T - (b % 7);
        p[b * T] = CLS;
        p[b * T + len - 1] = SEP;
        for (int64_t k = len; k < T; ++k) p[b * T + k] = PAD;
    }
    return t;
}

// |observed - n p| within 5 standard deviations of Binomial(n, p).
void check_binomial(double observed, double n, double p, const char* what) {
    const double sd = std::sqrt(n * p * (1 - p));
    INFO(what << ": observed " << observed << ", expected " << n * p << " +- " << 5 * sd);
    CHECK(std::abs(observed - n * p) <= 5 * sd);
}
}  // namespace

TEST_CASE("mask_tokens: 15% chosen, 80/10/10 split, specials never chosen, labels right") {
    Generator g(42);
    const int64_t B = 256, T = 128;  // ~32k non-special tokens: 5 sd of "chosen" is ~2% of it
    auto ids = batch(B, T, g);
    const auto cfg = config();
    auto out = data::mask_tokens(ids, cfg, g);
    REQUIRE(out.input_ids.shape() == ids.shape());
    REQUIRE(out.labels.shape() == ids.shape());
    const auto in = ids.to_vector(), x = out.input_ids.to_vector(), y = out.labels.to_vector();
    int64_t normal = 0, chosen = 0, masked = 0, randomised = 0, kept = 0;
    std::set<int64_t> random_ids;
    for (size_t i = 0; i < in.size(); ++i) {
        const bool special = in[i] == PAD || in[i] == CLS || in[i] == SEP;
        if (special) {  // never chosen, never changed
            CHECK(y[i] == cfg.ignore_index);
            CHECK(x[i] == in[i]);
            continue;
        }
        ++normal;
        if (y[i] == cfg.ignore_index) {
            CHECK(x[i] == in[i]);  // not chosen: unchanged
            continue;
        }
        ++chosen;
        CHECK(y[i] == in[i]);  // label: the original token
        if (x[i] == MASK)
            ++masked;
        else if (x[i] != in[i]) {
            ++randomised;
            random_ids.insert(x[i]);
            CHECK(x[i] > MASK);  // a random replacement is never a special id or [MASK]
            CHECK(x[i] < V);
        } else
            ++kept;
    }
    CHECK(out.num_chosen == chosen);
    check_binomial(static_cast<double>(chosen), static_cast<double>(normal), 0.15, "chosen");
    // A random draw equals the original with probability 1/(V-4): counted as kept.
    const double p_other = 0.1 * (1.0 - 1.0 / (V - 4));
    check_binomial(static_cast<double>(masked), static_cast<double>(chosen), 0.8, "masked");
    check_binomial(static_cast<double>(randomised), static_cast<double>(chosen), p_other, "random");
    check_binomial(static_cast<double>(kept), static_cast<double>(chosen), 1.0 - 0.8 - p_other, "kept");
    CHECK(random_ids.size() > 100);  // spread over the vocabulary, not one id
}

TEST_CASE("mask_tokens: a second call draws a different mask, same seed reproduces") {
    Generator g(7);
    auto ids = batch(8, 64, g);
    Generator g1(123);
    auto a = data::mask_tokens(ids, config(), g1);
    auto b = data::mask_tokens(ids, config(), g1);
    CHECK(a.labels.to_vector() != b.labels.to_vector());
    Generator g2(123);
    auto c = data::mask_tokens(ids, config(), g2);
    CHECK(a.labels.to_vector() == c.labels.to_vector());
    CHECK(a.input_ids.to_vector() == c.input_ids.to_vector());
    Generator g3(7);
    CHECK(ids.to_vector() == batch(8, 64, g3).to_vector());  // the input is not changed
}

TEST_CASE("mask_tokens: other probabilities and min_per_row") {
    Generator g(3);
    auto ids = batch(32, 64, g);
    auto cfg = config();
    cfg.mask_prob = 0.5;
    cfg.replace_mask = 1.0;
    cfg.replace_random = 0.0;
    auto out = data::mask_tokens(ids, cfg, g);
    const auto in = ids.to_vector(), x = out.input_ids.to_vector(), y = out.labels.to_vector();
    int64_t normal = 0, chosen = 0;
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] <= SEP) continue;
        ++normal;
        if (y[i] != cfg.ignore_index) {
            ++chosen;
            CHECK(x[i] == MASK);  // replace_mask = 1: always [MASK]
        }
    }
    check_binomial(static_cast<double>(chosen), static_cast<double>(normal), 0.5, "chosen at 0.5");

    cfg = config();
    cfg.mask_prob = 0.0;
    cfg.min_per_row = 2;
    out = data::mask_tokens(ids, cfg, g);
    const auto y2 = out.labels.to_vector();
    for (int64_t b = 0; b < 32; ++b) {
        int64_t n = 0;
        for (int64_t t = 0; t < 64; ++t) n += y2[static_cast<size_t>(b * 64 + t)] != cfg.ignore_index;
        CHECK(n == 2);
    }
    // a row of specials only gets no label even with min_per_row
    auto specials = Tensor<int64_t>::from_vector({CLS, SEP, PAD, PAD}, {1, 4});
    CHECK(data::mask_tokens(specials, cfg, g).num_chosen == 0);
}

TEST_CASE("mask_tokens: random replacements are uniform over the non-special ids") {
    // V = 20, 4 specials incl. [MASK]: 16 ids a random draw may give, each with p = 1/16.
    data::MlmConfig c;
    c.mask_id = MASK;
    c.vocab_size = 20;
    c.special_ids = {PAD, CLS, SEP};
    c.mask_prob = 1.0;
    c.replace_mask = 0.0;
    c.replace_random = 1.0;
    Generator g(11);
    auto ids = Tensor<int64_t>::full({160, 100}, 7);
    const auto x = data::mask_tokens(ids, c, g).input_ids.to_vector();
    std::vector<double> count(20);
    for (int64_t v : x) count[static_cast<size_t>(v)] += 1;
    for (int64_t v = 0; v <= MASK; ++v) CHECK(count[static_cast<size_t>(v)] == 0);
    for (int64_t v = MASK + 1; v < 20; ++v) check_binomial(count[static_cast<size_t>(v)], 16000, 1.0 / 16, "id count");
}

TEST_CASE("mask_tokens: bad configuration and ids are clear errors") {
    Generator g(1);
    auto ids = batch(2, 8, g);
    auto cfg = config();
    cfg.mask_id = -1;
    CHECK_THROWS_WITH(data::mask_tokens(ids, cfg, g), Contains("mask_id") && Contains("unset"));
    cfg = config();
    cfg.vocab_size = -1;
    CHECK_THROWS_WITH(data::mask_tokens(ids, cfg, g), Contains("vocab_size is unset"));
    cfg = config();
    cfg.mask_prob = 1.5;
    CHECK_THROWS_WITH(data::mask_tokens(ids, cfg, g), Contains("mask_prob 1.5 not in [0, 1]"));
    cfg = config();
    cfg.replace_random = 0.3;
    CHECK_THROWS_WITH(data::mask_tokens(ids, cfg, g), Contains("replace_mask + replace_random"));
    cfg = config();
    cfg.special_ids.push_back(V + 5);
    CHECK_THROWS_WITH(data::mask_tokens(ids, cfg, g), Contains("special id 1005"));
    auto bad = Tensor<int64_t>::from_vector({CLS, 5, V + 1, SEP}, {1, 4});
    CHECK_THROWS_WITH(data::mask_tokens(bad, config(), g), Contains("id 1001 at row 0 position 2"));
}
