// backend_ops_test.cpp — every case of the op registry (tests/op_cases_*.cpp) on the CUDA
// backend against the CPU, forward and backward, as ggml's test-backend-ops does.
//
// For each case: the inputs are drawn as gradcheck draws them (double), the CPU runs the case's
// function and the backward of sum(y * w) for a random w; then the same inputs are moved with
// .to(Device::CUDA) and the same function runs through the same op API on the device. The output
// and every input's gradient must match the CPU's (double: rtol 1e-10, atol 1e-12; the device's
// row sums add in a tree, the CPU's in order, so bits may differ in the last places).
//
// Coverage is a ratchet: kPendingOps lists the ops of the registry that have no CUDA
// implementation yet. The test fails if an op outside that list has none (a regression, or a new
// op without its device half), and if an op in the list now has one on every case (take it off
// the list). The list is the remaining work, in the open.
//
// Runs on the emulated device in CI (backend_ops_test_emu, label emu) and on a real GPU in
// scripts/gpu_check.sh (backend_ops_test, label gpu).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <moekd/cuda.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/nn.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/tensor.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

namespace {

// Ops of the registry that have no CUDA implementation yet (issue #14's remaining work). An op
// is off the list once every one of its cases runs on the device and matches the CPU.
const std::set<std::string> kPendingOps = {};

struct Outcome {
    bool ran = false;      // the device ran the case
    bool pending = false;  // it stopped at an op without a device implementation
    std::string error;     // any other error
};

double max_err(const Tensor<double>& got, const Tensor<double>& want, double rtol, double atol, double* worst) {
    const std::vector<double> g = got.to_vector(), w = want.to_vector();
    double bad = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        const double d = std::abs(g[i] - w[i]);
        const bool both_nan = std::isnan(g[i]) && std::isnan(w[i]);
        if (!both_nan) *worst = std::max(*worst, d / std::max(1.0, std::abs(w[i])));
        if (!both_nan && !(d <= atol + rtol * std::abs(w[i]))) bad = std::max(bad, d);
    }
    return bad;
}

Outcome run_case(const OpCase& c) {
    Generator gen(std::hash<std::string>{}(c.name));
    In cpu_in;
    for (const Shape& s : c.shapes) cpu_in.push_back(make_input(s, c.init, gen).requires_grad_());
    Tensor<double> y = c.fn(cpu_in);
    Generator wgen(99);
    const Tensor<double> w = make_input(y.shape(), Init::Normal, wgen);
    if (y.requires_grad()) sum(y * w).backward();

    Outcome out;
    In dev_in;
    for (const Tensor<double>& x : cpu_in) dev_in.push_back(x.detach().to(Device::CUDA).requires_grad_());
    Tensor<double> yd;
    try {
        yd = c.fn(dev_in);
        if (yd.requires_grad()) sum(yd * w.to(Device::CUDA)).backward();
    } catch (const Error& e) {
        const std::string what = e.what();
        out.pending = what.find("no CUDA implementation") != std::string::npos;
        out.error = what;
        return out;
    }
    out.ran = true;
    INFO(c.name);
    CHECK(yd.device() == Device::CUDA);
    REQUIRE(yd.shape() == y.shape());
    const double rtol = 1e-10, atol = 1e-12;
    double worst = 0;
    CHECK(max_err(yd, y.detach(), rtol, atol, &worst) == 0);
    for (size_t i = 0; i < cpu_in.size(); ++i) {
        const Tensor<double> gc = cpu_in[i].grad(), gd = dev_in[i].grad();
        INFO("gradient of input " << i);
        CHECK(gc.defined() == gd.defined());
        if (!gc.defined() || !gd.defined()) continue;
        CHECK(gd.device() == Device::CUDA);
        CHECK(max_err(gd, gc, rtol, atol, &worst) == 0);
    }
    return out;
}

}  // namespace

