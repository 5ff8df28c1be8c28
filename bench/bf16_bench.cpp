// bf16_bench.cpp — the bf16 matrix product of moekd's autocast scope against its peers, on fp32
// square matrices A, B (n = 256, 512, 1024; --quick: 256):
//   moekd     matmul(A, B) inside moekd::Autocast(bf16): bf16 copies of A and B, oneDNN's
//             brgemm on moekd's pool, fp32 C
//   openblas  cblas_sgemm in fp32 (what moekd runs outside the scope)            ratio_sgemm
//   onednn    oneDNN's matmul called directly, bf16 A and B converted beforehand
//             (not timed), fp32 C, on its own OpenMP threads                      ratio_onednn
//   torch     torch.matmul of the fp32 tensors under CPU autocast to bf16 (libtorch, its
//             conversions timed as ours are; bench/bf16_bench_torch.cpp)          ratio_torch
// Checked before timing: moekd and oneDNN against sgemm of the bf16-rounded operands (only the
// order of the fp32 sums differs: max |diff| / max |C| <= 1e-5), libtorch likewise within its bf16
// output's rounding (<= 8e-3), and moekd against fp32 within bf16's tolerance (<= 2e-2).
// Output, one line per size (bench/README.md):
//   case=bf16_gemm_1024 moekd=<GFLOP/s> openblas=.. onednn=.. torch=.. unit=GFLOP/s ratio_sgemm=..
//   ratio_onednn=.. ratio_torch=..
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <moekd/ops/matmul.hpp>

// bench/bf16_bench_torch.cpp
struct Bf16TorchMm;
void bf16_torch_set_threads(int n);
int bf16_torch_threads();
Bf16TorchMm* bf16_torch_mm_new(const float* a, const float* b, int64_t M, int64_t K, int64_t N);
void bf16_torch_mm_free(Bf16TorchMm* s);
void bf16_torch_mm_run(Bf16TorchMm* s);
void bf16_torch_mm_result(Bf16TorchMm* s, float* out);

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
    int samples = 0;
};
Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") o.quick = true;
        else if (a == "--threads" && i + 1 < argc) o.threads = std::atoi(argv[++i]);
        else if (a == "--samples" && i + 1 < argc) o.samples = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--threads N] [--samples S]\n", argv[0]);
            std::exit(2);
        }
    }
    if (o.samples <= 0) o.samples = o.quick ? 3 : 11;
    return o;
}

