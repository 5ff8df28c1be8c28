// metrics.hpp — the GLUE evaluation metrics, computed as scikit-learn and SciPy compute them.
//
// For reporting fine-tuning on GLUE-style tasks with each task's own
// metric (CoLA: Matthews correlation; SST-2, MNLI, ...: accuracy; MRPC, QQP: F1 and accuracy;
// STS-B: Pearson and Spearman). The formulas follow sklearn.metrics (accuracy_score, f1_score
// with zero_division=0, matthews_corrcoef's multiclass form, 0 when undefined) and scipy.stats
// (pearsonr; spearmanr with average ranks for ties; NaN when an input is constant), so the
// numbers can be compared with published ones; tests/metrics_parity checks them against both.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "data/glue.hpp"

namespace moekd::metrics {

namespace detail {
template <class A, class B>
void check_pair(const char* what, const std::vector<A>& p, const std::vector<B>& g) {
    MOEKD_CHECK(p.size() == g.size(), what, ": ", p.size(), " predictions but ", g.size(), " gold labels");
    MOEKD_CHECK(!p.empty(), what, ": no examples");
}
}  // namespace detail

/// Fraction of positions where pred == gold (sklearn accuracy_score).
inline double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
    detail::check_pair("accuracy", pred, gold);
    size_t ok = 0;
    for (size_t i = 0; i < pred.size(); ++i) ok += pred[i] == gold[i];
    return static_cast<double>(ok) / static_cast<double>(pred.size());
}

/// F1 of class `positive` against the rest (sklearn f1_score(average="binary", pos_label,
/// zero_division=0)): 2 TP / (2 TP + FP + FN), 0 when there is no positive at all.
inline double f1_binary(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold, int64_t positive = 1) {
    detail::check_pair("f1_binary", pred, gold);
    double tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < pred.size(); ++i) {
        const bool p = pred[i] == positive, g = gold[i] == positive;
        tp += p && g;
        fp += p && !g;
        fn += !p && g;
    }
    const double den = 2 * tp + fp + fn;
    return den == 0 ? 0.0 : 2 * tp / den;
}

/// Matthews correlation coefficient, multiclass (Gorodkin's R_K, as sklearn): with the confusion
/// matrix C, t_k = true counts, p_k = predicted counts, c = trace, s = n:
/// (c s - sum t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)); 0 when the denominator is 0.
inline double matthews_corrcoef(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
    detail::check_pair("matthews_corrcoef", pred, gold);
    std::map<int64_t, double> t, p;
    double c = 0;
    for (size_t i = 0; i < pred.size(); ++i) {
        t[gold[i]] += 1;
        p[pred[i]] += 1;
        c += pred[i] == gold[i];
    }
    const double s = static_cast<double>(pred.size());
    double tp = 0, pp = 0, tt = 0;
    for (const auto& [k, v] : t) {
        tt += v * v;
        auto it = p.find(k);
        if (it != p.end()) tp += v * it->second;
    }
    for (const auto& [k, v] : p) pp += v * v;
    const double cov_ytyp = c * s - tp, cov_ypyp = s * s - pp, cov_ytyt = s * s - tt;
    if (cov_ypyp * cov_ytyt == 0) return 0.0;
    return cov_ytyp / std::sqrt(cov_ytyt * cov_ypyp);
}

/// Pearson's r (scipy.stats.pearsonr's statistic); NaN if either input is constant, like SciPy.
inline double pearson(const std::vector<double>& x, const std::vector<double>& y) {
    detail::check_pair("pearson", x, y);
    MOEKD_CHECK(x.size() >= 2, "pearson: needs at least 2 points, got ", x.size());
    // Two-pass in long double with a corrected mean: exact-looking results even for data with a
    // large offset and a small spread (1e8 + 1e-3 u), where naive sums lose half the digits.
    using LD = long double;
    auto mean = [](const std::vector<double>& v) {
        LD m = 0, c = 0;
        for (double a : v) m += a;
        m /= static_cast<LD>(v.size());
        for (double a : v) c += a - m;
        return m + c / static_cast<LD>(v.size());
    };
    const LD mx = mean(x), my = mean(y);
    LD sxx = 0, syy = 0, sxy = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const LD a = x[i] - mx, b = y[i] - my;
        sxx += a * a;
        syy += b * b;
        sxy += a * b;
    }
    const bool const_x = std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; });
    const bool const_y = std::all_of(y.begin(), y.end(), [&](double v) { return v == y[0]; });
    if (const_x || const_y || sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
    const double r = static_cast<double>(sxy / (std::sqrt(sxx) * std::sqrt(syy)));
    return std::clamp(r, -1.0, 1.0);
}

/// Ranks 1..n with ties given their average rank (scipy.stats.rankdata(method="average")).
inline std::vector<double> average_ranks(const std::vector<double>& v) {
    std::vector<size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), size_t{0});
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size();) {
        size_t j = i;
        while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
        const double avg = 0.5 * static_cast<double>(i + j) + 1.0;
        for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
        i = j + 1;
    }
    return r;
}

/// Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr); NaN if constant.
inline double spearman(const std::vector<double>& x, const std::vector<double>& y) {
    detail::check_pair("spearman", x, y);
    MOEKD_CHECK(x.size() >= 2, "spearman: needs at least 2 points, got ", x.size());
    return pearson(average_ranks(x), average_ranks(y));
}

/// A classification task's metrics by name ("acc", "f1", "mcc"), as listed in info.metrics.
/// f1 is of class 1 (the positive class of MRPC, QQP, WNGLOSS).
inline std::map<std::string, double> glue_metrics(const data::GlueTaskInfo& info, const std::vector<int64_t>& pred,
                                                  const std::vector<int64_t>& gold) {
    MOEKD_CHECK(!info.regression, "glue_metrics: ", info.name, " is a regression task; pass scores (double)");
    std::map<std::string, double> m;
    for (const auto& name : info.metrics) {
        if (name == "acc")
            m[name] = accuracy(pred, gold);
        else if (name == "f1")
            m[name] = f1_binary(pred, gold, 1);
        else if (name == "mcc")
            m[name] = matthews_corrcoef(pred, gold);
        else
            throw Error(msg("glue_metrics: metric '", name, "' of ", info.name, " needs scores, not classes"));
    }
    return m;
}

/// A regression task's metrics ("pearson", "spearman") on predicted and gold scores.
inline std::map<std::string, double> glue_metrics(const data::GlueTaskInfo& info, const std::vector<double>& pred,
                                                  const std::vector<double>& gold) {
    MOEKD_CHECK(info.regression, "glue_metrics: ", info.name, " is a classification task; pass class indices");
    std::map<std::string, double> m;
    for (const auto& name : info.metrics) {
        if (name == "pearson")
            m[name] = pearson(pred, gold);
        else if (name == "spearman")
            m[name] = spearman(pred, gold);
        else
            throw Error(msg("glue_metrics: unknown regression metric '", name, "' of ", info.name));
    }
    return m;
}

/// The task's single score as GLUE's leaderboard reports it: the mean of its metrics
/// (MRPC/QQP: (F1 + acc) / 2, STS-B: (Pearson + Spearman) / 2, others: the one metric).
inline double glue_score(const std::map<std::string, double>& m) {
    MOEKD_CHECK(!m.empty(), "glue_score: no metrics");
    double s = 0;
    for (const auto& [k, v] : m) s += v;
    return s / static_cast<double>(m.size());
}

}  // namespace moekd::metrics
