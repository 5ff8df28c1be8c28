// bf16_bench_torch.cpp — the libtorch side of bench/bf16_bench.cpp: C = A @ B of fp32 tensors
// under CPU autocast to bf16 (what a PyTorch user writes: torch.autocast("cpu", torch.bfloat16)),
// on the caller's buffers (from_blob). Its own translation unit: never sees moekd's headers.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cstring>

void bf16_torch_set_threads(int n) { at::set_num_threads(n); }
int bf16_torch_threads() { return at::get_num_threads(); }

struct Bf16TorchMm {
    torch::Tensor a, b, c;
};

Bf16TorchMm* bf16_torch_mm_new(const float* a, const float* b, int64_t M, int64_t K, int64_t N) {
    auto* s = new Bf16TorchMm;
    s->a = torch::from_blob(const_cast<float*>(a), {M, K}, torch::kFloat32);
    s->b = torch::from_blob(const_cast<float*>(b), {K, N}, torch::kFloat32);
    return s;
}
void bf16_torch_mm_free(Bf16TorchMm* s) { delete s; }

/// One product under autocast (its result is bf16, as torch's autocast matmul returns).
void bf16_torch_mm_run(Bf16TorchMm* s) {
    torch::NoGradGuard ng;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    s->c = torch::matmul(s->a, s->b);
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
}

/// The last result as fp32, into out (M * N floats).
void bf16_torch_mm_result(Bf16TorchMm* s, float* out) {
    const torch::Tensor c = s->c.to(torch::kFloat32).contiguous();
    std::memcpy(out, c.data_ptr<float>(), sizeof(float) * static_cast<size_t>(c.numel()));
}
