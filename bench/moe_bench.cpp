// moe_bench.cpp — MoE FFN layer training step, moekd::moe::MoELayer against libtorch
// (bench/moe_bench_torch.cpp), the driver of both. Conventions: /work/shared/BENCH.md.
//
// The step (both sides): top-1 routing (softmax over E, argmax), ReLU experts d -> ff -> d,
// gate-weighted combine, Switch aux loss; loss = <y, gy> + 0.01 * aux; backward to the input
// and every parameter; gradients set to none first. Default sizes d = 256, ff = 1024, 8192
// tokens, E in {8, 16, 64}. Two libtorch formulations, each at ATen 1 and 2 threads (OpenBLAS at
// 2 on both sides), the faster setting reported:
//   case=moe_e<E>          vs the efficient form (tokens sorted by expert, one addmm per expert),
//                          both dropless
//   case=moe_e<E>_einsum   vs fairseq's one-hot dispatch einsum with capacity factor 1.25
//                          (moekd with the same capacity, so the same tokens are dropped)
// Before timing, every case runs one step on each side from the same weights and compares the
// output, the input gradient and every parameter gradient (max |a - b| / max |b|); anything over
// 1e-4 makes the program exit 1 after printing. Timing: warm-up, then samples alternating
// moekd / torch(1) / torch(2), each timed step right after an untimed one of the same side (idle
// BLAS threads spin for ~0.1 s after a call and would steal cores from the next side), median.
// --precision bf16: moekd's step inside moekd::Autocast(bf16), libtorch's forward under CPU autocast
// to bfloat16 (router in fp32 on both sides), the efficient formulation only. The check then holds
// each side to the fp32 step on the same weights (moekd's fp32 step, itself checked against libtorch's
// fp32 above it): every result within 2e-2 Frobenius-relative (||a - ref|| / ||ref||, bf16's
// tolerance, docs/bf16.md). Cases are named moe_e<E>_bf16.
// --profile times the pieces of the moekd step. Last, case=expert_gemms_only_scaling_... times the
// step's six per-expert GEMMs alone (even split, no router / activation / autograd): the floor
// that OpenBLAS on this machine puts under moe_scaling.
//
// Build: cmake -DMOEKD_BUILD_BENCH=ON ... && cmake --build <dir> --target moe_bench
// Run:   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./<dir>/bench/moe_bench [--quick] [--profile]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <moekd/moe.hpp>

// bench/moe_bench_torch.cpp
void* moe_torch_create(int formulation, int64_t N, int64_t D, int64_t F, int64_t E, double capacity_factor,
                       double aux_weight, const float* x, const float* wg, const float* w1, const float* b1,
                       const float* w2, const float* b2, const float* gy);
void moe_torch_destroy(void* h);
void moe_torch_step(void* h);
double moe_torch_aux(void* h);
void moe_torch_copy(void* h, int which, float* out);
void moe_torch_set_bf16(void* h, bool on);
void moe_torch_set_threads(int aten_threads);
int moe_torch_get_threads();
std::string moe_torch_version();

using namespace moekd;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}
double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::abs(double(a[i]) - double(b[i])));
        den = std::max(den, std::abs(double(b[i])));
    }
    return den > 0 ? num / den : num;
}
double frob_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = double(a[i]) - double(b[i]);
        num += d * d, den += double(b[i]) * double(b[i]);
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Options {
    bool quick = false, profile = false;
    int threads = 2, samples = 0;
    int64_t tokens = 8192, d = 256, ff = 1024;
    std::vector<int64_t> experts{8, 16, 64};
    bool einsum = true;
    bool bf16 = false;  // --precision bf16
};

constexpr double kAuxWeight = 0.01;

