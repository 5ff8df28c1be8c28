// umbrella_test.cpp — <moekd/moekd.hpp> ("everything") alone is enough to reach every public
// part of the library: this file includes nothing else of moekd and calls one function of each
// header the umbrellas are meant to pull in (a header left out of moekd.hpp / linalg.hpp fails to
// compile here).
#include <catch2/catch.hpp>
#include <moekd/moekd.hpp>

using namespace moekd;

TEST_CASE("moekd.hpp reaches SVD knowledge gathering (linalg/knowledge_gathering.hpp)", "[umbrella]") {
    // two rank-1 experts: W_i = s_i u_i v_i^T; gathering with lambda = 1 sums them (eq. 14)
    Tensor<double> w0 = Tensor<double>::from_vector({2, 0, 0, 0}, {2, 2});
    Tensor<double> w1 = Tensor<double>::from_vector({0, 0, 0, 3}, {2, 2});
    const linalg::GatheredWeight<double> g = linalg::gather_weights<double>({w0, w1}, 1.0);
    CHECK(g.ranks == std::vector<int64_t>{1, 1});
    const auto w = g.weight.to_vector();
    REQUIRE(w.size() == 4);
    CHECK(w[0] == Approx(2.0));
    CHECK(w[1] == Approx(0.0).margin(1e-12));
    CHECK(w[2] == Approx(0.0).margin(1e-12));
    CHECK(w[3] == Approx(3.0));
    const Tensor<double> b = linalg::average_biases<double>(
        {Tensor<double>::from_vector({1, 2}, {2}), Tensor<double>::from_vector({3, 6}, {2})});
    CHECK(b.to_vector() == std::vector<double>{2, 4});
}

TEST_CASE("moekd.hpp reaches the MoE layer, the losses, linalg and io", "[umbrella]") {
    Generator gen(1);
    moe::MoEConfig mc;
    mc.d_model = 4;
    mc.ffn_dim = 8;
    mc.router.num_experts = 2;
    mc.router.top_k = 2;
    moe::MoELayer<float> layer(mc, gen);
    CHECK(layer.forward(Tensor<float>::randn({3, 4}, gen)).shape() == Shape{3, 4});
    CHECK(linalg::svd(Tensor<double>::from_vector({1, 0, 0, 2}, {2, 2})).S.to_vector().size() == 2);
}

TEST_CASE("moekd.hpp reaches the methods (methods.hpp) and the WideNet stack (nn/widenet.hpp)", "[umbrella]") {
    tsjt::StageController s(tsjt::Mode::tsjt, 0.5, 1, 0);
    CHECK(s.observe(1, 0.25));
    CHECK(ones::is_ffn_name("encoder.moe.gate.weight"));
    CHECK(tcd::CaptureWhat::from(tcd::TcdWeights{1, 0, 0}).inner == false);
    nn::WideNetConfig c;
    CHECK(c.dense().experts == 0);
}

TEST_CASE("moekd.hpp reaches the Hugging Face checkpoint layout (io/hf.hpp)", "[umbrella]") {
    CHECK_THROWS_WITH(io::load_hf_bert<float>("/nonexistent/hf_dir"), Catch::Contains("/nonexistent/hf_dir"));
}
