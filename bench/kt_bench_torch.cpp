// kt_bench_torch.cpp — the libtorch side of bench/kt_bench.cpp: the same knowledge-transfer
// workloads written the way a PyTorch user writes them, on the caller's buffers (from_blob, no
// copies in the timed region). A separate translation unit that never sees moekd's headers.
//
// Formulations (see bench/README.md):
//   symkl naive      la = log_softmax(a), lb = log_softmax(b);
//                    (F.kl_div(lb, la, log_target) + F.kl_div(la, lb, log_target)) summed / rows
//   symkl efficient  ((exp(la) - exp(lb)) * (la - lb)).sum() / rows   (one product, one reduction)
//   relation         F.normalize(x, dim=-1, eps=1e-8) -> bmm(x, x^T) per side (teacher under
//                    NoGradGuard), ((Gs - Gt)^2).mean(), backward to the student
//   svd              torch::linalg::svd(A, full_matrices=false) on a (B, M, N) batch
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <memory>

namespace F = torch::nn::functional;

void kt_torch_set_threads(int n) { at::set_num_threads(n); }
int kt_torch_threads() { return at::get_num_threads(); }

namespace {
torch::Tensor wrap(const float* p, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<float*>(p), shape, torch::kFloat32);
}
void copy_out(const torch::Tensor& t, float* dst) {
    const torch::Tensor c = t.contiguous();
    std::memcpy(dst, c.data_ptr<float>(), sizeof(float) * static_cast<size_t>(c.numel()));
}
}  // namespace

// ---- symmetric KL -------------------------------------------------------------------------------
struct KtTorchKl {
    torch::Tensor a, b;
    int64_t rows;
};

KtTorchKl* kt_torch_kl_new(const float* a, const float* b, int64_t rows, int64_t V) {
    auto* s = new KtTorchKl;
    s->a = wrap(a, {rows, V}).requires_grad_(true);
    s->b = wrap(b, {rows, V}).requires_grad_(true);
    s->rows = rows;
    return s;
}

/// Forward + backward; returns the loss. The gradients stay in a.grad / b.grad (reset first).
double kt_torch_kl_run(KtTorchKl* s, bool efficient) {
    s->a.mutable_grad() = torch::Tensor();
    s->b.mutable_grad() = torch::Tensor();
    torch::Tensor la = torch::log_softmax(s->a, -1), lb = torch::log_softmax(s->b, -1);
    torch::Tensor loss;
    if (efficient) {
        loss = ((la.exp() - lb.exp()) * (la - lb)).sum() / static_cast<double>(s->rows);
    } else {
        auto opt = F::KLDivFuncOptions().reduction(torch::kSum).log_target(true);
        loss = (F::kl_div(lb, la, opt) + F::kl_div(la, lb, opt)) / static_cast<double>(s->rows);
    }
    loss.backward();
    return loss.item<double>();
}

void kt_torch_kl_grads(KtTorchKl* s, float* ga, float* gb) {
    copy_out(s->a.grad(), ga);
    copy_out(s->b.grad(), gb);
}

void kt_torch_kl_free(KtTorchKl* s) { delete s; }

// ---- cosine relation ----------------------------------------------------------------------------
struct KtTorchRel {
    torch::Tensor s, t;
};

KtTorchRel* kt_torch_rel_new(const float* s, const float* t, int64_t G, int64_t N, int64_t Ds, int64_t Dt) {
    auto* r = new KtTorchRel;
    r->s = wrap(s, {G, N, Ds}).requires_grad_(true);
    r->t = wrap(t, {G, N, Dt});
    return r;
}

double kt_torch_rel_run(KtTorchRel* r) {
    r->s.mutable_grad() = torch::Tensor();
    const auto nopt = F::NormalizeFuncOptions().dim(-1).eps(1e-8);
    torch::Tensor sn = F::normalize(r->s, nopt);
    torch::Tensor gs = torch::bmm(sn, sn.transpose(1, 2));
    torch::Tensor gt;
    {
        torch::NoGradGuard ng;
        torch::Tensor tn = F::normalize(r->t, nopt);
        gt = torch::bmm(tn, tn.transpose(1, 2));
    }
    torch::Tensor loss = (gs - gt).pow(2).mean();
    loss.backward();
    return loss.item<double>();
}

void kt_torch_rel_grad(KtTorchRel* r, float* gs) { copy_out(r->s.grad(), gs); }
void kt_torch_rel_free(KtTorchRel* r) { delete r; }

// ---- SVD ----------------------------------------------------------------------------------------
struct KtTorchSvd {
    torch::Tensor A, U, S, Vh;
};

KtTorchSvd* kt_torch_svd_new(const float* A, int64_t B, int64_t M, int64_t N) {
    auto* s = new KtTorchSvd;
    s->A = wrap(A, {B, M, N});
    return s;
}

void kt_torch_svd_run(KtTorchSvd* s) {
    std::tie(s->U, s->S, s->Vh) = torch::linalg::svd(s->A, /*full_matrices=*/false, c10::nullopt);
}

void kt_torch_svd_values(KtTorchSvd* s, float* S) { copy_out(s->S, S); }
void kt_torch_svd_free(KtTorchSvd* s) { delete s; }