/// sum(y * gy) as one op: the loss both sides use (torch: torch::dot), so neither pays for a
/// generic broadcast in the loss's backward. Backward: g * gy (a scalar fast path).
Tensor<float> dot_loss(const Tensor<float>& y, const Tensor<float>& gy) {
    const Tensor<float> yc = moekd::detail::contiguous_data(y);
    const int64_t n = yc.numel(), chunk = 1 << 16;
    std::vector<double> part((n + chunk - 1) / chunk);
    moekd::detail::parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) {
        double s = 0;
        for (int64_t i = lo; i < hi; ++i) s += double(yc.data()[i]) * double(gy.data()[i]);
        part[lo / chunk] = s;
    });
    double s = 0;
    for (double p : part) s += p;
    return record<float>(Tensor<float>::scalar(float(s)), "dot_loss", {y}, [gy, shape = y.shape()](const Tensor<float>& g) {
        return std::vector<Tensor<float>>{mul(gy, g).reshape(shape)};
    });
}
constexpr double kCapacity = 1.25;

/// One moekd layer plus the same weights and inputs as raw buffers for the torch side.
struct Setup {
    int64_t N, D, F, E;
    std::shared_ptr<moe::MoELayer<float>> layer;
    Tensor<float> x, gy;
    std::vector<float> wg, w1, b1, w2, b2;  // stacked (E, ...)

    Setup(const Options& o, int64_t experts, bool dropless) : N(o.tokens), D(o.d), F(o.ff), E(experts) {
        Generator gen(1234 + experts);
        moe::MoEConfig c;
        c.d_model = D;
        c.ffn_dim = F;
        c.router.num_experts = E;
        c.router.top_k = 1;
        c.router.dropless = dropless;
        c.router.capacity_factor_train = kCapacity;
        c.balance = moe::BalanceLoss::Switch;
        c.balance_weight = kAuxWeight;
        c.name = "bench.moe";
        layer = std::make_shared<moe::MoELayer<float>>(c, gen);
        x = Tensor<float>::randn({N, D}, gen).requires_grad_();
        gy = Tensor<float>::randn({N, D}, gen);
        wg = layer->gate->weight.to_vector();
        for (auto& ex : *layer->experts) {
            auto app = [](std::vector<float>& v, const Tensor<float>& t) {
                const auto s = t.to_vector();
                v.insert(v.end(), s.begin(), s.end());
            };
            app(w1, ex->fc1->weight), app(b1, ex->fc1->bias), app(w2, ex->fc2->weight), app(b2, ex->fc2->bias);
        }
    }
    bool bf16 = false;  // the step inside Autocast(bf16)

    moe::MoEOutput<float> run() {
        layer->zero_grad();
        x.zero_grad();
        Autocast ac(bf16 ? Precision::bf16 : Precision::fp32);
        auto out = layer->forward_with_stats(x);
        (dot_loss(out.y, gy) + out.aux_loss).backward();
        return out;
    }
    void step() { run(); }
    /// The results in the torch side's order (0 y, 1 dx, 2 dwg, 3 dw1, 4 db1, 5 dw2, 6 db2).
    std::vector<float> result(int which, const Tensor<float>& y) const {
        auto grads = [&](auto pick, int64_t n) {
            std::vector<float> v;
            for (auto& ex : *layer->experts) {
                Tensor<float> g = pick(*ex).grad();
                const auto s = g.defined() ? g.to_vector() : std::vector<float>(n, 0.0f);
                v.insert(v.end(), s.begin(), s.end());
            }
            return v;
        };
        switch (which) {
            case 0: return y.to_vector();
            case 1: return x.grad().to_vector();
            case 2: return layer->gate->weight.grad().to_vector();
            case 3: return grads([](auto& ex) { return ex.fc1->weight; }, F * D);
            case 4: return grads([](auto& ex) { return ex.fc1->bias; }, F);
            case 5: return grads([](auto& ex) { return ex.fc2->weight; }, D * F);
            default: return grads([](auto& ex) { return ex.fc2->bias; }, D);
        }
    }
};