TEST_CASE("every op of the registry on the CUDA backend matches the CPU", "[cuda]") {
    REQUIRE(!op_registry().empty());
    std::map<std::string, std::vector<Outcome>> by_op;
    for (const OpCase& c : op_registry()) {
        const std::string op = c.name.substr(0, c.name.find('/'));
        const Outcome o = run_case(c);
        by_op[op].push_back(o);
        // an op not yet on CUDA may stop anywhere (at its own check, or where a CPU constant of
        // its implementation meets a device tensor); any other op must run
        if (!o.ran && !o.pending && !kPendingOps.count(op)) FAIL_CHECK(c.name << ": " << o.error);
        if (o.pending && !kPendingOps.count(op))
            FAIL_CHECK(c.name << ": op '" << op << "' is not in kPendingOps but has no CUDA implementation: " << o.error);
    }
    int covered = 0;
    std::string pending;
    for (const auto& [op, outcomes] : by_op) {
        const bool all_ran = std::all_of(outcomes.begin(), outcomes.end(), [](const Outcome& o) { return o.ran; });
        covered += all_ran;
        if (!all_ran) pending += " " + op;
        INFO("op '" << op << "' now runs on the device in every case: take it off kPendingOps");
        CHECK(!(all_ran && kPendingOps.count(op)));
    }
    std::cout << "backend ops: " << covered << " of " << by_op.size()
              << " registry ops run on CUDA in every case; pending:" << pending << "\n";
}

TEST_CASE("device tensors: moving, mixing devices, and errors", "[cuda]") {
    Generator gen(3);
    const Tensor<float> x = Tensor<float>::randn({4, 5}, gen);
    const Tensor<float> xd = x.to(Device::CUDA);
    CHECK(xd.device() == Device::CUDA);
    CHECK(xd.to(Device::CPU).to_vector() == x.to_vector());
    CHECK(xd.to_vector() == x.to_vector());                 // to_vector copies back
    CHECK(xd.t().to(Device::CPU).to_vector() == x.t().contiguous().to_vector());  // strided view
    CHECK((xd * 2.0f).to_vector() == (x * 2.0f).to_vector());  // a CPU scalar joins the device
    CHECK_THROWS_WITH(x + xd, Catch::Contains("add") && Catch::Contains("different devices") &&
                                  Catch::Contains("cpu") && Catch::Contains("cuda"));
    CHECK_THROWS_WITH(index_select(xd, 0, Tensor<int64_t>::from_vector({1, 0})),
                      Catch::Contains("index_select") && Catch::Contains("different devices"));
    CHECK_THROWS_WITH(where(lt(xd, 0.0f), xd, x), Catch::Contains("where") && Catch::Contains("different devices"));
    // a device index is checked on a host copy, with the CPU's message
    CHECK_THROWS_WITH(index_select(xd, 0, Tensor<int64_t>::from_vector({1, 4}).to(Device::CUDA)),
                      Catch::Contains("index 4 at position") && Catch::Contains("out of range [0, 4)"));
    const Tensor<float> z = Tensor<float>::zeros({3, 2}, Device::CUDA);
    CHECK(z.to_vector() == std::vector<float>(6, 0.0f));
    CHECK(Tensor<float>::full({1}, 2.5f, Device::CUDA).item() == 2.5f);
}

TEST_CASE("a small MLP trains on the device as on the CPU", "[cuda]") {
    Generator gen(11);
    const Tensor<float> x = Tensor<float>::randn({16, 8}, gen), t = Tensor<float>::randn({16, 4}, gen);
    Tensor<float> w1 = Tensor<float>::randn({32, 8}, gen, 0, 0.3), b1 = Tensor<float>::zeros({32});
    Tensor<float> w2 = Tensor<float>::randn({4, 32}, gen, 0, 0.3), b2 = Tensor<float>::zeros({4});
    const auto train = [&](Device dev) {
        std::vector<Tensor<float>> p = {w1.to(dev), b1.to(dev), w2.to(dev), b2.to(dev)};
        if (dev == Device::CPU) for (auto& q : p) q = q.clone().detach();
        for (auto& q : p) q.requires_grad_();
        const Tensor<float> xd = x.to(dev), td = t.to(dev);
        std::vector<float> losses;
        for (int step = 0; step < 20; ++step) {
            const Tensor<float> h = gelu(linear(xd, p[0], p[1]));
            const Tensor<float> d = linear(h, p[2], p[3]) - td;
            Tensor<float> loss = mean(d * d);
            for (auto& q : p) q.zero_grad();
            loss.backward();
            losses.push_back(loss.item());
            NoGrad ng;
            for (auto& q : p) {  // plain SGD through the op API: q -= 0.1 * grad
                Tensor<float> upd = q.detach() - q.grad() * 0.1f;
                detail::copy_into(q, upd);
            }
        }
        return losses;
    };
    const std::vector<float> cpu = train(Device::CPU), dev = train(Device::CUDA);
    REQUIRE(cpu.size() == dev.size());
    CHECK(dev.back() < dev.front() * 0.8f);
    for (size_t i = 0; i < cpu.size(); ++i) {
        INFO("step " << i << ": cpu " << cpu[i] << ", cuda " << dev[i]);
        CHECK(std::abs(cpu[i] - dev[i]) <= 1e-4f * std::max(1.0f, std::abs(cpu[i])));
    }
}

