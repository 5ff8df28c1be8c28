// gradcheck_test.cpp — runs every registered op case (tests/op_cases_*.cpp) through gradcheck
// in double precision, and fails if an op the core promises has no case at all.
#include <algorithm>
#include <numeric>
#include <set>

#include <catch2/catch.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

namespace {

// Every op the issues list. A name here with no registered case fails the suite.
const char* const kRequiredOps[] = {
    "add", "sub", "mul", "div", "neg", "exp", "log", "pow", "sqrt", "rsqrt", "abs", "tanh", "sigmoid",
    "relu", "gelu", "silu", "sum", "mean", "max", "min", "var", "matmul", "bmm", "softmax", "log_softmax",
    "layer_norm", "embedding", "index_select", "gather", "scatter_add", "concat", "split", "chunk",
    "where", "masked_fill", "dropout", "cross_entropy", "view", "reshape", "transpose", "permute",
    "narrow", "expand", "squeeze", "unsqueeze", "contiguous",
    // knowledge-transfer losses (issue 4)
    "symmetric_kl", "soft_distill", "hard_distill", "relation_loss", "qk_relation_loss",
    // Mixture-of-Experts (issue 4)
    "router", "dispatch", "moe_layer", "balance",
};

}  // namespace

TEST_CASE("every registered op passes gradcheck in double", "[gradcheck]") {
    REQUIRE(!op_registry().empty());
    for (const OpCase& c : op_registry()) {
        DYNAMIC_SECTION(c.name) {
            Generator gen(std::hash<std::string>{}(c.name));
            In inputs;
            for (const Shape& s : c.shapes) inputs.push_back(make_input(s, c.init, gen));
            testing::GradcheckOptions opt;
            opt.eps = c.eps;
            opt.atol = c.atol;
            opt.rtol = c.rtol;
            auto r = testing::gradcheck(c.fn, inputs, opt);
            INFO(c.name << "\n" << r.report);
            CHECK(r.ok);
        }
    }
}

TEST_CASE("the registry covers every op of the core", "[gradcheck]") {
    std::set<std::string> have;
    for (const OpCase& c : op_registry()) have.insert(c.name.substr(0, c.name.find('/')));
    for (const char* op : kRequiredOps) {
        INFO("op without a gradcheck case: " << op);
        CHECK(have.count(op) == 1);
    }
}

TEST_CASE("gradcheck catches a wrong backward", "[gradcheck]") {
    // A deliberately wrong op (forward x^2, backward claims x): gradcheck must say no.
    auto wrong = [](const In& x) {
        Tensor<double> y = Tensor<double>::empty(x[0].shape());
        for (int64_t i = 0; i < y.numel(); ++i) y.data()[i] = x[0].data()[i] * x[0].data()[i];
        return record<double>(y, "wrong_square", {x[0]}, [](const Tensor<double>& g) {
            return std::vector<Tensor<double>>{g};
        });
    };
    Generator gen(3);
    auto r = testing::gradcheck(wrong, {Tensor<double>::randn({4}, gen)});
    CHECK_FALSE(r.ok);
    CHECK(!r.report.empty());
}