/// One step on each side from the same weights; prints the comparison. Returns false on a mismatch.
bool check(Setup& s, void* th, const char* name) {
    s.layer->zero_grad();
    s.x.zero_grad();
    auto out = s.layer->forward_with_stats(s.x);
    (dot_loss(out.y, s.gy) + out.aux_loss).backward();
    moe_torch_step(th);
    static const char* what[] = {"y", "dx", "dwg", "dw1", "db1", "dw2", "db2"};
    double worst = 0;
    std::string line;
    for (int w = 0; w < 7; ++w) {
        const auto a = s.result(w, out.y);
        std::vector<float> b(a.size());
        moe_torch_copy(th, w, b.data());
        const double err = max_rel_err(a, b);
        worst = std::max(worst, err);
        char buf[64];
        std::snprintf(buf, sizeof buf, " %s=%.1e", what[w], err);
        line += buf;
    }
    const double aux_err = std::abs(out.stats.balance_loss - moe_torch_aux(th)) / std::abs(moe_torch_aux(th));
    worst = std::max(worst, aux_err);
    const bool ok = worst <= 1e-4;
    std::printf("# check %s max_rel_err%s aux=%.1e dropped=%lld -> %s\n", name, line.c_str(), aux_err,
                static_cast<long long>(out.stats.dropped), ok ? "agree" : "DISAGREE");
    return ok;
}

/// bf16: moekd's and libtorch's bf16 steps against moekd's fp32 step on the same weights. Each
/// result within 2e-2 Frobenius-relative, or, for moekd, no further than 1.25x libtorch's own
/// error (<= 0.1): the results behind the ReLU's mask (dx, dw1, db1) are off by ~4% on both sides,
/// because a pre-activation within bf16's rounding of 0 (~0.3% of them) flips the mask and with
/// it a whole term. Prints the errors; returns false on a miss.
bool check_bf16(Setup& s, void* th, const char* name) {
    static const char* what[] = {"y", "dx", "dwg", "dw1", "db1", "dw2", "db2"};
    s.bf16 = false;
    auto ref_out = s.run();
    std::vector<std::vector<float>> ref;
    for (int w = 0; w < 7; ++w) ref.push_back(s.result(w, ref_out.y));
    s.bf16 = true;
    auto out = s.run();
    moe_torch_set_bf16(th, true);
    moe_torch_step(th);
    bool ok = true;
    std::string line;
    for (int w = 0; w < 7; ++w) {
        const auto a = s.result(w, out.y);
        std::vector<float> b(a.size());
        moe_torch_copy(th, w, b.data());
        const double em = frob_rel_err(a, ref[w]), et = frob_rel_err(b, ref[w]);
        if (!(em <= 2e-2 || (em <= 1.25 * et && et <= 0.1))) ok = false;
        char buf[96];
        std::snprintf(buf, sizeof buf, " %s=%.1e/%.1e", what[w], em, et);
        line += buf;
    }
    std::printf("# check %s bf16 frobenius_rel_err vs fp32 (moekd/torch)%s -> %s\n", name, line.c_str(),
                ok ? "agree" : "DISAGREE");
    return ok;
}

/// Times the moekd step and the torch step at ATen 1 and 2 threads, samples interleaved.
/// Returns {moekd, torch1, torch2} median seconds.
std::vector<double> race(Setup& s, void* th, int samples, int warmup) {
    for (int i = 0; i < warmup; ++i) {
        s.step();
        for (int t : {1, 2}) moe_torch_set_threads(t), moe_torch_step(th);
    }
    // Idle OpenBLAS (and OpenMP) threads keep spinning for ~0.1 s after a call and would steal
    // cores from whatever runs next in this process: after each switch of side, one untimed step
    // of the new side runs first (it also brings that side's buffers back into cache).
    std::vector<double> m, t1, t2;
    for (int i = 0; i < samples; ++i) {
        s.step();
        auto t0 = Clock::now();
        s.step();
        m.push_back(seconds_since(t0));
        for (int t : {1, 2}) {
            moe_torch_set_threads(t);
            moe_torch_step(th);
            t0 = Clock::now();
            moe_torch_step(th);
            (t == 1 ? t1 : t2).push_back(seconds_since(t0));
        }
    }
    moe_torch_set_threads(1);
    return {median(m), median(t1), median(t2)};
}

