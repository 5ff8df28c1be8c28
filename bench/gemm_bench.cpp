// gemm_bench.cpp — fp32 GEMM microbenchmark: moekd::matmul against OpenBLAS cblas_sgemm called
// directly (the peer: same library moekd dispatches to) and against Eigen's own GEMM without BLAS
// (bench/gemm_bench_eigen.cpp). Square sizes 256, 512, 1024, 2048, plus linear_1024 = X @ W^T
// (--quick: 256, 512 and linear_256, few repetitions, for CI). Every side is checked against the others (and the naive reference at
// small sizes) before timing; then warm-up, then the median of several samples. moekd and
// OpenBLAS samples are interleaved (same thread pool, same noise); the Eigen/OpenMP side runs in
// its own block after a pause, so idle OpenBLAS threads that still spin do not steal its cores.
// Output, one line per size (see bench/README.md):
//   case=gemm_1024 moekd=<GFLOP/s> openblas=<GFLOP/s> eigen=<GFLOP/s> unit=GFLOP/s ratio=<moekd/openblas> ratio_eigen=<moekd/eigen>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include <moekd/ops/matmul.hpp>

// bench/gemm_bench_eigen.cpp (Eigen without BLAS, OpenMP)
void bench_eigen_set_threads(int n);
int bench_eigen_threads();
int bench_omp_max_threads();
void bench_eigen_sgemm(int n, const float* a, const float* b, float* c, bool trans_b);

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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
    int samples = 0;  // 0: default for the mode
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--quick") o.quick = true;
        else if (a == "--threads" && i + 1 < argc) o.threads = std::atoi(argv[++i]);
        else if (a == "--samples" && i + 1 < argc) o.samples = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--threads N] [--samples S]\n", argv[0]);
            std::exit(2);
        }
    }
    if (o.samples <= 0) o.samples = o.quick ? 3 : 15;
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse(argc, argv);
    openblas_set_num_threads(opt.threads);
    bench_eigen_set_threads(opt.threads);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
#ifdef MOEKD_BLAS
    const char* moekd_gemm = "Eigen maps -> OpenBLAS sgemm (MOEKD_BLAS=1)";
#else
    const char* moekd_gemm = "Eigen built-in GEMM (MOEKD_BLAS off: no OpenMP here, 1 thread)";
#endif
    std::printf("# gemm_bench: fp32 C = A @ B, square, row-major; %s mode, %d samples per side\n",
                opt.quick ? "quick" : "full", opt.samples);
    std::printf("# threads: openblas_get_num_threads=%d omp_get_max_threads=%d Eigen::nbThreads=%d\n",
                openblas_get_num_threads(), bench_omp_max_threads(), bench_eigen_threads());
    std::printf("# openblas core=%s config=%s\n", openblas_get_corename(), openblas_get_config());
    std::printf("# env OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s (unset both for measurements, see BENCH.md)\n",
                coretype ? coretype : "(unset)", l2 ? l2 : "(unset)");
    std::printf("# moekd matmul: %s\n", moekd_gemm);

    // gemm_<n>: matmul(A, B). linear_<n>: linear(X, W) = X @ W^T, the product every nn layer makes
    // (W read transposed in place: cblas_sgemm with CblasTrans on the peer side).
    struct Case {
        std::string name;
        int n;
        bool linear;
    };
    std::vector<Case> cases;
    for (int n : opt.quick ? std::vector<int>{256, 512} : std::vector<int>{256, 512, 1024, 2048})
        cases.push_back({"gemm_" + std::to_string(n), n, false});
    cases.push_back({opt.quick ? "linear_256" : "linear_1024", opt.quick ? 256 : 1024, true});
    const double sample_flop = opt.quick ? 5e8 : 1e10;  // work per timed sample (~25 ms at 400 GFLOP/s)
    const auto pause = std::chrono::milliseconds(opt.quick ? 20 : 250);
    bool all_ok = true;

    for (const Case& cs : cases) {
        const int n = cs.n;
        moekd::Generator gen(42 + n);
        auto A = moekd::Tensor<float>::rand({n, n}, gen, -1, 1);
        auto B = moekd::Tensor<float>::rand({n, n}, gen, -1, 1);
        const size_t nn = size_t(n) * n;
        std::vector<float> c_blas(nn), c_eigen(nn);
        const double flop = 2.0 * n * n * n;
        const int inner = std::max(1, int(sample_flop / flop));

        // for linear cases B holds W: (out, in), and the product is A @ B^T
        auto run_moekd = [&] { return cs.linear ? moekd::linear(A, B) : moekd::matmul(A, B); };
        auto run_blas = [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, cs.linear ? CblasTrans : CblasNoTrans, n, n, n, 1.0f, A.data(), n,
                        B.data(), n, 0.0f, c_blas.data(), n);
        };
        auto run_eigen = [&] { bench_eigen_sgemm(n, A.data(), B.data(), c_eigen.data(), cs.linear); };

        // ---- verify before timing ----
        moekd::Tensor<float> c_moekd = run_moekd();
        run_blas();
        run_eigen();
        const double e_moekd = max_rel_err(c_moekd.data(), c_blas.data(), nn);
        const double e_eigen = max_rel_err(c_eigen.data(), c_blas.data(), nn);
        double e_ref = 0;
        if (n <= 512) {  // naive loop in double accumulation: ground truth for the peer too
            moekd::Tensor<float> ref = moekd::detail::matmul_reference(A, cs.linear ? B.t() : B);
            e_ref = max_rel_err(c_blas.data(), ref.data(), nn);
        }
        const double tol = 1e-5;
        const bool ok = e_moekd <= tol && e_eigen <= tol && e_ref <= tol;
        all_ok = all_ok && ok;
        char ref_txt[32] = "skipped";
        if (n <= 512) std::snprintf(ref_txt, sizeof ref_txt, "%.2e", e_ref);
        std::printf("# check %s max_rel_err moekd_vs_openblas=%.2e eigen_vs_openblas=%.2e openblas_vs_reference=%s -> %s\n",
                    cs.name.c_str(), e_moekd, e_eigen, ref_txt, ok ? "agree" : "DISAGREE");

        // ---- time: moekd and OpenBLAS interleaved, then Eigen/OpenMP in its own block ----
        for (int w = 0; w < 2; ++w) run_moekd(), run_blas();
        std::vector<double> t_moekd, t_blas, t_eigen;
        for (int s = 0; s < opt.samples; ++s) {
            auto t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_moekd();
            t_moekd.push_back(seconds_since(t0) / inner);
            t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_blas();
            t_blas.push_back(seconds_since(t0) / inner);
        }
        std::this_thread::sleep_for(pause);
        for (int w = 0; w < 2; ++w) run_eigen();
        for (int s = 0; s < opt.samples; ++s) {
            auto t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_eigen();
            t_eigen.push_back(seconds_since(t0) / inner);
        }
        std::this_thread::sleep_for(pause);

        const double g_moekd = flop / median(t_moekd) * 1e-9;
        const double g_blas = flop / median(t_blas) * 1e-9;
        const double g_eigen = flop / median(t_eigen) * 1e-9;
        std::printf("case=%s moekd=%.1f openblas=%.1f eigen=%.1f unit=GFLOP/s ratio=%.3f ratio_eigen=%.3f\n",
                    cs.name.c_str(), g_moekd, g_blas, g_eigen, g_moekd / g_blas, g_moekd / g_eigen);
        std::fflush(stdout);
    }
    if (!all_ok) {
        std::fprintf(stderr, "gemm_bench: results disagree (see the # check lines)\n");
        return 1;
    }
    return 0;
}