TEST_CASE("modules move to the device with their state, state dicts go both ways", "[cuda]") {
    Generator gen(5);
    nn::Linear<double> cpu(6, 3, gen), dev(6, 3, gen);
    dev.load_state_dict(cpu.state_dict());
    const Tensor<double> w_handle = dev.weight;  // a member handle: must see the move
    dev.to(Device::CUDA);
    CHECK(dev.device() == Device::CUDA);
    CHECK(w_handle.device() == Device::CUDA);
    CHECK(dev.weight.requires_grad());
    const Tensor<double> x = Tensor<double>::randn({5, 6}, gen);
    Tensor<double> yc = cpu.forward(x), yd = dev.forward(x.to(Device::CUDA));
    CHECK(yd.device() == Device::CUDA);
    double worst = 0;
    CHECK(max_err(yd, yc, 1e-12, 1e-12, &worst) == 0);
    mean(yc * yc).backward();
    mean(yd * yd).backward();
    CHECK(dev.weight.grad().device() == Device::CUDA);
    CHECK(max_err(dev.weight.grad(), cpu.weight.grad(), 1e-12, 1e-12, &worst) == 0);
    CHECK(max_err(dev.bias.grad(), cpu.bias.grad(), 1e-12, 1e-12, &worst) == 0);
    // saving a device module writes its values (copied back), loading a CPU dict fills the device
    const std::string path = "backend_ops_linear.safetensors";
    io::write_safetensors(path, dev.state_dict());
    const auto loaded = io::load_safetensors<double>(path);
    CHECK(loaded.at("weight").to_vector() == cpu.weight.to_vector());
    nn::Linear<double> other(6, 3, gen);
    other.to(Device::CUDA);
    other.load_state_dict(loaded);
    CHECK(other.weight.device() == Device::CUDA);
    CHECK(other.weight.to_vector() == cpu.weight.to_vector());
    std::remove(path.c_str());
    dev.to(Device::CPU);
    CHECK(dev.weight.device() == Device::CPU);
    CHECK(dev.weight.grad().device() == Device::CPU);
    CHECK(max_err(dev.weight.grad(), cpu.weight.grad(), 1e-12, 1e-12, &worst) == 0);
}

// Three steps of an optimizer on CPU parameters and on copies of them on the device.
template <class Opt, class... A>
void check_optimizer(const char* name, A... args) {
    INFO(name);
    Generator gen(21);
    const Tensor<double> w0 = Tensor<double>::randn({7, 5}, gen), b0 = Tensor<double>::randn({5}, gen);
    const Tensor<double> x = Tensor<double>::randn({4, 7}, gen);
    const auto run = [&](Device dev) {
        Tensor<double> w = w0.clone().detach().to(dev).requires_grad_(), b = b0.clone().detach().to(dev).requires_grad_();
        Opt opt({optim::ParamGroup<double>{{w, b}, 0.05, 0.01}}, args...);
        for (int s = 0; s < 3; ++s) {
            opt.zero_grad();
            const Tensor<double> y = matmul(x.to(dev), w) + b;
            mean(y * y).backward();
            optim::clip_grad_norm(std::vector<Tensor<double>>{w, b}, 0.5);
            opt.step();
        }
        return std::vector<Tensor<double>>{w.to(Device::CPU), b.to(Device::CPU)};
    };
    const auto c = run(Device::CPU), d = run(Device::CUDA);
    double worst = 0;
    for (size_t i = 0; i < c.size(); ++i) CHECK(max_err(d[i], c[i], 1e-11, 1e-12, &worst) == 0);
}

