// module_test.cpp — nn::Module: dotted names, state dicts (strict and not), freezing, hooks,
// shared parameters, train/eval.
#include <catch2/catch.hpp>

#include <moekd/nn/module.hpp>

using namespace moekd;
using Catch::Contains;

namespace {
struct Affine : nn::Module<double> {
    Tensor<double> weight, bias;
    explicit Affine(int64_t n) {
        weight = register_parameter("weight", Tensor<double>::ones({n, n}));
        bias = register_parameter("bias", Tensor<double>::zeros({n}));
        register_buffer("calls", Tensor<double>::zeros({1}));
    }
    Tensor<double> forward(const Tensor<double>& x) const {
        Tensor<double> y = sum(x.unsqueeze(-2) * weight, {-1}) + bias;  // x: (B, n) -> (B, n)
        emit("output", y);
        return y;
    }
};
struct Net : nn::Module<double> {
    std::shared_ptr<nn::ModuleList<Affine, double>> layers;
    Net() {
        layers = register_module("layers", std::make_shared<nn::ModuleList<Affine, double>>());
        for (int i = 0; i < 3; ++i) layers->push_back(std::make_shared<Affine>(2));
    }
};
}  // namespace

TEST_CASE("parameters get stable dotted names", "[nn][module]") {
    Net n;
    std::vector<std::string> names;
    for (auto& [k, v] : n.named_parameters()) names.push_back(k);
    CHECK(names == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                                            "layers.2.weight", "layers.2.bias"});
    CHECK(n.state_dict().count("layers.1.calls") == 1);  // buffers are saved too
    CHECK(n.parameters().size() == 6);
    CHECK(n.num_parameters() == 18);
    CHECK(n.submodule("layers.2").get() == n.layers->ptr(2).get());
    CHECK_THROWS_WITH(n.submodule("layers.7"), Contains("no module named 'layers.7'"));
}

TEST_CASE("load_state_dict strict lists every offender, non-strict reports", "[nn][module]") {
    Net a, b;
    auto sd = a.state_dict();
    sd["layers.0.weight"] = Tensor<double>::full({2, 2}, 7.0);
    b.load_state_dict(sd);
    CHECK(b.layers->operator[](0).weight.at({1, 1}) == 7.0);  // copied into b's own tensor
    CHECK(!b.layers->operator[](0).weight.shares_storage(sd["layers.0.weight"]));

    auto bad = a.state_dict();
    bad.erase("layers.1.bias");
    bad["layers.2.weight"] = Tensor<double>::zeros({3, 2});
    bad["extra.thing"] = Tensor<double>::zeros({1});
    const double before = b.layers->operator[](0).weight.at({0, 0});
    try {
        b.load_state_dict(bad);
        FAIL("strict load accepted a bad dict");
    } catch (const Error& e) {
        const std::string w = e.what();
        CHECK_THAT(w, Contains("layers.1.bias"));
        CHECK_THAT(w, Contains("layers.2.weight: module (2, 2) vs dict (3, 2)"));
        CHECK_THAT(w, Contains("extra.thing (1,)"));
    }
    CHECK(b.layers->operator[](0).weight.at({0, 0}) == before);  // nothing changed
    auto rep = b.load_state_dict(bad, false);
    CHECK(rep.missing == std::vector<std::string>{"layers.1.bias"});
    CHECK(rep.mismatched.size() == 1);
    CHECK(rep.unexpected.size() == 1);
}

TEST_CASE("hooks read intermediates that can carry a loss", "[nn][module]") {
    Net n;
    std::vector<Tensor<double>> seen;
    auto& mid = n.layers->operator[](1);
    const int id = mid.add_forward_hook([&](const std::string& tag, const Tensor<double>& y) {
        CHECK(tag == "output");
        seen.push_back(y);
    });
    auto x = Tensor<double>::from_vector({1, 2}, {1, 2});
    auto h = x;
    for (auto& l : *n.layers) h = l->forward(h);
    REQUIRE(seen.size() == 1);
    sum(seen[0] * seen[0]).backward();  // a loss on layer 1's output reaches layer 0 and 1 only
    CHECK(n.layers->operator[](0).weight.grad().defined());
    CHECK(!n.layers->operator[](2).weight.grad().defined());
    mid.remove_forward_hook(id);
    CHECK(!mid.has_hooks());
}

TEST_CASE("freeze, train/eval and shared parameters", "[nn][module]") {
    Net n;
    n.layers->operator[](0).freeze();
    CHECK(!n.layers->operator[](0).weight.requires_grad());
    CHECK(n.layers->operator[](1).weight.requires_grad());
    n.eval();
    CHECK(!n.layers->operator[](2).is_training());
    n.train();
    CHECK(n.layers->operator[](2).is_training());

    struct Tied : nn::Module<double> {
        Tensor<double> emb;
        Tied() {
            emb = register_parameter("embed", Tensor<double>::ones({4, 2}));
            share_parameter("head", emb);
        }
    } t;
    CHECK(t.parameters().size() == 1);
    CHECK(t.state_dict().size() == 2);
    CHECK_THROWS_WITH(t.register_parameter("embed", Tensor<double>::ones({1})), Contains("registered twice"));
    CHECK_THROWS_WITH(t.register_parameter("a.b", Tensor<double>::ones({1})), Contains("bad name"));
}
