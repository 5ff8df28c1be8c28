// op_registry.hpp — every differentiable op, described as data: input shapes, how inputs are
// drawn, the function under test, and the finite-difference epsilon and tolerances.
// tests/gradcheck_test.cpp runs each case through moekd::testing::gradcheck in double.
//
// Add an op's cases in the file of its family (tests/op_cases_<family>.cpp), like this:
//
//   static RegisterOps reg({
//       // name "<op>/<what it covers>"; the part before '/' must match the op's name
//       {"add/broadcast_row", {{4, 3}, {3}}, [](const In& x) { return add(x[0], x[1]); }},
//       // inputs kept positive for log, and a looser tolerance:
//       {"log/basic", {{5}}, [](const In& x) { return log(x[0]); }, Init::Positive, 1e-6, 1e-5},
//   });
//
// tests/gradcheck_test.cpp also checks that every op named in kRequiredOps has a case.
#pragma once

#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/testing/gradcheck.hpp>

namespace moekd::test {

using In = std::vector<Tensor<double>>;

enum class Init {
    Normal,        // standard normal
    Positive,      // uniform in [0.5, 2) (log, sqrt, rsqrt, pow, division)
    AwayFromZero,  // |x| in [0.2, 2) with random sign (abs, relu: keep off the kink)
    Distinct,      // a shuffled ladder of well-separated values (max, min: no near ties)
};

struct OpCase {
    std::string name;
    std::vector<Shape> shapes;
    std::function<Tensor<double>(const In&)> fn;
    Init init = Init::Normal;
    double atol = 1e-6;
    double rtol = 1e-5;
    double eps = 1e-6;
};

/// The inputs of a case: shape s drawn as `init` says (the same draws for every backend).
inline Tensor<double> make_input(const Shape& s, Init init, Generator& gen) {
    Tensor<double> x = Tensor<double>::empty(s);
    double* p = x.data();
    const int64_t n = x.numel();
    switch (init) {
        case Init::Normal:
            for (int64_t i = 0; i < n; ++i) p[i] = gen.normal();
            break;
        case Init::Positive:
            for (int64_t i = 0; i < n; ++i) p[i] = 0.5 + 1.5 * gen.uniform();
            break;
        case Init::AwayFromZero:
            for (int64_t i = 0; i < n; ++i) p[i] = (0.2 + 1.8 * gen.uniform()) * (gen.uniform() < 0.5 ? -1 : 1);
            break;
        case Init::Distinct: {
            std::vector<int64_t> perm(n);
            std::iota(perm.begin(), perm.end(), 0);
            for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[gen.randint(0, i + 1)]);
            for (int64_t i = 0; i < n; ++i) p[i] = 0.1 * static_cast<double>(perm[i]) - 0.05 * n;
            break;
        }
    }
    return x;
}

/// An index or mask tensor for a case, on the device of the case's input `like` (the backend-ops
/// test runs every case on device tensors, so the cases' own integer operands must follow them).
inline Tensor<int64_t> idx_on(const Tensor<double>& like, std::vector<int64_t> v, Shape s = {}) {
    return Tensor<int64_t>::from_vector(std::move(v), std::move(s)).to(like.device());
}
inline Tensor<uint8_t> mask_on(const Tensor<double>& like, std::vector<uint8_t> v, Shape s = {}) {
    return Tensor<uint8_t>::from_vector(std::move(v), std::move(s)).to(like.device());
}

inline std::vector<OpCase>& op_registry() {
    static std::vector<OpCase> cases;
    return cases;
}

struct RegisterOps {
    explicit RegisterOps(std::vector<OpCase> cases) {
        for (auto& c : cases) op_registry().push_back(std::move(c));
    }
};

}  // namespace moekd::test