TEST_CASE("fused optimizer updates on the device match the CPU optimizers", "[cuda]") {
    check_optimizer<optim::SGD<double>>("SGD");
    check_optimizer<optim::SGD<double>>("SGD momentum + Nesterov", 0.9, 0.0, true);
    check_optimizer<optim::Adam<double>>("Adam (L2 decay)");
    check_optimizer<optim::AdamW<double>>("AdamW");
    check_optimizer<optim::LAMB<double>>("LAMB");
    // an optimizer without a device update says so
    struct HostOnly : optim::Optimizer<double> {
        using optim::Optimizer<double>::Optimizer;
        void update(size_t, const optim::ParamGroup<double>&, double*, const double*, int64_t) override {}
    };
    Tensor<double> w = Tensor<double>::ones({3}, Device::CUDA).requires_grad_();
    HostOnly host_only({optim::ParamGroup<double>{{w}, 0.1}});
    sum(w * w).backward();
    CHECK_THROWS_WITH(host_only.step(), Catch::Contains("optimizer") && Catch::Contains("no CUDA implementation"));
}

// LAMB's trust ratio is a per-tensor reduction (two launches on the device): five steps over a
// decayed group and one without decay, holding a zero weight (||p|| = 0: trust 1, a plain lr
// step), a zero weight with a zero gradient (both norms 0: it stays 0), a zero gradient without
// decay (u = 0: trust 1, p unchanged), and a tensor long enough to cap the grid (more block
// partials than threads for the second launch to reduce). Returns every parameter after each step.
template <class T>
std::vector<std::vector<T>> lamb_trajectory(Device dev) {
    Generator gen(23);
    const std::vector<Tensor<T>> init = {Tensor<T>::randn({7, 5}, gen), Tensor<T>::randn({300001}, gen),
                                         Tensor<T>::zeros({2, 3}), Tensor<T>::zeros({6}), Tensor<T>::randn({4}, gen)};
    std::vector<Tensor<T>> ps;
    for (const auto& t : init) ps.push_back(t.clone().detach().to(dev).requires_grad_());
    optim::LAMB<T> opt({optim::ParamGroup<T>{{ps[0], ps[1], ps[2]}, 0.05, 0.01}, optim::ParamGroup<T>{{ps[3], ps[4]}, 0.02, 0.0}});
    Generator ggen(24);
    std::vector<std::vector<T>> out;
    for (int s = 1; s <= 5; ++s) {
        for (size_t i = 0; i < ps.size(); ++i) {
            const bool zero = i == 2 || i == 4;
            ps[i].set_grad((zero ? Tensor<T>::zeros(init[i].shape()) : Tensor<T>::randn(init[i].shape(), ggen, 0.1 * s, 1.0)).to(dev));
        }
        opt.step();
        for (const auto& p : ps) out.push_back(p.to(Device::CPU).to_vector());
    }
    out.push_back(init[4].to_vector());
    return out;
}

template <class T>
double lamb_worst(double rtol, double atol) {
    const auto c = lamb_trajectory<T>(Device::CPU), d = lamb_trajectory<T>(Device::CUDA);
    REQUIRE(c.size() == d.size());
    double worst = 0, bad = 0;
    for (size_t k = 0; k < c.size(); ++k)
        for (size_t i = 0; i < c[k].size(); ++i) {
            const double w = double(c[k][i]), g = double(d[k][i]), e = std::abs(g - w);
            worst = std::max(worst, e / std::max(1.0, std::abs(w)));
            if (!(e <= atol + rtol * std::abs(w))) bad = std::max(bad, e);
        }
    CHECK(bad == 0);
    const size_t last = c.size() - 6;  // the parameters after step 5, then init[4]
    CHECK(d[last + 2] == std::vector<T>(6, T(0)));  // zero weight, zero gradient: stays 0
    CHECK(d[last + 3] != std::vector<T>(6, T(0)));  // zero weight: moved by a plain lr step
    CHECK(d[last + 4] == d.back());                 // zero gradient, no decay: unchanged
    CHECK(lamb_trajectory<T>(Device::CUDA) == d);   // the reductions are deterministic
    return worst;
}

