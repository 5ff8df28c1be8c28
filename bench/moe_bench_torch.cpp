// moe_bench_torch.cpp — the libtorch side of the MoE-layer benchmark (bench/moe_bench.cpp is the
// moekd side and the driver). Its own translation unit, compiled with libtorch's flags; the
// driver talks to it through the plain functions at the bottom (raw float buffers, no shared
// types), so moekd and torch headers never meet.
//
// Two formulations of one top-1 MoE FFN training step (ReLU experts, Switch aux loss), each with
// its own parameter tensors per expert (w1[e] (F, D), b1[e] (F), w2[e] (D, F), b2[e] (D)) and a
// router wg (E, D):
//   0 "efficient"  tokens sorted by expert (stable sort of the argmax), one addmm per expert on
//                  its contiguous block, unsort with index_copy, times the gate; dropless
//   1 "einsum"     fairseq's Top1Gate + MOELayer: one-hot dispatch mask with capacity (cumsum
//                  locations), dispatch = einsum("sec,sm->ecm"), every expert on its (C, D) slab,
//                  combine = einsum("sec,ecm->sm")
// A step: grads set to none, forward, loss = dot(y, gy) + aux_weight * l_aux, backward.
// bf16 (moe_torch_set_bf16): the forward under torch.autocast("cpu", dtype=torch.bfloat16), as a
// torch user writes it, except the router's product, which runs fp32 with autocast off around it
// (Megatron-core, Tutel and moekd keep the router in fp32: the same experts get the same tokens).
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace {

struct TorchMoE {
    int formulation = 0;
    int64_t N = 0, D = 0, F = 0, E = 0;
    double capacity_factor = 1.0;
    double aux_weight = 0.0;
    torch::Tensor x, wg, gy;
    std::vector<torch::Tensor> w1, b1, w2, b2;
    torch::Tensor y, aux;
    bool bf16 = false;

    /// The router's logits, fp32 even inside the autocast scope.
    torch::Tensor router_logits() const {
        if (!bf16) return torch::mm(x, wg.t());
        at::autocast::set_cpu_enabled(false);
        auto l = torch::mm(x, wg.t());
        at::autocast::set_cpu_enabled(true);
        return l;
    }

    std::vector<torch::Tensor> params() const {
        std::vector<torch::Tensor> p{x, wg};
        for (int64_t e = 0; e < E; ++e) p.insert(p.end(), {w1[e], b1[e], w2[e], b2[e]});
        return p;
    }

    torch::Tensor expert(int64_t e, const torch::Tensor& rows) const {
        auto h = torch::addmm(b1[e], rows, w1[e].t());
        h.relu_();  // in place, as torch users write it (relu's backward reads its output)
        return torch::addmm(b2[e], h, w2[e].t());
    }

    // efficient: sort by expert, one GEMM pair per expert, unsort
    torch::Tensor forward_efficient() {
        auto logits = router_logits();
        auto probs = torch::softmax(logits, 1);
        auto mx = probs.max(1);
        auto gate = std::get<0>(mx);
        auto idx = std::get<1>(mx);
        auto order = std::get<1>(torch::sort(idx, /*stable=*/true, /*dim=*/0, /*descending=*/false));
        auto counts = torch::bincount(idx, {}, E);
        auto xs = x.index_select(0, order);
        const int64_t* c = counts.data_ptr<int64_t>();
        std::vector<torch::Tensor> outs;
        int64_t off = 0;
        for (int64_t e = 0; e < E; ++e) {
            if (c[e] == 0) continue;
            outs.push_back(expert(e, xs.narrow(0, off, c[e])));
            off += c[e];
        }
        auto ys = torch::cat(outs, 0) * gate.index_select(0, order).unsqueeze(1);
        auto out = torch::zeros_like(x).index_copy(0, order, ys);
        aux = (probs.mean(0) * (counts.to(torch::kFloat32) / static_cast<double>(N))).sum() * static_cast<double>(E);
        return out;
    }

    // fairseq Top1Gate (capacity = int(factor * ceil(N / E))) + MOELayer's dispatch / combine
    torch::Tensor forward_einsum() {
        auto logits = router_logits();
        auto gates = torch::softmax(logits, 1);                                  // (S, E)
        const int64_t C = static_cast<int64_t>(capacity_factor * std::ceil(double(N) / double(E)));
        auto indices1 = torch::argmax(gates, 1);
        auto mask1 = torch::one_hot(indices1, E);                                 // (S, E) int64
        auto me = gates.mean(0);
        auto ce = mask1.to(torch::kFloat32).mean(0);
        aux = (me * ce).mean() * static_cast<double>(E * E);
        auto locations1 = torch::cumsum(mask1, 0) - 1;
        mask1 = mask1 * torch::lt(locations1, C);
        auto locations1_s = (locations1 * mask1).sum(1);
        auto gates1_s = (gates * mask1.to(torch::kFloat32)).sum(1);              // (S)
        auto locations1_sc = torch::one_hot(locations1_s, C).to(torch::kFloat32);  // (S, C)
        auto gates1 = gates1_s.unsqueeze(-1) * mask1.to(torch::kFloat32);        // (S, E)
        auto combine = torch::bmm(gates1.unsqueeze(-1), locations1_sc.unsqueeze(1));  // (S, E, C)
        auto dispatch = combine.detach().to(torch::kBool).to(torch::kFloat32);
        auto dispatched = torch::einsum("sec,sm->ecm", {dispatch, x});          // (E, C, D)
        auto chunks = dispatched.chunk(E, 0);
        std::vector<torch::Tensor> outs;
        for (int64_t e = 0; e < E; ++e) outs.push_back(expert(e, chunks[e].squeeze(0)));
        auto expert_out = torch::stack(outs, 0);                                 // (E, C, D)
        return torch::einsum("sec,ecm->sm", {combine, expert_out});
    }

    void step() {
        for (auto& p : params()) p.mutable_grad() = torch::Tensor();  // grads to none
        if (bf16) {
            at::autocast::set_cpu_enabled(true);
            at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
        }
        y = formulation == 0 ? forward_efficient() : forward_einsum();
        if (bf16) {  // leaving the scope, as torch.autocast's __exit__: the weights' bf16 copies go
            at::autocast::set_cpu_enabled(false);
            at::autocast::clear_cache();
        }
        auto loss = torch::dot(y.reshape({-1}), gy.reshape({-1})) + aux * aux_weight;
        loss.backward();
    }
};

torch::Tensor from(const float* p, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<float*>(p), shape, torch::kFloat32).clone();
}

}  // namespace

