// dist_moe_bench.cpp — tokens/s of an MoE layer training step (forward + backward) on 1 rank and
// on 2 expert-parallel ranks (dist::ExpertParallelMoE over Open MPI), with the share of the step
// spent in all_to_all_v. Conventions: /work/shared/BENCH.md; the peer of the 2-rank case is the
// 1-rank case measured in the same run, on the same global batch, the same cores.
//
// Driver (run without mpirun): measures 1 rank (SingleProcess: the same code, every exchange a
// copy; 2 worker threads, OpenBLAS at 2), then starts `mpirun -np 2 <self> --worker` (each rank
// 1 thread, OpenBLAS at 1, half the global batch, half the experts); rounds alternate 1 rank /
// 2 ranks and the median of each is printed:
//   case=moe_ep_1rank  tokens_per_s=... step_ms=... comm_ms=... comm_share=...
//   case=moe_ep_2ranks tokens_per_s=... step_ms=... comm_ms=... comm_share=... ratio=<2 ranks / 1 rank>
// step_ms is the slowest rank's step; comm_ms that rank's time in all_to_all_v (the count exchange
// included), comm_share = comm_ms / step_ms. The layer: d = 256, ff = 1024, E = 8, top-2,
// capacity factor 1.25, GELU, Switch + z aux loss; loss = mean(y * y) + aux.
// Before timing each side checks its output against moe::MoELayer on its own tokens (exit 1 over
// 1e-4 relative). On these shared 2-core machines 2 ranks can only split the same 2 cores, and
// the figures are noisy: read the ratio and the comm share, not the absolute numbers.
//
// Build: cmake -DMOEKD_BUILD_BENCH=ON ... && cmake --build <dir> --target dist_moe_bench
// Run:   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./<dir>/bench/dist_moe_bench [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <moekd/dist/expert_parallel.hpp>
#include <moekd/dist/init.hpp>

using namespace moekd;

