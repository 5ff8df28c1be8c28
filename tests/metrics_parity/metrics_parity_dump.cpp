// metrics_parity_dump.cpp — writes random predictions and moekd's metrics on them as JSON lines,
// for metrics_parity.py to recompute with scikit-learn / SciPy.
//
// One line per case: {"name", "kind": "class"|"reg", "pred", "gold", then moekd's values:
// class: "acc", "f1" (positive 1), "f1_0" (positive 0), "mcc"; reg: "pearson", "spearman"}.
// NaN is written as NaN (Python's json reads it). Usage: metrics_parity_dump OUT.jsonl
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <moekd/core/random.hpp>
#include <moekd/metrics.hpp>

using namespace moekd;

namespace {
std::string num(double v) {
    if (std::isnan(v)) return "NaN";
    char b[64];
    std::snprintf(b, sizeof b, "%.17g", v);
    return b;
}
template <class T>
std::string list(const std::vector<T>& v) {
    std::ostringstream s;
    s << "[";
    for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << num(static_cast<double>(v[i]));
    return s.str() + "]";
}

void class_case(std::ostream& o, const std::string& name, const std::vector<int64_t>& p,
                const std::vector<int64_t>& g) {
    o << "{\"name\":\"" << name << "\",\"kind\":\"class\",\"pred\":" << list(p) << ",\"gold\":" << list(g)
      << ",\"acc\":" << num(metrics::accuracy(p, g)) << ",\"f1\":" << num(metrics::f1_binary(p, g, 1))
      << ",\"f1_0\":" << num(metrics::f1_binary(p, g, 0)) << ",\"mcc\":" << num(metrics::matthews_corrcoef(p, g))
      << "}\n";
}
void reg_case(std::ostream& o, const std::string& name, const std::vector<double>& p, const std::vector<double>& g) {
    o << "{\"name\":\"" << name << "\",\"kind\":\"reg\",\"pred\":" << list(p) << ",\"gold\":" << list(g)
      << ",\"pearson\":" << num(metrics::pearson(p, g)) << ",\"spearman\":" << num(metrics::spearman(p, g)) << "}\n";
}

// gold uniform over k classes (or skewed: class 0 with probability skew); pred = gold with
// probability agree, else uniform.
void random_class(Generator& r, int64_t n, int64_t k, double agree, double skew, std::vector<int64_t>& p,
                  std::vector<int64_t>& g) {
    p.clear();
    g.clear();
    for (int64_t i = 0; i < n; ++i) {
        const int64_t y = skew > 0 && r.uniform() < skew ? 0 : r.randint(0, k);
        g.push_back(y);
        p.push_back(r.uniform() < agree ? y : r.randint(0, k));
    }
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: metrics_parity_dump OUT.jsonl\n";
        return 2;
    }
    std::ofstream o(argv[1]);
    if (!o) {
        std::cerr << "metrics_parity_dump: cannot write " << argv[1] << "\n";
        return 1;
    }
    Generator r(2024);
    std::vector<int64_t> p, g;
    int cases = 0;
    for (int64_t n : {5, 37, 200, 1000})
        for (int64_t k : {2, 3, 5})
            for (double agree : {0.0, 0.5, 0.9}) {
                random_class(r, n, k, agree, 0.0, p, g);
                class_case(o, "rand_n" + std::to_string(n) + "_k" + std::to_string(k) + "_a" + num(agree), p, g);
                random_class(r, n, k, agree, 0.8, p, g);
                class_case(o, "skew_n" + std::to_string(n) + "_k" + std::to_string(k) + "_a" + num(agree), p, g);
                cases += 2;
            }
    // degenerate classification cases
    random_class(r, 50, 2, 0.5, 0.0, p, g);
    class_case(o, "const_pred_0", std::vector<int64_t>(50, 0), g);
    class_case(o, "const_pred_1", std::vector<int64_t>(50, 1), g);
    class_case(o, "const_gold", p, std::vector<int64_t>(50, 1));
    class_case(o, "both_const_equal", std::vector<int64_t>(9, 0), std::vector<int64_t>(9, 0));
    class_case(o, "both_const_differ", std::vector<int64_t>(9, 0), std::vector<int64_t>(9, 1));
    class_case(o, "perfect", g, g);
    std::vector<int64_t> inv;
    for (auto y : g) inv.push_back(1 - y);
    class_case(o, "inverted", inv, g);
    class_case(o, "n1_right", {1}, {1});
    class_case(o, "n1_wrong", {0}, {1});
    class_case(o, "labels_7_9", {7, 9, 9, 7, 9}, {7, 9, 7, 7, 9});
    cases += 10;

    // regression: continuous, correlated, ties, integer scores, degenerate
    for (int64_t n : {2, 3, 10, 100, 1000}) {
        std::vector<double> x, y, xt, yt;
        for (int64_t i = 0; i < n; ++i) {
            const double a = 5 * r.uniform(), b = a + r.normal();
            x.push_back(a);
            y.push_back(b);
            xt.push_back(std::round(2 * a) / 2);  // ties: 0.5 steps
            yt.push_back(std::round(b));
        }
        reg_case(o, "reg_n" + std::to_string(n), x, y);
        reg_case(o, "reg_ties_n" + std::to_string(n), xt, yt);
        cases += 2;
        if (n >= 10) {
            std::vector<double> c(static_cast<size_t>(n), 2.5);
            reg_case(o, "reg_const_pred_n" + std::to_string(n), c, y);
            reg_case(o, "reg_const_gold_n" + std::to_string(n), x, c);
            std::vector<double> big;
            for (double v : x) big.push_back(1e8 + v * 1e-3);  // large offset, small spread
            reg_case(o, "reg_offset_n" + std::to_string(n), big, y);
            cases += 3;
        }
    }
    reg_case(o, "reg_perfect_monotone", {1, 2, 3, 4, 5}, {1, 4, 9, 16, 25});
    reg_case(o, "reg_all_tied_but_one", {1, 1, 1, 1, 2}, {3, 3, 3, 4, 3});
    cases += 2;
    std::cerr << "metrics_parity_dump: " << cases << " cases -> " << argv[1] << "\n";
    return o.good() ? 0 : 1;
}