/// The floor under the scaling: the step's six per-expert GEMMs alone (fc1, fc2 forward; dW2, dA,
/// dW1, dX backward; no router, bias, activation or autograd), tokens split evenly over the
/// experts, experts as tasks on moe::num_threads() workers with single-threaded OpenBLAS inside,
/// fresh weight-gradient buffers every step (as after zero_grad). Median ms per step.
double expert_gemms_only(const Options& o, int64_t E, int samples) {
    const int64_t N = o.tokens, D = o.d, F = o.ff, n = N / E;
    using CM = moekd::detail::MatRef<const float>;
    using MM = moekd::detail::MatRef<float>;
    Generator gen(99);
    const Tensor<float> W1 = Tensor<float>::randn({E, F, D}, gen), W2 = Tensor<float>::randn({E, D, F}, gen);
    const Tensor<float> X = Tensor<float>::randn({E * n, D}, gen), dY = Tensor<float>::randn({E * n, D}, gen);
    Tensor<float> H = Tensor<float>::empty({E * n, F}), Y = Tensor<float>::empty({E * n, D});
    Tensor<float> dH = Tensor<float>::empty({E * n, F}), dX = Tensor<float>::empty({E * n, D});
    std::vector<double> v;
    for (int i = 0; i < samples + 1; ++i) {
        std::vector<Tensor<float>> dW1(E), dW2(E);
        const auto t0 = Clock::now();
        moekd::detail::run_tasks(E, true, [&](int64_t e, int) {
            const float *x = X.data() + e * n * D, *w1 = W1.data() + e * F * D, *w2 = W2.data() + e * D * F;
            moekd::detail::gemm(1.0f, CM{x, n, D, D, 1}, CM{w1, F, D, D, 1}.t(), 0.0f, MM{H.data() + e * n * F, n, F, F, 1});
            moekd::detail::gemm(1.0f, CM{H.data() + e * n * F, n, F, F, 1}, CM{w2, D, F, F, 1}.t(), 0.0f,
                                MM{Y.data() + e * n * D, n, D, D, 1});
        });
        moekd::detail::run_tasks(E, true, [&](int64_t e, int) {
            const float *x = X.data() + e * n * D, *gy = dY.data() + e * n * D, *a = H.data() + e * n * F;
            const float *w1 = W1.data() + e * F * D, *w2 = W2.data() + e * D * F;
            float* dh = dH.data() + e * n * F;
            dW2[e] = Tensor<float>::empty({D, F});
            dW1[e] = Tensor<float>::empty({F, D});
            moekd::detail::gemm(1.0f, CM{gy, n, D, D, 1}.t(), CM{a, n, F, F, 1}, 0.0f, MM{dW2[e].data(), D, F, F, 1});
            moekd::detail::gemm(1.0f, CM{gy, n, D, D, 1}, CM{w2, D, F, F, 1}, 0.0f, MM{dh, n, F, F, 1});
            moekd::detail::gemm(1.0f, CM{dh, n, F, F, 1}.t(), CM{x, n, D, D, 1}, 0.0f, MM{dW1[e].data(), F, D, D, 1});
            moekd::detail::gemm(1.0f, CM{dh, n, F, F, 1}, CM{w1, F, D, D, 1}, 0.0f, MM{dX.data() + e * n * D, n, D, D, 1});
        });
        if (i) v.push_back(seconds_since(t0));
    }
    return median(v) * 1e3;
}