TEST_CASE("LAMB's fused device update matches the CPU LAMB, zero norms included", "[cuda]") {
    const double wd = lamb_worst<double>(1e-11, 1e-12), wf = lamb_worst<float>(1e-5, 1e-6);
    std::printf("LAMB device vs CPU, largest relative difference: double %.3g, float %.3g\n", wd, wf);
}

// The ops without gradients that the registry does not hold: comparisons and mask logic, and
// the long-row and NaN paths of argmax / top-k / max.
TEST_CASE("comparisons, masks, argmax and top-k on the device match the CPU", "[cuda]") {
    Generator gen(8);
    Tensor<float> x = Tensor<float>::randn({3, 1500}, gen);  // rows >= 1024: argmax's block kernel
    x.data()[7] = 4.0f;
    x.data()[1500 + 9] = x.data()[1500 + 700] = 5.0f;      // a tie: the lower position wins
    x.data()[3000 + 1499] = std::nanf("");                 // NaN counts as the largest
    const Tensor<float> xd = x.to(Device::CUDA);
    CHECK(argmax(xd, -1).to_vector() == argmax(x, -1).to_vector());
    CHECK(argmax(xd, -1).to_vector() == std::vector<int64_t>{7, 9, 1499});
    CHECK(argmax(xd, 0).to_vector() == argmax(x, 0).to_vector());  // a strided column per thread
    CHECK(topk(xd, 3, -1).second.to_vector() == topk(x, 3, -1).second.to_vector());
    CHECK(topk(xd.t(), 2, 0).second.to_vector() == topk(x.t(), 2, 0).second.to_vector());
    const std::vector<float> mc = max(x, {1}).to_vector(), md = max(xd, {1}).to_vector();
    CHECK(md[0] == mc[0]);
    CHECK(md[1] == mc[1]);
    CHECK(std::isnan(md[2]));
    CHECK(min(xd.narrow(1, 0, 1499), {0}).to_vector() == min(x.narrow(1, 0, 1499), {0}).to_vector());
    CHECK(std::isnan(min(xd, {0}).to_vector()[1499]));

    const Tensor<float> a = Tensor<float>::randn({4, 6}, gen), b = Tensor<float>::randn({6}, gen);
    const Tensor<float> ad = a.to(Device::CUDA), bd = b.to(Device::CUDA);
    CHECK(eq(ad, ad).to_vector() == std::vector<uint8_t>(24, 1));
    CHECK(lt(ad, bd).to_vector() == lt(a, b).to_vector());  // broadcast
    CHECK(ge(ad.t(), 0.0f).to_vector() == ge(a.t(), 0.0f).to_vector());
    const Tensor<uint8_t> m = gt(a, 0.0f), n = lt(b, 0.5f);
    const Tensor<uint8_t> md2 = m.to(Device::CUDA), nd = n.to(Device::CUDA);
    CHECK(logical_not(md2).to_vector() == logical_not(m).to_vector());
    CHECK(logical_not(md2.t()).to_vector() == logical_not(m.t()).to_vector());
    CHECK(logical_and(md2, nd).to_vector() == logical_and(m, n).to_vector());
    CHECK(logical_or(md2, nd).to_vector() == logical_or(m, n).to_vector());
    const Tensor<int64_t> ids = Tensor<int64_t>::from_vector({3, 0, 2, 0}, {2, 2});
    CHECK(eq(ids.to(Device::CUDA), int64_t(0)).to_vector() == eq(ids, int64_t(0)).to_vector());
    CHECK(masked_fill(ad, md2, -1.0f).to_vector() == masked_fill(a, m, -1.0f).to_vector());
    CHECK(where(md2, ad, 2.0f).to_vector() == where(m, a, 2.0f).to_vector());

    // dropout: one seed, the same mask on both backends (Philox by element index)
    Generator g1(31), g2(31);
    const Tensor<float> big = Tensor<float>::randn({37, 129}, gen);
    const Tensor<float> dc = dropout(big, 0.3, true, g1), dd = dropout(big.to(Device::CUDA), 0.3, true, g2);
    CHECK(dd.device() == Device::CUDA);
    CHECK(dd.to_vector() == dc.to_vector());

    // a strided pad mask on the device (a transposed view) is copied there, not refused
    const Tensor<float> la = Tensor<float>::randn({4, 3, 9}, gen), lb = Tensor<float>::randn({4, 3, 9}, gen);
    const Tensor<uint8_t> pad_t = Tensor<uint8_t>::from_vector({0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, {3, 4});
    const float kc = symmetric_kl(la, lb, pad_t.t()).item();
    const float kd = symmetric_kl(la.to(Device::CUDA), lb.to(Device::CUDA), pad_t.to(Device::CUDA).t()).item();
    CHECK(std::abs(kc - kd) <= 1e-6f * std::abs(kc));
}

// A whole model: a small fairseq-style encoder-decoder (dense FFNs; dropout on, drawn from equal
// generators) takes three Adam steps on the device and on the CPU: the same losses and weights.
TEST_CASE("an encoder-decoder trains on the device as on the CPU", "[cuda]") {
    nn::EncoderDecoderConfig cfg;
    cfg.src_vocab = cfg.tgt_vocab = 23;
    cfg.padding_idx = 0;
    cfg.share_embeddings = true;
    cfg.layer.d_model = 16;
    cfg.layer.num_heads = 2;
    cfg.layer.ffn_dim = 24;
    cfg.layer.dropout = 0.1;
    cfg.encoder_layers = cfg.decoder_layers = 2;
    const Tensor<int64_t> src = Tensor<int64_t>::from_vector({4, 7, 9, 3, 5, 0, 11, 12, 13, 14, 3, 0}, {2, 6});
    const Tensor<int64_t> prev = Tensor<int64_t>::from_vector({2, 8, 6, 10, 2, 15, 16, 0}, {2, 4});
    const Tensor<int64_t> tgt = Tensor<int64_t>::from_vector({8, 6, 10, 3, 15, 16, 3, 0}, {2, 4});
    const auto run = [&](Device dev) {
        Generator gen(17);
        nn::EncoderDecoder<double> model(cfg, gen);
        model.to(dev);
        optim::Adam<double> opt({optim::ParamGroup<double>{model.parameters(), 1e-3}});
        std::vector<double> losses;
        for (int step = 0; step < 3; ++step) {
            opt.zero_grad();
            const Tensor<double> logits = model.forward(src.to(dev), prev.to(dev));
            Tensor<double> loss = cross_entropy(logits, tgt.to(dev), 0, 0.1);
            loss.backward();
            opt.step();
            losses.push_back(loss.item());
        }
        std::vector<double> w;
        for (const auto& [name, t] : model.state_dict()) {
            const std::vector<double> v = t.to_vector();
            w.insert(w.end(), v.begin(), v.end());
        }
        return std::make_pair(losses, w);
    };
    const auto [lc, wc] = run(Device::CPU);
    const auto [ld, wd] = run(Device::CUDA);
    for (size_t i = 0; i < lc.size(); ++i) CHECK(std::abs(lc[i] - ld[i]) <= 1e-10 * std::abs(lc[i]));
    REQUIRE(wc.size() == wd.size());
    double worst = 0;
    for (size_t i = 0; i < wc.size(); ++i) worst = std::max(worst, std::abs(wc[i] - wd[i]));
    CHECK(worst <= 1e-10);
}

int main(int argc, char** argv) {
    const int n = cuda::device_count();
    if (n == 0) {
        std::cout << "SKIPPED: no CUDA device found (" << cuda::no_device_reason() << ")\n";
        return 77;
    }
    std::cout << cuda::build_info() << "\n";
    return Catch::Session().run(argc, argv);
}
