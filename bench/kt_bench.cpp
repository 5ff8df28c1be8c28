// kt_bench.cpp — knowledge-transfer losses and SVD: moekd against libtorch (bench/kt_bench_torch.cpp,
// linked into the same process so both sides share inputs, threads, BLAS and machine noise).
//
//   symkl     symmetric KL forward + backward, 4096 tokens x 32000 vocabulary, fp32
//             (moekd::symmetric_kl, fused) vs the naive PyTorch formulation (log_softmax twice,
//             F.kl_div both ways) and a leaner one ((p - q) * (la - lb)); goal >= 10x the naive
//   relation  cosine-relation loss forward + backward, 32 groups x 128 tokens, D = 768, teacher
//             detached (moekd::relation_loss) vs F.normalize + bmm + mean((Gs - Gt)^2); goal >= 1.5x
//   svd       8 matrices 256 x 1024 (moekd::linalg::svd, BDCSVD) vs torch::linalg::svd
//             (full_matrices=false, LAPACK gesdd); goal: no slower
// Every case checks that the two sides agree (loss, gradients / singular values) before timing,
// warms up, then interleaves samples of every side and reports medians. libtorch runs at ATen
// 1 and 2 threads (OpenBLAS at --threads for both sides) and the best of them is the peer.
// Output (see /work/shared/BENCH.md):
//   case=<name> moekd=<v> torch=<v> unit=tokens/s ratio=<moekd/torch> [torch_<variant>=<v> ...]
// Exit code 1 when the sides disagree. --quick: small sizes, for a ctest smoke run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <moekd/autograd/engine.hpp>
#include <moekd/linalg/svd.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/losses/relation.hpp>

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

// bench/kt_bench_torch.cpp
void kt_torch_set_threads(int n);
int kt_torch_threads();
struct KtTorchKl;
KtTorchKl* kt_torch_kl_new(const float* a, const float* b, int64_t rows, int64_t V);
double kt_torch_kl_run(KtTorchKl* s, bool efficient);
void kt_torch_kl_grads(KtTorchKl* s, float* ga, float* gb);
void kt_torch_kl_free(KtTorchKl* s);
struct KtTorchRel;
KtTorchRel* kt_torch_rel_new(const float* s, const float* t, int64_t G, int64_t N, int64_t Ds, int64_t Dt);
double kt_torch_rel_run(KtTorchRel* r);
void kt_torch_rel_grad(KtTorchRel* r, float* gs);
void kt_torch_rel_free(KtTorchRel* r);
struct KtTorchSvd;
KtTorchSvd* kt_torch_svd_new(const float* A, int64_t B, int64_t M, int64_t N);
void kt_torch_svd_run(KtTorchSvd* s);
void kt_torch_svd_values(KtTorchSvd* s, float* S);
void kt_torch_svd_free(KtTorchSvd* s);

using namespace moekd;

namespace {

using Clock = std::chrono::steady_clock;

double time_once(const std::function<void()>& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

/// max |x - y| / max |y|
double max_rel_err(const float* x, const float* y, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num = std::max(num, std::abs(double(x[i]) - double(y[i])));
        den = std::max(den, std::abs(double(y[i])));
    }
    return den > 0 ? num / den : num;
}

struct Options {
    bool quick = false;
    int threads = 2;
    int samples = 0;
    std::string only;  // "", "symkl", "relation", "svd"
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") o.quick = true;
        else if (a == "--threads" && i + 1 < argc) o.threads = std::atoi(argv[++i]);
        else if (a == "--samples" && i + 1 < argc) o.samples = std::atoi(argv[++i]);
        else if (a == "--case" && i + 1 < argc) o.only = argv[++i];
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--threads N] [--samples S] [--case symkl|relation|svd]\n",
                         argv[0]);
            std::exit(2);
        }
    }
    if (o.samples <= 0) o.samples = o.quick ? 2 : 5;
    return o;
}

/// One side of a race: a name, its timed body, its samples.
struct Side {
    std::string name;
    int torch_threads;  // 0: a moekd side
    std::function<void()> run;
    std::vector<double> t;
};

/// Warm-up, then `samples` interleaved rounds over every side; fills each side's t.
void race(std::vector<Side>& sides, int samples) {
    for (auto& s : sides) {
        if (s.torch_threads) kt_torch_set_threads(s.torch_threads);
        s.run();
    }
    for (int k = 0; k < samples; ++k)
        for (auto& s : sides) {
            if (s.torch_threads) kt_torch_set_threads(s.torch_threads);
            s.t.push_back(time_once(s.run));
        }
}

