// mpi_data_parallel.cpp — under `mpirun -np N`: N ranks with batch B each, gradients averaged by
// DataParallel, end k optimizer steps with the same weights as one process with batch N*B (the
// reference, which every rank also computes alone). An MLP and a Transformer encoder layer from
// nn/, with SGD (momentum) and Adam; several bucket sizes. A control run without the gradient
// average must differ from the reference, so the comparison can fail.
#include "mpi_main.hpp"

#include <cmath>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/nn/layers.hpp>
#include <moekd/nn/transformer.hpp>
#include <moekd/ops/loss.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using moekd_test::world;

namespace {

constexpr int64_t kB = 6;  // rows per rank and step
constexpr int kSteps = 5;

struct Mlp : nn::Module<float> {
    std::shared_ptr<nn::Linear<float>> fc1, fc2;
    explicit Mlp(Generator& g) {
        fc1 = register_module("fc1", std::make_shared<nn::Linear<float>>(8, 16, g));
        fc2 = register_module("fc2", std::make_shared<nn::Linear<float>>(16, 4, g));
    }
    // x: (M, 8), y: (M) -> mean cross-entropy
    Tensor<float> loss(const Tensor<float>& x, const Tensor<int64_t>& y) { return cross_entropy(fc2->forward(relu(fc1->forward(x))), y); }
};

struct Layer : nn::Module<float> {
    std::shared_ptr<nn::TransformerEncoderLayer<float>> layer;
    static nn::LayerConfig cfg() {
        nn::LayerConfig c;
        c.d_model = 8;
        c.num_heads = 2;
        c.ffn_dim = 16;
        c.dropout = 0.0;
        return c;
    }
    explicit Layer(Generator& g) { layer = register_module("layer", std::make_shared<nn::TransformerEncoderLayer<float>>(cfg(), g)); }
    // x: (M, T=3, 8) flattened to (M, 24); y: (M) -> cross-entropy over the first 4 features of token 0
    Tensor<float> loss(const Tensor<float>& x, const Tensor<int64_t>& y) {
        Tensor<float> h = layer->forward(x.reshape({x.size(0), 3, 8}));  // (M, 3, 8)
        return cross_entropy(h.select(1, 0).narrow(1, 0, 4).contiguous(), y);
    }
};

// The global batch of step s, the same on every rank: x (N*B, in), y (N*B).
void global_batch(int step, int64_t rows, int64_t in, Tensor<float>& x, Tensor<int64_t>& y) {
    Generator g(1000 + step);
    x = Tensor<float>::randn({rows, in}, g);
    y = Tensor<int64_t>::randint(0, 4, {rows}, g);
}

enum class Opt { SGD, Adam };

std::unique_ptr<optim::Optimizer<float>> make_opt(const std::vector<Tensor<float>>& p, Opt o) {
    if (o == Opt::SGD) return std::make_unique<optim::SGD<float>>(std::vector<optim::ParamGroup<float>>{{p, 0.1, 0.0}}, 0.9);
    return std::make_unique<optim::Adam<float>>(std::vector<optim::ParamGroup<float>>{{p, 0.01, 0.0}});
}

/// Trains `model` kSteps steps on rows [from, from + rows) of each global batch; `dp` (may be null)
/// averages gradients.
template <class M>
void train(M& model, Opt o, int64_t in, int64_t from, int64_t rows, int64_t global_rows, dist::DataParallel<float>* dp) {
    auto opt = make_opt(model.parameters(), o);
    for (int s = 0; s < kSteps; ++s) {
        Tensor<float> x;
        Tensor<int64_t> y;
        global_batch(s, global_rows, in, x, y);
        Tensor<float> loss = model.loss(x.narrow(0, from, rows).contiguous(), y.narrow(0, from, rows).contiguous());
        opt->zero_grad();
        loss.backward();
        if (dp) dp->average_gradients();
        opt->step();
    }
}

double max_diff(const nn::Module<float>& a, const nn::Module<float>& b, std::string* worst = nullptr) {
    auto pa = a.named_parameters(), pb = b.named_parameters();
    double m = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
        // The key bias gets an exactly-zero gradient (softmax ignores a per-row shift), so its
        // gradient is pure rounding noise, which Adam's g / sqrt(v) scales up to steps of ~lr:
        // not comparable between two summation orders on one process either. Skipped.
        if (pa[i].first.find("k_proj.bias") != std::string::npos) continue;
        for (int64_t k = 0; k < pa[i].second.numel(); ++k) {
            const double d = std::abs(double(pa[i].second.data()[k]) - double(pb[i].second.data()[k]));
            if (d > m && worst) *worst = pa[i].first + "[" + std::to_string(k) + "]";
            m = std::max(m, d);
        }
    }
    return m;
}

/// Max over ranks of |this rank's parameters - rank 0's|.
double spread_over_ranks(const nn::Module<float>& a) {
    double m = 0;
    for (auto p : a.parameters()) {
        Tensor<float> r0 = p.clone();
        dist::broadcast(*world(), r0, 0, "copy");
        for (int64_t k = 0; k < p.numel(); ++k) m = std::max(m, std::abs(double(p.data()[k]) - double(r0.data()[k])));
    }
    world()->all_reduce(&m, 1, dist::ReduceOp::Max);
    return m;
}