/// oneDNN's matmul on pre-converted bf16 operands, fp32 C, row-major: the direct call.
struct DirectDnnl {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    dnnl::matmul prim;
    dnnl::memory a, b, c;
    DirectDnnl(int n, const moekd::bf16* pa, const moekd::bf16* pb, float* pc) {
        using dt = dnnl::memory::data_type;
        const dnnl::memory::desc amd({n, n}, dt::bf16, {n, 1}), bmd({n, n}, dt::bf16, {n, 1}), cmd({n, n}, dt::f32, {n, 1});
        prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(amd, bmd, cmd), eng));
        a = dnnl::memory(amd, eng, const_cast<moekd::bf16*>(pa));
        b = dnnl::memory(bmd, eng, const_cast<moekd::bf16*>(pb));
        c = dnnl::memory(cmd, eng, pc);
    }
    void run() {
        prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
        strm.wait();
    }
};

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse(argc, argv);
    const moekd::Bf16Support sup = moekd::bf16_support();
    std::printf("# bf16_bench: C = A @ B, fp32 in and out, square; %s mode, %d samples per side, %d threads per side\n",
                opt.quick ? "quick" : "full", opt.samples, opt.threads);
    std::printf("# moekd bf16: %s\n", sup.why.c_str());
    if (!sup.ok) {
        std::printf("# skipped: bf16 products do not run here\n");
        return 0;
    }
    moekd::set_num_threads(opt.threads);
    openblas_set_num_threads(opt.threads);
    bf16_torch_set_threads(opt.threads);
    std::printf("# threads: moekd pool %d, openblas %d, libtorch %d, oneDNN direct (OpenMP) %d\n", moekd::num_threads(),
                openblas_get_num_threads(), bf16_torch_threads(), opt.threads);
    const double sample_flop = opt.quick ? 3e8 : 6e9;
    bool all_ok = true;

    for (int n : opt.quick ? std::vector<int>{256} : std::vector<int>{256, 512, 1024}) {
        moekd::Generator gen(7 + n);
        const auto A = moekd::Tensor<float>::rand({n, n}, gen, -1, 1), B = moekd::Tensor<float>::rand({n, n}, gen, -1, 1);
        const size_t nn = size_t(n) * n;
        std::vector<moekd::bf16> a16(nn), b16(nn);
        std::vector<float> ar(nn), br(nn), c_ref(nn), c_blas(nn), c_dnnl(nn), c_torch(nn);
        for (size_t i = 0; i < nn; ++i) {
            a16[i] = moekd::bf16(A.data()[i]), b16[i] = moekd::bf16(B.data()[i]);
            ar[i] = float(a16[i]), br[i] = float(b16[i]);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, ar.data(), n, br.data(), n, 0.0f,
                    c_ref.data(), n);

        moekd::Tensor<float> c_moekd;
        auto run_moekd = [&] {
            moekd::Autocast ac(moekd::Precision::bf16);
            c_moekd = moekd::matmul(A, B);
        };
        auto run_blas = [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f,
                        c_blas.data(), n);
        };
        Bf16TorchMm* tm = bf16_torch_mm_new(A.data(), B.data(), n, n, n);
        auto run_torch = [&] { bf16_torch_mm_run(tm); };
        omp_set_num_threads(opt.threads);
        DirectDnnl direct(n, a16.data(), b16.data(), c_dnnl.data());
        auto run_dnnl = [&] { direct.run(); };

        // ---- verify before timing ----
        run_moekd(), run_blas(), run_torch(), run_dnnl();
        bf16_torch_mm_result(tm, c_torch.data());
        const double e_moekd = max_rel_err(c_moekd.data(), c_ref.data(), nn);
        const double e_dnnl = max_rel_err(c_dnnl.data(), c_ref.data(), nn);
        const double e_torch = max_rel_err(c_torch.data(), c_ref.data(), nn);
        const double e_fp32 = max_rel_err(c_moekd.data(), c_blas.data(), nn);
        const bool ok = e_moekd <= 1e-5 && e_dnnl <= 1e-5 && e_torch <= 8e-3 && e_fp32 <= 2e-2;
        all_ok = all_ok && ok;
        std::printf("# check bf16_gemm_%d max_rel_err vs sgemm(bf16(A), bf16(B)): moekd=%.2e onednn=%.2e torch=%.2e; "
                    "moekd vs fp32=%.2e -> %s\n",
                    n, e_moekd, e_dnnl, e_torch, e_fp32, ok ? "agree" : "DISAGREE");

        // ---- time: moekd, OpenBLAS and libtorch interleaved; oneDNN direct (OpenMP) in its own block ----
        const double flop = 2.0 * n * n * n;
        const int inner = std::max(1, int(sample_flop / flop));
        std::vector<double> tm_, tb, tt, td;
        for (int w = 0; w < 2; ++w) run_moekd(), run_blas(), run_torch();
        for (int s = 0; s < opt.samples; ++s) {
            auto t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_moekd();
            tm_.push_back(seconds_since(t0) / inner);
            t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_blas();
            tb.push_back(seconds_since(t0) / inner);
            t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_torch();
            tt.push_back(seconds_since(t0) / inner);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(opt.quick ? 20 : 200));
        for (int w = 0; w < 2; ++w) run_dnnl();
        for (int s = 0; s < opt.samples; ++s) {
            const auto t0 = Clock::now();
            for (int i = 0; i < inner; ++i) run_dnnl();
            td.push_back(seconds_since(t0) / inner);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(opt.quick ? 20 : 200));
        bf16_torch_mm_free(tm);
        const double gm = flop / median(tm_) * 1e-9, gb = flop / median(tb) * 1e-9, gt = flop / median(tt) * 1e-9,
                     gd = flop / median(td) * 1e-9;
        std::printf("case=bf16_gemm_%d moekd=%.1f openblas=%.1f onednn=%.1f torch=%.1f unit=GFLOP/s ratio_sgemm=%.3f "
                    "ratio_onednn=%.3f ratio_torch=%.3f\n",
                    n, gm, gb, gd, gt, gm / gb, gm / gd, gm / gt);
        std::fflush(stdout);
    }
    if (!all_ok) {
        std::fprintf(stderr, "bf16_bench: results disagree (see the # check lines)\n");
        return 1;
    }
    return 0;
}