namespace {

struct Opts {
    int64_t tokens = 4096;  // global batch
    int samples = 5, rounds = 3, warmup = 2;
    bool quick = false, worker = false;
};

moe::MoEConfig bench_config() {
    moe::MoEConfig c;
    c.d_model = 256;
    c.ffn_dim = 1024;
    c.router.num_experts = 8;
    c.router.top_k = 2;
    c.router.capacity_factor_train = 1.25;
    c.activation = nn::Activation::GELU;
    c.balance_weight = 0.01;
    c.z_loss_weight = 0.001;
    return c;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void set_threads(int n) {
    moe::set_num_threads(n);
#if defined(MOEKD_BLAS)
    openblas_set_num_threads(n);
#endif
}

struct Result {
    double step_s = 0, comm_s = 0;
};

/// Checks the layer against moe::MoELayer on this rank's tokens, then times `samples` steps;
/// returns the medians (step time of the slowest rank, and that rank's comm time).
Result run(std::shared_ptr<dist::Communicator> comm, const Opts& o, bool verify) {
    const auto cfg = bench_config();
    const int P = comm->size(), me = comm->rank();
    const int64_t n = o.tokens / P;
    Generator gx(100 + me);
    const Tensor<float> x = Tensor<float>::randn({n, cfg.d_model}, gx);
    Generator g(7), gr(7);
    dist::ExpertParallelMoE<float> ep(cfg, g, comm);
    if (verify) {
        moe::MoELayer<float> ref(cfg, gr);
        NoGrad ng;
        const Tensor<float> a = ep.forward(x), b = ref.forward(x);
        double m = 0, s = 1e-30;
        const auto va = a.to_vector(), vb = b.to_vector();
        for (size_t i = 0; i < va.size(); ++i) m = std::max(m, double(std::abs(va[i] - vb[i]))), s = std::max(s, double(std::abs(vb[i])));
        double worst = m / s;
        comm->all_reduce(&worst, 1, dist::ReduceOp::Max);
        if (me == 0) std::printf("# check ranks=%d max_rel_err_vs_MoELayer=%.2e -> %s\n", P, worst, worst < 1e-4 ? "agree" : "DISAGREE");
        if (!(worst < 1e-4)) std::exit(1);
    }
    std::vector<double> steps, comms;
    for (int i = 0; i < o.warmup + o.samples; ++i) {
        comm->barrier();
        ep.zero_grad();
        ep.reset_comm_stats();
        const double t0 = now();
        auto out = ep.forward_with_stats(x);
        add(mean(mul(out.y, out.y)), out.aux_loss).backward();
        double pair[2] = {now() - t0, ep.comm_stats().seconds};
        // the slowest rank's step, with its comm time
        std::vector<double> all(2 * P);
        comm->all_gather(pair, all.data(), sizeof pair);
        int slow = 0;
        for (int r = 1; r < P; ++r)
            if (all[2 * r] > all[2 * slow]) slow = r;
        if (i >= o.warmup) steps.push_back(all[2 * slow]), comms.push_back(all[2 * slow + 1]);
    }
    std::vector<size_t> idx(steps.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return steps[a] < steps[b]; });
    const size_t mid = idx[idx.size() / 2];
    return {steps[mid], comms[mid]};
}

void print(const char* name, const Result& r, int64_t tokens, double ratio) {
    std::printf("case=%s tokens_per_s=%.0f step_ms=%.1f comm_ms=%.2f comm_share=%.3f unit=tokens/s", name,
                tokens / r.step_s, r.step_s * 1e3, r.comm_s * 1e3, r.comm_s / r.step_s);
    if (ratio > 0) std::printf(" ratio=%.3f", ratio);
    std::printf("\n");
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") o.quick = true, o.tokens = 1024, o.samples = 3, o.rounds = 1, o.warmup = 1;
        else if (a == "--worker") o.worker = true;
        else if (a == "--tokens" && i + 1 < argc) o.tokens = std::atoll(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--tokens N]   (--worker: internal, under mpirun)\n", argv[0]);
            return 2;
        }
    }
    try {
        auto comm = dist::init(argc, argv);
        if (o.worker) {  // one round of the 2-rank case; rank 0 prints a line the driver parses
            set_threads(1);
            const Result r = run(comm, o, true);
            if (comm->rank() == 0) std::printf("worker step_s=%.9f comm_s=%.9f\n", r.step_s, r.comm_s);
            return 0;
        }
        if (comm->size() != 1) {
            if (comm->rank() == 0) std::fprintf(stderr, "dist_moe_bench: run it without mpirun; it starts the 2-rank case itself\n");
            return 2;
        }
        const auto cfg = bench_config();
        std::printf("# layer d=%lld ff=%lld E=%lld top_k=%lld capacity_factor=%.2f tokens=%lld (global batch)\n",
                    (long long)cfg.d_model, (long long)cfg.ffn_dim, (long long)cfg.router.num_experts,
                    (long long)cfg.router.top_k, cfg.router.capacity_factor_train, (long long)o.tokens);
        std::printf("# 1 rank: 2 MoE threads, OpenBLAS 2 threads; 2 ranks: 1 + 1 each (2 cores in all). "
                    "The machine is shared: figures are indicative\n");
        std::vector<double> s1, c1, s2, c2;
#ifdef MOEKD_MPIRUN_PATH
        const std::string cmd = std::string(MOEKD_MPIRUN_PATH) + " -np 2 --oversubscribe --allow-run-as-root " +
                                argv[0] + " --worker --tokens " + std::to_string(o.tokens) + (o.quick ? " --quick" : "");
#endif
        for (int round = 0; round < o.rounds; ++round) {
            set_threads(2);
            const Result r1 = run(comm, o, round == 0);
            s1.push_back(r1.step_s), c1.push_back(r1.comm_s);
#ifdef MOEKD_MPIRUN_PATH
            std::FILE* p = ::popen(cmd.c_str(), "r");
            MOEKD_CHECK(p, "dist_moe_bench: cannot start '", cmd, "'");
            char line[512];
            bool got = false;
            while (std::fgets(line, sizeof line, p)) {
                double st = 0, ct = 0;
                if (std::sscanf(line, "worker step_s=%lf comm_s=%lf", &st, &ct) == 2) s2.push_back(st), c2.push_back(ct), got = true;
                else if (line[0] == '#' && round == 0) std::fputs(line, stdout);
            }
            const int rc = ::pclose(p);
            MOEKD_CHECK(rc == 0 && got, "dist_moe_bench: the 2-rank run failed (", cmd, ", status ", rc, ")");
#endif
        }
        const Result m1{median(s1), median(c1)};
        print("moe_ep_1rank", m1, o.tokens, -1);
        if (!s2.empty()) {
            const Result m2{median(s2), median(c2)};
            print("moe_ep_2ranks", m2, o.tokens, m1.step_s / m2.step_s);
        } else {
            std::printf("# 2-rank case skipped: built without MPI (moekd::mpi)\n");
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dist_moe_bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
