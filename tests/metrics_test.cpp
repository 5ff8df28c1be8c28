// metrics_test.cpp — GLUE metrics (metrics.hpp) on cases worked out by hand; the comparison
// with scikit-learn / SciPy on random predictions is tests/metrics_parity.
#include <catch2/catch.hpp>

#include <cmath>

#include <moekd/metrics.hpp>

using namespace moekd;
using Catch::Matchers::Contains;
using VI = std::vector<int64_t>;

TEST_CASE("metrics: accuracy and binary F1") {
    CHECK(metrics::accuracy({1, 0, 1, 1}, {1, 1, 1, 0}) == 0.5);
    CHECK(metrics::accuracy({2, 2}, {2, 2}) == 1.0);
    // tp = 1, fp = 1, fn = 1: 2 / (2 + 1 + 1)
    CHECK(metrics::f1_binary({1, 1, 0, 0}, {1, 0, 1, 0}) == 0.5);
    // tp = 2, fp = 0, fn = 1: precision 1, recall 2/3 -> 0.8
    CHECK(metrics::f1_binary({1, 1, 0, 0}, {1, 1, 1, 0}) == Approx(0.8).epsilon(1e-15));
    // positive class 0 instead of 1: tp = 1, fp = 1, fn = 0 -> 2/3
    CHECK(metrics::f1_binary({1, 0, 0, 1}, {1, 0, 1, 1}, 0) == Approx(2.0 / 3).epsilon(1e-15));
    // no positive predicted nor gold: sklearn's zero_division = 0
    CHECK(metrics::f1_binary({0, 0, 0}, {0, 0, 0}) == 0.0);
    CHECK(metrics::f1_binary({0, 0, 0}, {1, 0, 0}) == 0.0);
}

TEST_CASE("metrics: Matthews correlation, binary and multiclass") {
    // tp 1, tn 2, fp 1, fn 0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    CHECK(metrics::matthews_corrcoef({0, 1, 1, 0}, {0, 1, 0, 0}) == Approx(2 / std::sqrt(12.0)).epsilon(1e-14));
    CHECK(metrics::matthews_corrcoef({0, 1, 1, 0}, {0, 1, 1, 0}) == Approx(1.0));
    CHECK(metrics::matthews_corrcoef({1, 0, 0, 1}, {0, 1, 1, 0}) == Approx(-1.0));
    // constant prediction (or constant gold): undefined, 0 as sklearn
    CHECK(metrics::matthews_corrcoef({1, 1, 1, 1}, {0, 1, 1, 0}) == 0.0);
    CHECK(metrics::matthews_corrcoef({0, 1, 1, 0}, {1, 1, 1, 1}) == 0.0);
    // 3 classes: c = 3, s = 6, t = (2,2,2), p = (3,1,2): (18 - 12) / sqrt((36 - 14)(36 - 12))
    CHECK(metrics::matthews_corrcoef({0, 2, 1, 0, 0, 2}, {0, 1, 2, 0, 1, 2}) ==
          Approx(6 / std::sqrt(22.0 * 24.0)).epsilon(1e-14));
    // class ids need not be 0..K-1
    CHECK(metrics::matthews_corrcoef({7, 9, 9, 7}, {7, 9, 7, 7}) == Approx(2 / std::sqrt(12.0)).epsilon(1e-14));
}

TEST_CASE("metrics: Pearson, Spearman with average ranks for ties") {
    CHECK(metrics::pearson({1, 2, 3}, {2, 4, 6}) == Approx(1.0));
    CHECK(metrics::pearson({1, 2, 3}, {3, 2, 1}) == Approx(-1.0));
    // x dev (-1,0,1), y dev (-1,2,-1)/..: y = (1, 4, 1) -> sxy = 0
    CHECK(metrics::pearson({1, 2, 3}, {1, 4, 1}) == Approx(0.0).margin(1e-15));
    CHECK(std::isnan(metrics::pearson({2, 2, 2}, {1, 2, 3})));  // constant input: NaN as SciPy
    CHECK(std::isnan(metrics::spearman({1, 2, 3}, {5, 5, 5})));
    CHECK(metrics::average_ranks({10, 20, 10, 30}) == std::vector<double>{1.5, 3, 1.5, 4});
    CHECK(metrics::average_ranks({3, 3, 3}) == std::vector<double>{2, 2, 2});
    // ranks x (1, 2.5, 2.5, 4), y (1, 3, 2, 4): sxy = 4.5, sxx = 4.5, syy = 5
    CHECK(metrics::spearman({1, 2, 2, 3}, {1, 3, 2, 4}) == Approx(4.5 / std::sqrt(22.5)).epsilon(1e-14));
    // monotone but not linear: Spearman 1, Pearson below 1
    CHECK(metrics::spearman({1, 2, 3, 4}, {1, 8, 27, 64}) == Approx(1.0));
    CHECK(metrics::pearson({1, 2, 3, 4}, {1, 8, 27, 64}) < 0.99);
}

TEST_CASE("metrics: glue_metrics picks each task's metrics, bad input is an error") {
    auto cola = metrics::glue_metrics(data::glue_task_info("CoLA"), VI{0, 1, 1, 0}, VI{0, 1, 0, 0});
    REQUIRE(cola.size() == 1);
    CHECK(cola.at("mcc") == Approx(2 / std::sqrt(12.0)));
    auto mrpc = metrics::glue_metrics(data::glue_task_info("MRPC"), VI{1, 1, 0, 0}, VI{1, 0, 1, 0});
    CHECK(mrpc.at("f1") == 0.5);
    CHECK(mrpc.at("acc") == 0.5);
    CHECK(metrics::glue_score(mrpc) == 0.5);
    auto sts = metrics::glue_metrics(data::glue_task_info("STS-B"), std::vector<double>{1, 2, 3, 4},
                                     std::vector<double>{1, 8, 27, 64});
    CHECK(sts.at("spearman") == Approx(1.0));
    CHECK(metrics::glue_score(sts) == Approx((sts.at("pearson") + 1.0) / 2));
    CHECK(metrics::glue_metrics(data::glue_task_info("MNLI"), VI{0, 1, 2}, VI{0, 1, 1}).at("acc") == Approx(2.0 / 3));

    CHECK_THROWS_WITH(metrics::accuracy({1, 0}, {1}), Contains("accuracy: 2 predictions but 1 gold labels"));
    CHECK_THROWS_WITH(metrics::matthews_corrcoef({}, {}), Contains("no examples"));
    CHECK_THROWS_WITH(metrics::pearson({1.0}, {2.0}), Contains("at least 2 points"));
    CHECK_THROWS_WITH(
        metrics::glue_metrics(data::glue_task_info("STS-B"), std::vector<int64_t>{1}, std::vector<int64_t>{1}),
        Contains("regression task"));
    CHECK_THROWS_WITH(
        metrics::glue_metrics(data::glue_task_info("SST-2"), std::vector<double>{1, 2}, std::vector<double>{1, 2}),
        Contains("classification task"));
}