template <class M>
void check_equivalence(int64_t in, Opt o, double bucket_mb) {
    auto& c = *world();
    const int64_t n = c.size(), r = c.rank();
    Generator g0(7), gr(7 + 31 * r);  // rank 0's init; other ranks start elsewhere on purpose
    M ref(g0), dp_model(gr), control(gr);
    dist::DataParallelOptions opt;
    opt.bucket_mb = bucket_mb;
    dist::DataParallel<float> dp(world(), dp_model, opt);  // broadcasts rank 0's parameters
    CHECK(max_diff(ref, dp_model) == 0.0);
    {
        dist::DataParallel<float> sync_only(world(), control);  // same start, but never averages
    }
    train(ref, o, in, 0, n * kB, n * kB, nullptr);             // one process, batch N*B
    train(dp_model, o, in, r * kB, kB, n * kB, &dp);          // this rank's B rows
    train(control, o, in, r * kB, kB, n * kB, nullptr);       // no averaging
    std::string worst;
    const double d = max_diff(ref, dp_model, &worst), dc = max_diff(ref, control);
    double d_all = d, dc_min = dc;
    c.all_reduce(&d_all, 1, dist::ReduceOp::Max);
    dc_min = -dc_min;
    c.all_reduce(&dc_min, 1, dist::ReduceOp::Max);
    dc_min = -dc_min;
    if (r == 0)
        std::printf("data parallel %-5s %s bucket %g MB (%zu buckets): max |w_dp - w_ref| %.3g (at %s), spread over ranks %.3g, "
                    "control without averaging %.3g\n",
                    std::is_same_v<M, Mlp> ? "mlp" : "layer", o == Opt::SGD ? "SGD " : "Adam", bucket_mb,
                    dp.buckets().size(), d_all, worst.c_str(), spread_over_ranks(dp_model), dc_min);
    else
        spread_over_ranks(dp_model);
    CHECK(d_all < 2e-5);    // fp32 reduction order only
    CHECK(dc_min > 1e-3);   // the check can fail: without averaging the weights do differ
}

}  // namespace

TEST_CASE("2-rank data parallel == 1 rank with the doubled batch: MLP") {
    check_equivalence<Mlp>(8, Opt::SGD, 25.0);
    check_equivalence<Mlp>(8, Opt::Adam, 25.0);
    check_equivalence<Mlp>(8, Opt::Adam, 1e-4);  // ~100 bytes: one bucket per tensor
}

TEST_CASE("2-rank data parallel == 1 rank with the doubled batch: Transformer encoder layer") {
    check_equivalence<Layer>(24, Opt::SGD, 25.0);
    check_equivalence<Layer>(24, Opt::Adam, 1e-3);  // ~1 KB buckets: several tensors per bucket
}

TEST_CASE("a gradient present on some ranks only is averaged with zeros, absent everywhere stays absent") {
    auto& c = *world();
    Tensor<float> a = Tensor<float>::zeros({3}).requires_grad_(), b = Tensor<float>::zeros({2}).requires_grad_();
    dist::DataParallel<float> dp(world(), {{"a", a}, {"b", b}});
    if (c.rank() == 0) sum(a * Tensor<float>::full({3}, 2.f)).backward();
    dp.average_gradients();
    REQUIRE(a.grad().defined());
    CHECK(a.grad().at({1}) == Approx(2.0 / c.size()));
    CHECK_FALSE(b.grad().defined());
}

TEST_CASE("check_same_config passes for equal models and returns the same hash everywhere") {
    Generator g(1 + world()->rank());  // different values, same names and shapes
    Mlp m(g);
    const uint64_t h = dist::check_same_config(*world(), m, "mlp 8-16-4");
    uint64_t h0 = h;
    world()->broadcast(&h0, sizeof(h0), 0);
    CHECK(h == h0);
}

TEST_CASE("check_same_config names the rank and the first difference, on every rank") {
    const int bad = world()->size() - 1;
    const bool me = world()->rank() == bad;
    std::vector<std::pair<std::string, Tensor<float>>> p = {{"fc1.weight", Tensor<float>::zeros({16, me ? 9 : 8})},
                                                            {"fc1.bias", Tensor<float>::zeros({16})}};
    CHECK_THROWS_WITH(dist::check_same_config(*world(), p, "mlp"),
                      Catch::Contains("rank " + std::to_string(bad)) && Catch::Contains("fc1.weight (16, 8)") &&
                          Catch::Contains("fc1.weight (16, 9)"));
    // a config string that differs
    CHECK_THROWS_WITH(dist::check_same_config(*world(), std::vector<std::pair<std::string, Tensor<float>>>{},
                                              me ? "lr=0.1" : "lr=0.2"),
                      Catch::Contains("config lr=0.2") && Catch::Contains("config lr=0.1"));
    // one parameter more on the last rank
    std::vector<std::pair<std::string, Tensor<float>>> q = {{"fc1.weight", Tensor<float>::zeros({16, 8})}};
    if (me) q.emplace_back("extra", Tensor<float>::zeros({1}));
    CHECK_THROWS_WITH(dist::check_same_config(*world(), q, "mlp"), Catch::Contains("extra"));
}

TEST_CASE("DataParallel refuses to start when the ranks hold different parameters") {
    const bool last = world()->rank() == world()->size() - 1;
    Tensor<float> w = Tensor<float>::zeros({4, last ? 5 : 4}).requires_grad_();
    CHECK_THROWS_WITH(dist::DataParallel<float>(world(), {{"w", w}}),
                      Catch::Contains("param w (4, 4)") && Catch::Contains("param w (4, 5)"));
}
