// mpi_expert_parallel.cpp — under `mpirun -np 2` (any N dividing 8 works): expert parallelism over
// Open MPI. Every rank also runs the single-process moe::MoELayer on every rank's tokens (the
// reference) and checks:
//   - its outputs, aux loss, input gradient and router gradient equal the reference on its own
//     tokens, and the gradients of the experts it owns equal the reference's summed over all
//     ranks' tokens (double: 1e-12; float: 1e-5 relative);
//   - k SGD steps with DataParallel (dense, mean) + scale_expert_grads(1/N) end with the same
//     weights as one process minimising the mean of the ranks' losses (a control run without the
//     1/N expert scale must differ);
//   - a sharded checkpoint saved on N ranks loads on 1 (into a plain MoELayer) and one saved on 1
//     loads on N, both giving the same outputs.
#include "../dist/mpi_main.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/expert_parallel.hpp>
#include <moekd/dist/sharded_checkpoint.hpp>

using namespace moekd;
using moekd_test::world;

namespace {

moe::MoEConfig config(int64_t k, bool dropless, nn::Activation act) {
    moe::MoEConfig c;
    c.d_model = 16;
    c.ffn_dim = 24;
    c.router.num_experts = 8;
    c.router.top_k = k;
    c.router.dropless = dropless;
    c.router.capacity_factor_train = 1.0;
    c.activation = act;
    c.balance_weight = 0.01;
    c.z_loss_weight = 0.001;
    return c;
}

template <class T>
Tensor<T> tokens(int rank, int step = 0) {  // a different batch size on every rank
    Generator g(500 + 31 * rank + step);
    return Tensor<T>::randn({20 + 7 * rank, 16}, g);
}

template <class T>
Tensor<T> probe_loss(const Tensor<T>& y, const Tensor<T>& aux, int rank) {
    Generator g(900 + rank);
    return add(sum(mul(y, Tensor<T>::randn(y.shape(), g))), aux);
}

// max |a - b| / max(1, max |b|)
template <class T>
double rel_diff(const Tensor<T>& a, const Tensor<T>& b) {
    if (!a.defined() || !b.defined() || a.shape() != b.shape()) return 1e30;
    const auto va = a.to_vector(), vb = b.to_vector();
    double m = 0, s = 1;
    for (size_t i = 0; i < va.size(); ++i) {
        m = std::max(m, std::abs(double(va[i]) - double(vb[i])));
        s = std::max(s, std::abs(double(vb[i])));
    }
    return m / s;
}

template <class T>
void check_equivalence(const moe::MoEConfig& cfg, double tol) {
    auto comm = world();
    const int P = comm->size(), me = comm->rank();
    Generator gr(77);
    moe::MoELayer<T> ref(cfg, gr);
    Tensor<T> ry, raux, rdx, rgate;
    std::map<std::string, Tensor<T>> expert_grad;  // summed over every rank's tokens
    int64_t dropped = 0;
    for (int r = 0; r < P; ++r) {
        ref.zero_grad();
        Tensor<T> x = tokens<T>(r).requires_grad_();
        auto o = ref.forward_with_stats(x);
        dropped += o.stats.dropped;
        probe_loss(o.y, o.aux_loss, r).backward();
        if (r == me) ry = o.y.detach(), raux = o.aux_loss.detach(), rdx = x.grad(), rgate = ref.gate->weight.grad();
        for (auto& [n, t] : ref.named_parameters())
            if (dist::is_expert_parameter(n) && t.grad().defined())
                expert_grad[n] = expert_grad.count(n) ? add(expert_grad[n], t.grad()) : t.grad().clone();
    }
    Generator g(77);
    dist::ExpertParallelMoE<T> ep(cfg, g, comm);
    Tensor<T> x = tokens<T>(me).requires_grad_();
    auto o = ep.forward_with_stats(x);
    probe_loss(o.y, o.aux_loss, me).backward();
    INFO("rank " << me << " of " << P << " k=" << cfg.router.top_k << " dropless=" << cfg.router.dropless
                 << " dropped (all ranks)=" << dropped);
    if (!cfg.router.dropless) CHECK(dropped > 0);
    CHECK(rel_diff(o.y, ry) < tol);
    CHECK(rel_diff(o.aux_loss, raux) < tol);
    CHECK(rel_diff(x.grad(), rdx) < tol);
    CHECK(rel_diff(ep.gate->weight.grad(), rgate) < tol);
    int checked = 0;
    double worst_expert = 0;
    for (auto& [n, t] : ep.experts->named_parameters()) {
        INFO("experts." << n);
        const auto it = expert_grad.find("experts." + n);
        REQUIRE(it != expert_grad.end());
        worst_expert = std::max(worst_expert, rel_diff(t.grad(), it->second));
        ++checked;
    }
    CHECK(worst_expert < tol);
    std::printf("# rank %d/%d %s k=%lld dropless=%d dropped=%lld rel_diff y=%.2e aux=%.2e dx=%.2e dgate=%.2e dexperts=%.2e\n",
                me, P, sizeof(T) == 8 ? "double" : "float", (long long)cfg.router.top_k, int(cfg.router.dropless),
                (long long)dropped, rel_diff(o.y, ry), rel_diff(o.aux_loss, raux), rel_diff(x.grad(), rdx),
                rel_diff(ep.gate->weight.grad(), rgate), worst_expert);
    CHECK(checked == 4 * 8 / P);
    CHECK(ep.comm_stats().calls == 4);  // two exchanges forward, two backward
}

}  // namespace