/// Prints the case line: moekd vs the fastest torch side, plus every torch side, as rates.
void report(const std::string& name, std::vector<Side>& sides, double work, const char* unit,
            const std::string& goal_side = "") {
    const double m = work / median(sides[0].t);
    double best = 0;
    std::string extra, goal;
    for (size_t i = 1; i < sides.size(); ++i) {
        const double r = work / median(sides[i].t);
        best = std::max(best, r);
        char buf[160];
        std::snprintf(buf, sizeof buf, " torch_%s=%.4g", sides[i].name.c_str(), r);
        extra += buf;
    }
    if (!goal_side.empty()) {  // the ratio against the best thread setting of one formulation
        double g = 0;
        for (size_t i = 1; i < sides.size(); ++i)
            if (sides[i].name.rfind(goal_side, 0) == 0) g = std::max(g, work / median(sides[i].t));
        char buf[96];
        std::snprintf(buf, sizeof buf, " ratio_%s=%.3g", goal_side.c_str(), m / g);
        goal = buf;
    }
    std::printf("case=%s moekd=%.4g torch=%.4g unit=%s ratio=%.3g%s%s\n", name.c_str(), m, best, unit, m / best,
                goal.c_str(), extra.c_str());
    std::fflush(stdout);
}

// ---- symmetric KL ----------------------------------------------------------------------------
bool bench_symkl(const Options& o) {
    const int64_t rows = o.quick ? 256 : 4096, V = o.quick ? 8000 : 32000;
    Generator gen(1);
    Tensor<float> a = Tensor<float>::randn({rows, V}, gen, 0.0, 2.0), b = Tensor<float>::randn({rows, V}, gen, 0.0, 2.0);
    a.requires_grad_();
    b.requires_grad_();
    KtTorchKl* tk = kt_torch_kl_new(a.data(), b.data(), rows, V);
    auto moekd_run = [&] {
        a.zero_grad();
        b.zero_grad();
        Tensor<float> l = symmetric_kl(a, b);
        l.backward();
    };
    // agreement: loss and both gradients against both torch formulations
    moekd_run();
    const float loss = symmetric_kl(a, b).item();
    std::vector<float> ga(rows * V), gb(rows * V);
    bool ok = true;
    for (bool eff : {false, true}) {
        kt_torch_set_threads(o.threads);
        const double tl = kt_torch_kl_run(tk, eff);
        kt_torch_kl_grads(tk, ga.data(), gb.data());
        const double el = std::abs(loss - tl) / std::abs(tl);
        const double ea = max_rel_err(a.grad().data(), ga.data(), ga.size());
        const double eb = max_rel_err(b.grad().data(), gb.data(), gb.size());
        const bool agree = el < 1e-5 && ea < 1e-4 && eb < 1e-4;
        std::printf("# check symkl vs torch %s: loss %.7g vs %.7g rel_err=%.2e grad_a=%.2e grad_b=%.2e -> %s\n",
                    eff ? "efficient" : "naive", loss, tl, el, ea, eb, agree ? "agree" : "DISAGREE");
        ok = ok && agree;
    }
    std::vector<float>().swap(ga);
    std::vector<float>().swap(gb);
    std::vector<Side> sides{{"moekd", 0, moekd_run, {}}};
    for (int th : {1, 2})
        sides.push_back({"naive_aten" + std::to_string(th), th, [&] { kt_torch_kl_run(tk, false); }, {}});
    for (int th : {1, 2})
        sides.push_back({"efficient_aten" + std::to_string(th), th, [&] { kt_torch_kl_run(tk, true); }, {}});
    race(sides, o.samples);
    const double t = median(sides[0].t);
    std::printf("# symkl moekd: %.1f ms per forward+backward, %.1f GB/s of compulsory traffic "
                "(read a, b twice, write two gradients)\n",
                t * 1e3, 6.0 * 4.0 * double(rows * V) / t / 1e9);
    report("symkl_fwd_bwd_" + std::to_string(rows) + "x" + std::to_string(V), sides, double(rows), "tokens/s",
           "naive");
    kt_torch_kl_free(tk);
    return ok;
}