// ---- the driver's interface -----------------------------------------------------------------------
void* moe_torch_create(int formulation, int64_t N, int64_t D, int64_t F, int64_t E, double capacity_factor,
                       double aux_weight, const float* x, const float* wg, const float* w1, const float* b1,
                       const float* w2, const float* b2, const float* gy) {
    torch::NoGradGuard ng;
    auto* m = new TorchMoE;
    m->formulation = formulation;
    m->N = N, m->D = D, m->F = F, m->E = E;
    m->capacity_factor = capacity_factor;
    m->aux_weight = aux_weight;
    m->x = from(x, {N, D}).requires_grad_();
    m->wg = from(wg, {E, D}).requires_grad_();
    m->gy = from(gy, {N, D});
    for (int64_t e = 0; e < E; ++e) {
        m->w1.push_back(from(w1 + e * F * D, {F, D}).requires_grad_());
        m->b1.push_back(from(b1 + e * F, {F}).requires_grad_());
        m->w2.push_back(from(w2 + e * D * F, {D, F}).requires_grad_());
        m->b2.push_back(from(b2 + e * D, {D}).requires_grad_());
    }
    return m;
}

void moe_torch_destroy(void* h) { delete static_cast<TorchMoE*>(h); }

void moe_torch_step(void* h) { static_cast<TorchMoE*>(h)->step(); }

double moe_torch_aux(void* h) { return static_cast<TorchMoE*>(h)->aux.item<double>(); }

/// Copies a result out: 0 y (N, D), 1 dx (N, D), 2 dwg (E, D), 3 dw1 (E, F, D), 4 db1 (E, F),
/// 5 dw2 (E, D, F), 6 db2 (E, D). Gradients of experts that got no token are zeros.
void moe_torch_copy(void* h, int which, float* out) {
    auto* m = static_cast<TorchMoE*>(h);
    auto put = [&](const torch::Tensor& t, int64_t n, float* dst) {
        if (!t.defined()) {
            std::fill_n(dst, n, 0.0f);
            return;
        }
        auto c = t.contiguous();
        std::copy_n(c.data_ptr<float>(), n, dst);
    };
    const int64_t N = m->N, D = m->D, F = m->F, E = m->E;
    switch (which) {
        case 0: put(m->y.detach().to(torch::kFloat32), N * D, out); break;
        case 1: put(m->x.grad(), N * D, out); break;
        case 2: put(m->wg.grad(), E * D, out); break;
        case 3: for (int64_t e = 0; e < E; ++e) put(m->w1[e].grad(), F * D, out + e * F * D); break;
        case 4: for (int64_t e = 0; e < E; ++e) put(m->b1[e].grad(), F, out + e * F); break;
        case 5: for (int64_t e = 0; e < E; ++e) put(m->w2[e].grad(), D * F, out + e * D * F); break;
        case 6: for (int64_t e = 0; e < E; ++e) put(m->b2[e].grad(), D, out + e * D); break;
        default: break;
    }
}

void moe_torch_set_bf16(void* h, bool on) { static_cast<TorchMoE*>(h)->bf16 = on; }

void moe_torch_set_threads(int aten_threads) { at::set_num_threads(aten_threads); }
int moe_torch_get_threads() { return at::get_num_threads(); }
std::string moe_torch_version() { return TORCH_VERSION; }