/// Where the moekd step's time goes: each piece's forward and backward timed alone (median).
void profile(const Options& o, int64_t E) {
    Setup s(o, E, true);
    auto& l = *s.layer;
    const int reps = o.quick ? 3 : 9;
    auto time = [&](auto&& f) {
        std::vector<double> v;
        for (int i = 0; i < reps + 1; ++i) {
            auto t0 = Clock::now();
            f();
            if (i) v.push_back(seconds_since(t0));
        }
        return median(v) * 1e3;
    };
    const Tensor<float> x = s.x.detach();
    Tensor<float> logits, gates;
    Tensor<int64_t> idx;
    moe::PlanPtr plan;
    Tensor<float> xs, ys, y;
    const auto W = l.expert_weights();
    const double t_lin = time([&] { logits = moe::router_logits(x, l.gate->weight.detach()); });
    const double t_route = time([&] {
        moe::check_router_logits(logits, "bench");
        auto r = moe::softmax_topk(logits, 1, false);
        idx = r.experts, gates = r.gates;
    });
    const double t_plan = time([&] { plan = moe::make_dispatch_plan(idx, E, -1); });
    const double t_perm = time([&] { xs = moe::permute_tokens(x, plan); });
    const double t_ffn = time([&] { NoGrad ng; ys = moe::expert_ffn(xs, plan, W); });
    const double t_comb = time([&] { y = moe::combine_tokens(ys, gates, plan); });
    // backward of each op alone (its output made untimed, with leaf inputs)
    auto bwd = [&](auto&& make) {
        std::vector<double> v;
        for (int i = 0; i < reps + 1; ++i) {
            l.zero_grad();
            Tensor<float> out = make();
            const Tensor<float> g = s.gy.narrow(0, 0, out.size(0)).contiguous();
            const auto t0 = Clock::now();
            out.backward(g);
            if (i) v.push_back(seconds_since(t0));
        }
        return median(v) * 1e3;
    };
    Tensor<float> xs_leaf = xs.detach().clone().requires_grad_(), ys_leaf = ys.detach().clone().requires_grad_();
    Tensor<float> g_leaf = gates.detach().clone().requires_grad_(), x_leaf = x.clone().requires_grad_();
    const double b_ffn = bwd([&] { return moe::expert_ffn(xs_leaf, plan, W); });
    const double b_comb = bwd([&] { return moe::combine_tokens(ys_leaf, g_leaf, plan); });
    const double b_perm = bwd([&] { return moe::permute_tokens(x_leaf, plan); });
    const double total = time([&] { s.step(); });
    const double parts = t_lin + t_route + t_plan + t_perm + t_ffn + t_comb + b_ffn + b_comb + b_perm;
    const double gflop = 6.0 * 2.0 * double(s.N) * double(s.D) * double(s.F) / 1e9;
    std::printf("# profile E=%lld (ms, median of %d): step %.1f | router linear %.2f, softmax+top1+check %.2f, "
                "plan %.2f | permute fwd %.2f bwd %.2f | expert_ffn fwd %.1f bwd %.1f (%.0f GFLOP/s over its 6 "
                "GEMMs) | combine fwd %.2f bwd %.2f | rest (router backward, aux loss, loss, engine) %.1f\n",
                static_cast<long long>(E), reps, total, t_lin, t_route, t_plan, t_perm, b_perm, t_ffn, b_ffn,
                gflop / ((t_ffn + b_ffn) / 1e3), t_comb, b_comb, total - parts);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--quick") o.quick = true;
        else if (a == "--profile") o.profile = true;
        else if (a == "--no-einsum") o.einsum = false;
        else if (a == "--precision" && i + 1 < argc) {
            const std::string p = argv[++i];
            if (p != "fp32" && p != "bf16") std::fprintf(stderr, "--precision: fp32 or bf16, not '%s'\n", p.c_str()), std::exit(2);
            o.bf16 = p == "bf16";
        }
        else if (a == "--threads" && i + 1 < argc) o.threads = std::atoi(argv[++i]);
        else if (a == "--samples" && i + 1 < argc) o.samples = std::atoi(argv[++i]);
        else if (a == "--tokens" && i + 1 < argc) o.tokens = std::atoll(argv[++i]);
        else if (a == "--experts" && i + 1 < argc) {  // comma-separated, e.g. 8,64
            o.experts.clear();
            for (const char* p = argv[++i]; *p;) {
                o.experts.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
                if (*p == ',') ++p;
            }
        }
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--profile] [--no-einsum] [--precision fp32|bf16] [--threads N] [--samples S] "
                                 "[--tokens N] [--experts E1,E2,...]\n", argv[0]);
            std::exit(2);
        }
    }
    if (o.quick) o.tokens = std::min<int64_t>(o.tokens, 1024), o.experts = {4, 8};
    for (int64_t e : o.experts)
        if (e < 1) std::fprintf(stderr, "--experts: each count must be >= 1\n"), std::exit(2);
    if (o.samples <= 0) o.samples = o.quick ? 2 : 9;
    if (o.bf16) o.einsum = false;  // bf16: the efficient formulation only
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    openblas_set_num_threads(o.threads);
    moe::set_num_threads(o.threads);
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
    std::printf("# moe_bench: MoE FFN training step (forward + backward), top-1, ReLU, d=%lld ff=%lld, %lld tokens, "
                "Switch aux loss x %.2f; %s mode, %d samples\n",
                static_cast<long long>(o.d), static_cast<long long>(o.ff), static_cast<long long>(o.tokens),
                kAuxWeight, o.quick ? "quick" : "full", o.samples);
    std::printf("# threads: moekd moe::num_threads=%d openblas=%d | torch %s: ATen 1 and 2 (faster reported), "
                "openblas=%d\n", moe::num_threads(), openblas_get_num_threads(), moe_torch_version().c_str(),
                openblas_get_num_threads());
    std::printf("# env OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s (unset both for measurements, see BENCH.md)\n",
                core ? core : "(unset)", l2 ? l2 : "(unset)");
    if (o.bf16) {
        const Bf16Support sup = bf16_support();
        std::printf("# precision: bf16 (%s)\n", sup.ok ? sup.why.c_str() : "unavailable");
        if (!sup.ok) {  // nothing to race: say why, and do not fail a build without oneDNN
            std::printf("# skipped: bf16 cannot run here: %s\n", sup.why.c_str());
            return 0;
        }
    }
    if (o.profile) {
        for (int64_t E : o.experts) profile(o, E);
        return 0;
    }
    bool all_ok = true;
    std::vector<double> step_moekd, step_torch;
    for (int64_t E : o.experts) {
        for (int form = 0; form < (o.einsum ? 2 : 1); ++form) {
            Setup s(o, E, form == 0);
            s.bf16 = false;
            void* th = moe_torch_create(form, s.N, s.D, s.F, E, kCapacity, kAuxWeight, s.x.detach().data(),
                                        s.wg.data(), s.w1.data(), s.b1.data(), s.w2.data(), s.b2.data(),
                                        s.gy.data());
            const std::string name = "moe_e" + std::to_string(E) + (form ? "_einsum" : "") + (o.bf16 ? "_bf16" : "");
            moe_torch_set_threads(1);
            bool ok = check(s, th, name.c_str());  // fp32 first, both sides
            if (o.bf16) ok = check_bf16(s, th, name.c_str()) && ok;  // then both in bf16 (s.bf16 stays on)
            all_ok = all_ok && ok;
            const int samples = form ? std::max(1, std::min(o.samples, 3)) : o.samples;
            const auto t = race(s, th, samples, form ? 1 : 2);
            const double tok = double(s.N);
            const double best_torch = std::min(t[1], t[2]);
            std::printf("case=%s moekd=%.0f torch=%.0f unit=tokens/s ratio=%.2f torch_aten1=%.0f torch_aten2=%.0f "
                        "moekd_ms=%.1f torch_ms=%.1f\n",
                        name.c_str(), tok / t[0], tok / best_torch, best_torch / t[0], tok / t[1], tok / t[2],
                        t[0] * 1e3, best_torch * 1e3);
            std::fflush(stdout);
            if (form == 0) step_moekd.push_back(t[0]), step_torch.push_back(best_torch);
            moe_torch_destroy(th);
        }
    }
    if (step_moekd.size() >= 2)
        std::printf("case=moe_scaling_e%lld_over_e%lld%s moekd=%.3f torch=%.3f unit=time_ratio ratio=%.2f\n",
                    static_cast<long long>(o.experts.back()), static_cast<long long>(o.experts.front()), o.bf16 ? "_bf16" : "",
                    step_moekd.back() / step_moekd.front(), step_torch.back() / step_torch.front(),
                    (step_torch.back() / step_torch.front()) / (step_moekd.back() / step_moekd.front()));
    if (step_moekd.size() >= 2 && !o.bf16) {  // the same ratio for the expert GEMMs alone: what OpenBLAS allows
        const double lo = expert_gemms_only(o, o.experts.front(), o.samples);
        const double hi = expert_gemms_only(o, o.experts.back(), o.samples);
        std::printf("case=expert_gemms_only_scaling_e%lld_over_e%lld openblas=%.3f unit=time_ratio e%lld_ms=%.1f "
                    "e%lld_ms=%.1f\n",
                    static_cast<long long>(o.experts.back()), static_cast<long long>(o.experts.front()), hi / lo,
                    static_cast<long long>(o.experts.front()), lo, static_cast<long long>(o.experts.back()), hi);
    }
    if (!all_ok) {
        std::printf("# FAILED: the two sides disagree\n");
        return 1;
    }
    return 0;
}