// ---- cosine relation -------------------------------------------------------------------------
bool bench_relation(const Options& o) {
    const int64_t G = o.quick ? 4 : 32, N = 128, Ds = 768, Dt = 768;
    Generator gen(2);
    Tensor<float> s = Tensor<float>::randn({G, N, Ds}, gen), t = Tensor<float>::randn({G, N, Dt}, gen);
    // correlated sides, as a student imitating its teacher would be
    for (int64_t i = 0; i < s.numel(); ++i) s.data()[i] = 0.5f * s.data()[i] + t.data()[i];
    s.requires_grad_();
    KtTorchRel* tr = kt_torch_rel_new(s.data(), t.data(), G, N, Ds, Dt);
    auto moekd_run = [&] {
        s.zero_grad();
        relation_loss(s, t).backward();
    };
    moekd_run();
    const float loss = relation_loss(s, t).item();
    kt_torch_set_threads(o.threads);
    const double tl = kt_torch_rel_run(tr);
    std::vector<float> gs(G * N * Ds);
    kt_torch_rel_grad(tr, gs.data());
    const double el = std::abs(loss - tl) / std::abs(tl), eg = max_rel_err(s.grad().data(), gs.data(), gs.size());
    const bool ok = el < 1e-5 && eg < 1e-4;
    std::printf("# check relation vs torch: loss %.7g vs %.7g rel_err=%.2e grad=%.2e -> %s\n", loss, tl, el, eg,
                ok ? "agree" : "DISAGREE");
    std::vector<Side> sides{{"moekd", 0, moekd_run, {}}};
    for (int th : {1, 2}) sides.push_back({"aten" + std::to_string(th), th, [&] { kt_torch_rel_run(tr); }, {}});
    race(sides, o.quick ? o.samples : 4 * o.samples);
    const double sec = median(sides[0].t);
    const double flops = double(G) * (2.0 * N * N * Ds + 2.0 * N * N * Dt + 2.0 * N * N * Ds);  // 2 Grams + 1 grad GEMM
    std::printf("# relation moekd: %.2f ms per forward+backward, %.1f GFLOP/s in its GEMMs\n", sec * 1e3,
                flops / sec / 1e9);
    report("relation_fwd_bwd_" + std::to_string(G) + "x" + std::to_string(N) + "_d" + std::to_string(Ds), sides,
           double(G * N), "tokens/s");
    kt_torch_rel_free(tr);
    return ok;
}

// ---- SVD -------------------------------------------------------------------------------------
bool bench_svd(const Options& o) {
    const int64_t B = o.quick ? 2 : 8, M = 256, N = o.quick ? 512 : 1024, K = std::min(M, N);
    Generator gen(3);
    Tensor<float> A = Tensor<float>::randn({B, M, N}, gen);
    KtTorchSvd* ts = kt_torch_svd_new(A.data(), B, M, N);
    linalg::SVD<float> r;
    auto moekd_run = [&] { r = linalg::svd(A); };
    moekd_run();
    kt_torch_set_threads(o.threads);
    kt_torch_svd_run(ts);
    std::vector<float> S(B * K);
    kt_torch_svd_values(ts, S.data());
    const double es = max_rel_err(r.S.data(), S.data(), S.size());
    // reconstruction of the first matrix: ||A - U S Vt||_F / ||A||_F
    double num = 0, den = 0;
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double x = 0;
            for (int64_t k = 0; k < K; ++k) x += double(r.U.data()[i * K + k]) * r.S.data()[k] * r.Vt.data()[k * N + j];
            num += (x - A.data()[i * N + j]) * (x - A.data()[i * N + j]);
            den += double(A.data()[i * N + j]) * A.data()[i * N + j];
        }
    const double rec = std::sqrt(num / den);
    const bool ok = es < 1e-4 && rec < 1e-4;
    std::printf("# check svd vs torch: singular values rel_err=%.2e, moekd reconstruction %.2e -> %s\n", es, rec,
                ok ? "agree" : "DISAGREE");
    std::vector<Side> sides{{"moekd", 0, moekd_run, {}}};
    for (int th : {1, 2}) sides.push_back({"aten" + std::to_string(th), th, [&] { kt_torch_svd_run(ts); }, {}});
    race(sides, o.samples);
    std::printf("# svd moekd: %.1f ms per batch of %lld\n", median(sides[0].t) * 1e3, static_cast<long long>(B));
    report("svd_" + std::to_string(B) + "x" + std::to_string(M) + "x" + std::to_string(N), sides, double(B),
           "matrices/s");
    kt_torch_svd_free(ts);
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    openblas_set_num_threads(o.threads);
    setenv("MOEKD_NUM_THREADS", std::to_string(o.threads).c_str(), 0);  // an explicit setting wins
    const char* ct = std::getenv("OPENBLAS_CORETYPE");
    std::printf("# threads: moekd=%d openblas=%d aten=1,2 (raced)  OPENBLAS_CORETYPE=%s%s\n",
                moekd::num_threads(), openblas_get_num_threads(), ct ? ct : "(unset)",
                o.quick ? "  [--quick sizes]" : "");
    bool ok = true;
    if (o.only.empty() || o.only == "symkl") ok = bench_symkl(o) && ok;
    if (o.only.empty() || o.only == "relation") ok = bench_relation(o) && ok;
    if (o.only.empty() || o.only == "svd") ok = bench_svd(o) && ok;
    return ok ? 0 : 1;
}