TEST_CASE("N-rank expert parallel equals the single-process MoE layer", "[mpi][ep]") {
    check_equivalence<double>(config(2, false, nn::Activation::GELU), 1e-12);
    check_equivalence<double>(config(1, true, nn::Activation::ReLU), 1e-12);
    check_equivalence<float>(config(2, false, nn::Activation::ReLU), 1e-5);
}

namespace {
/// p -= lr * grad for every parameter with a gradient (contiguous parameters and gradients).
void sgd_step(const std::vector<Tensor<double>>& params, double lr) {
    for (Tensor<double> t : params) {  // a handle: writes go to the parameter
        const Tensor<double> g = t.grad();
        if (!g.defined()) continue;
        const Tensor<double> gc = g.contiguous();
        double* p = t.data();
        for (int64_t i = 0; i < t.numel(); ++i) p[i] -= lr * gc.data()[i];
    }
}

/// k SGD steps; returns this rank's parameters by name afterwards. scale: apply 1/N to experts.
std::map<std::string, Tensor<double>> train_ep(bool scale_experts, int steps, double lr) {
    auto comm = world();
    const int P = comm->size(), me = comm->rank();
    Generator g(5);
    dist::ExpertParallelMoE<double> ep(config(2, true, nn::Activation::GELU), g, comm);
    dist::DataParallel<double> dp(comm, dist::dense_parameters(ep));
    for (int s = 0; s < steps; ++s) {
        ep.zero_grad();
        auto o = ep.forward_with_stats(tokens<double>(me, s));
        add(mean(mul(o.y, o.y)), o.aux_loss).backward();
        dp.average_gradients();
        if (scale_experts) ep.scale_expert_grads(1.0 / P);
        sgd_step(ep.parameters(), lr);
    }
    std::map<std::string, Tensor<double>> out;
    for (auto& [n, t] : ep.named_parameters()) out[n] = t.detach().clone();
    return out;
}
}  // namespace

TEST_CASE("SGD steps: expert parallel + DataParallel == one process on the mean loss", "[mpi][ep]") {
    const int P = world()->size(), steps = 3;
    const double lr = 0.5;
    Generator g(5);
    moe::MoELayer<double> ref(config(2, true, nn::Activation::GELU), g);
    for (int s = 0; s < steps; ++s) {
        ref.zero_grad();
        for (int r = 0; r < P; ++r) {  // gradient of (1/N) sum_r loss_r
            auto o = ref.forward_with_stats(tokens<double>(r, s));
            mul(add(mean(mul(o.y, o.y)), o.aux_loss), Tensor<double>::scalar(1.0 / P)).backward();
        }
        sgd_step(ref.parameters(), lr);
    }
    const auto want = ref.state_dict();
    const auto got = train_ep(true, steps, lr), control = train_ep(false, steps, lr);
    double worst = 0, control_worst = 0;
    for (auto& [n, t] : got) worst = std::max(worst, rel_diff(t, want.at(n)));
    for (auto& [n, t] : control) control_worst = std::max(control_worst, rel_diff(t, want.at(n)));
    INFO("rank " << world()->rank() << " worst " << worst << " control (no 1/N expert scale) " << control_worst);
    std::printf("# rank %d/%d after %d SGD steps: max rel diff to one process %.2e; control without 1/N: %.2e\n",
                world()->rank(), P, steps, worst, control_worst);
    CHECK(worst < 1e-12);
    if (P > 1) CHECK(control_worst > 1e-6);
}

TEST_CASE("sharded checkpoint: N ranks -> 1 and 1 -> N under mpirun", "[mpi][ep][checkpoint]") {
    auto comm = world();
    const int me = comm->rank();
    int64_t id = static_cast<int64_t>(::getpid());
    comm->broadcast(&id, sizeof id, 0);
    const std::string dirN = "/tmp/moekd_ep_mpi_" + std::to_string(id) + "_N", dir1 = dirN + "_1";
    const auto cfg = config(2, true, nn::Activation::ReLU);
    Generator gp(8);
    const Tensor<double> probe = Tensor<double>::randn({24, 16}, gp);
    // N -> 1
    Generator g(41);
    dist::ExpertParallelMoE<double> ep(cfg, g, comm);
    ep.eval();
    Tensor<double> y_ep;
    {
        NoGrad ng;
        y_ep = ep.forward(probe);
    }
    dist::save_sharded(ep, *comm, dirN);
    Generator g2(4242);
    moe::MoELayer<double> single(cfg, g2);
    single.eval();
    NoGrad ng;
    CHECK(rel_diff(single.forward(probe), y_ep) > 1e-3);  // different before loading
    dist::load_sharded(single, dirN);
    CHECK(rel_diff(single.forward(probe), y_ep) < 1e-12);
    // 1 -> N: rank 0 saves the single-process layer alone, then every rank loads its experts
    if (me == 0) {
        dist::SingleProcess sp;
        dist::save_sharded(single, sp, dir1);
    }
    comm->barrier();
    Generator g3(99);
    dist::ExpertParallelMoE<double> ep2(cfg, g3, comm);
    ep2.eval();
    dist::load_sharded(ep2, dir1);
    CHECK(rel_diff(ep2.forward(probe), y_ep) < 1e-12);
    comm->barrier();
    if (me == 0) {
        std::filesystem::remove_all(dirN);
        std::filesystem::remove_all(dir1);
    }
}
