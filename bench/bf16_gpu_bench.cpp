// bf16_gpu_bench.cpp — the bf16 expert GEMMs on a GPU as a fraction of cuBLAS's own bf16 rate
// (issue 15: "the bf16 expert GEMMs as a fraction of cuBLAS's bf16 rate on one GEMM of the same
// FLOPs"):
//   moekd   moe::expert_ffn forward inside Autocast(bf16, Device::CUDA): stacked weights, every
//           expert the same rows, so two strided-batched bf16 GEMMs (kernels/gemm_bf16.cu: the
//           operands packed to bf16, cublasGemmStridedBatchedEx) with the bias + GELU kernel between
//   cublas  one cublasGemmEx on operands packed to bf16 beforehand, (S, 2D) @ (2D, F) -> fp32:
//           the same 4 S D F FLOPs as the two expert layers, nothing else
// ratio = moekd's GFLOP/s over cuBLAS's (higher is better; 1 would be cuBLAS's rate).
// Both sides are checked before they are timed: the device expert_ffn against the CPU's bf16 one
// (relative norm < 1e-3), the cuBLAS product against moekd::matmul in a CUDA bf16 scope on the same
// bf16-exact operands (< 1e-5). scripts/gpu_check.sh runs it with no arguments (8192 tokens,
// d 256, ff 1024, E = 8, 16, 64); --quick is the emulated build's smoke test (tiny sizes).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <moekd/cuda.hpp>
#include <moekd/moe/moe_layer.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;

