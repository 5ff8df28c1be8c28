// gradcheck.hpp — compares autograd gradients with central finite differences, in double.
//
// For f(inputs) -> y, gradcheck projects y on fixed random weights w (L = sum(y * w), so every
// output element matters), runs backward once, then for each input element j evaluates
// (L(x + eps e_j) - L(x - eps e_j)) / (2 eps) and checks |analytic - numeric| <= atol + rtol |numeric|.
// Used by the op registry (tests/op_cases_*.cpp) and by module and loss tests.
#pragma once

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "../tensor.hpp"

namespace moekd::testing {

struct GradcheckOptions {
    double eps = 1e-6;
    double atol = 1e-6;
    double rtol = 1e-5;
    uint64_t seed = 1234;  // for the projection weights
};

struct GradcheckResult {
    bool ok = true;
    double max_abs_err = 0;
    std::string report;  // the first mismatches, with input index, element and both values
};

using DFn = std::function<Tensor<double>(const std::vector<Tensor<double>>&)>;

inline GradcheckResult gradcheck(const DFn& f, std::vector<Tensor<double>> inputs, const GradcheckOptions& opt = {}) {
    GradcheckResult res;
    for (auto& x : inputs) {
        x.zero_grad();
        if (!x.requires_grad()) x.requires_grad_();
    }
    Tensor<double> y = f(inputs);
    Generator gen(opt.seed);
    const Tensor<double> w = Tensor<double>::randn(y.shape(), gen);
    auto project = [&](const Tensor<double>& out) {
        std::vector<double> a = out.to_vector(), b = w.to_vector();
        double s = 0;
        for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
        return s;
    };
    sum(y * w).backward();

    std::ostringstream rep;
    int shown = 0;
    NoGrad ng;
    for (size_t k = 0; k < inputs.size(); ++k) {
        Tensor<double>& x = inputs[k];
        const Tensor<double> g = x.grad();
        const std::vector<double> analytic = g.defined() ? g.to_vector() : std::vector<double>(x.numel(), 0.0);
        // visit each element through x's own strides (inputs may be non-contiguous views)
        std::vector<int64_t> offs;
        detail::strided_loop<1>(x.shape(), {&x.strides()}, {x.offset()}, [&](auto o) { offs.push_back(o[0]); });
        double* base = x.impl()->storage->data();
        for (size_t j = 0; j < offs.size(); ++j) {
            const double orig = base[offs[j]];
            base[offs[j]] = orig + opt.eps;
            const double lp = project(f(inputs));
            base[offs[j]] = orig - opt.eps;
            const double lm = project(f(inputs));
            base[offs[j]] = orig;
            const double numeric = (lp - lm) / (2 * opt.eps);
            const double err = std::abs(analytic[j] - numeric);
            res.max_abs_err = std::max(res.max_abs_err, err);
            if (!(err <= opt.atol + opt.rtol * std::abs(numeric))) {
                res.ok = false;
                if (shown++ < 5)
                    rep << "input " << k << " " << x.shape() << " element " << j << ": analytic " << analytic[j]
                        << " numeric " << numeric << "\n";
            }
        }
    }
    res.report = rep.str();
    return res;
}

}  // namespace moekd::testing