namespace {

using Clock = std::chrono::steady_clock;

double rel_norm(const Tensor<float>& got, const Tensor<float>& want) {
    const std::vector<float> g = got.detach().to(Device::CPU).contiguous().to_vector();
    const std::vector<float> w = want.detach().to(Device::CPU).contiguous().to_vector();
    double d = 0, n = 0;
    for (size_t i = 0; i < g.size(); ++i) d += (double(g[i]) - w[i]) * (double(g[i]) - w[i]), n += double(w[i]) * w[i];
    return std::sqrt(d / std::max(n, 1e-300));
}

/// The median of `iters` timed calls of f (after `warmup`), each ended by a device synchronisation.
template <class F>
double median_seconds(F&& f, int warmup, int iters) {
    for (int i = 0; i < warmup; ++i) f();
    cuda::synchronize();
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
        const auto t0 = Clock::now();
        f();
        cuda::synchronize();
        t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

bool check(const char* what, double err, double tol) {
    std::printf("check: %s: relative error %.2e (tolerance %.0e) %s\n", what, err, tol, err < tol ? "ok" : "FAILED");
    return err < tol;
}

void cublas_ok(cublasStatus_t st, const char* call) {
    if (st != CUBLAS_STATUS_SUCCESS) throw Error(msg(call, ": ", cublasGetStatusString(st)));
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int64_t S = quick ? 256 : 8192, D = quick ? 32 : 256, F = quick ? 64 : 1024;
    const std::vector<int64_t> experts = quick ? std::vector<int64_t>{4} : std::vector<int64_t>{8, 16, 64};
    const int warmup = quick ? 1 : 5, iters = quick ? 3 : 30;
    if (cuda::device_count() == 0) {
        std::printf("bf16_gpu_bench: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
        return 1;
    }
    const Bf16Support sup = bf16_support(Device::CUDA);
    std::printf("%s\nbf16: %s\nshape: %lld tokens, d %lld, ff %lld, top-1, uniform rows%s\n", cuda::build_info().c_str(),
                sup.why.c_str(), (long long)S, (long long)D, (long long)F, quick ? " (--quick)" : "");
    if (!sup.ok) return 1;
    try {
        Generator gen(1);
        bool ok = true;

        // ---- the peer: one bf16 GEMM of the same FLOPs, operands packed before timing ----
        const int64_t K = 2 * D;
        Tensor<float> a = Tensor<float>::randn({S, K}, gen), b = Tensor<float>::randn({K, F}, gen, 0, 0.05);
        std::vector<float> av = a.to_vector(), bv = b.to_vector();
        std::vector<bf16> a16(av.size()), b16(bv.size());
        for (size_t i = 0; i < av.size(); ++i) a16[i] = bf16(av[i]), av[i] = float(a16[i]);  // bf16-exact values
        for (size_t i = 0; i < bv.size(); ++i) b16[i] = bf16(bv[i]), bv[i] = float(b16[i]);
        void *da = nullptr, *db = nullptr, *dc = nullptr;
        MOEKD_CUDA_CHECK(cudaMalloc(&da, a16.size() * 2));
        MOEKD_CUDA_CHECK(cudaMalloc(&db, b16.size() * 2));
        MOEKD_CUDA_CHECK(cudaMalloc(&dc, size_t(S * F) * 4));
        MOEKD_CUDA_CHECK(cudaMemcpy(da, a16.data(), a16.size() * 2, cudaMemcpyHostToDevice));
        MOEKD_CUDA_CHECK(cudaMemcpy(db, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice));
        cublasHandle_t h = nullptr;
        cublas_ok(cublasCreate(&h), "cublasCreate");
        const float one = 1.0f, zero = 0.0f;
        const auto peer = [&] {  // row-major (S, K) @ (K, F) as column-major (F, K) @ (K, S)
            cublas_ok(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(F), int(S), int(K), &one, db, CUDA_R_16BF, int(F),
                                   da, CUDA_R_16BF, int(K), &zero, dc, CUDA_R_32F, int(F), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
        };
        peer();
        std::vector<float> cv(size_t(S * F));
        MOEKD_CUDA_CHECK(cudaMemcpy(cv.data(), dc, cv.size() * 4, cudaMemcpyDeviceToHost));
        {
            const Tensor<float> ad = Tensor<float>::from_vector(av, {S, K}).to(Device::CUDA);
            const Tensor<float> bd = Tensor<float>::from_vector(bv, {K, F}).to(Device::CUDA);
            Autocast ac(Precision::bf16, Device::CUDA);
            ok &= check("cuBLAS GEMM vs moekd::matmul (CUDA bf16 scope)",
                        rel_norm(Tensor<float>::from_vector(cv, {S, F}), matmul(ad, bd)), 1e-5);
        }
        const double peer_s = median_seconds(peer, warmup, iters);
        const double flops = 4.0 * double(S) * double(D) * double(F);

        // ---- moekd: the expert FFN of E stacked experts, forward ----
        for (const int64_t E : experts) {
            std::vector<int64_t> route(static_cast<size_t>(S));
            for (int64_t t = 0; t < S; ++t) route[size_t(t)] = t % E;
            const Tensor<int64_t> r = Tensor<int64_t>::from_vector(route, {S, 1});
            const moe::PlanPtr pc = moe::make_dispatch_plan(r, E, -1), pd = moe::make_dispatch_plan(r.to(Device::CUDA), E, -1);
            const Tensor<float> x = Tensor<float>::randn({S, D}, gen);
            moe::ExpertWeights<float> wc, wd;
            wc.W1 = Tensor<float>::randn({E, F, D}, gen, 0, 0.06), wc.B1 = Tensor<float>::randn({E, F}, gen, 0, 0.1);
            wc.W2 = Tensor<float>::randn({E, D, F}, gen, 0, 0.03), wc.B2 = Tensor<float>::randn({E, D}, gen, 0, 0.1);
            wd.W1 = wc.W1.to(Device::CUDA), wd.B1 = wc.B1.to(Device::CUDA), wd.W2 = wc.W2.to(Device::CUDA),
            wd.B2 = wc.B2.to(Device::CUDA);
            const Tensor<float> xd = x.to(Device::CUDA);
            NoGrad ng;
            Autocast ac(Precision::bf16, Device::CUDA);
            const Tensor<float> y_cpu = moe::expert_ffn(x, pc, wc, nn::Activation::GELU);
            const Tensor<float> y_dev = moe::expert_ffn(xd, pd, wd, nn::Activation::GELU);
            ok &= check(("expert_ffn E " + std::to_string(E) + ": CUDA bf16 vs CPU bf16").c_str(), rel_norm(y_dev, y_cpu),
                        1e-3);
            const double s = median_seconds([&] { (void)moe::expert_ffn(xd, pd, wd, nn::Activation::GELU); }, warmup, iters);
            std::printf("case=bf16_expert_ffn_fwd_E%lld moekd=%.1f cublas=%.1f unit=GFLOP/s ratio=%.3f\n", (long long)E,
                        flops / s * 1e-9, flops / peer_s * 1e-9, peer_s / s);
        }
        cublasDestroy(h);
        cudaFree(da), cudaFree(db), cudaFree(dc);
        if (!ok) {
            std::printf("bf16_gpu_bench: a check FAILED: no timing is valid\n");
            return 1;
        }
    } catch (const std::exception& e) {
        std::printf("bf16_gpu_bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
