// transformer_bench_torch.cpp — the libtorch side of the Transformer-layer benchmark, and the
// numerical check that both sides compute the same thing.
//
//   --side torch --case encoder|decoder [--variant module|manual] [--aten-threads N]
//       [--blas-threads N] [--steps S] [--warmup W]
//     times one training step (grads to none, forward, y.backward(gy), torch::optim::Adam) and
//     prints a `result ...` line (transformer_bench.hpp) for the driver in transformer_bench.cpp.
//   --check [--quick]
//     builds the moekd layer, copies its weights into the torch layers (both variants), runs
//     forward + backward on each and prints `check: ... max_rel_err=...` lines (max |a - b| /
//     max |b|) for the output, the input gradients and every parameter gradient; then one Adam step
//     on each side from the same (moekd's) gradients, the parameters after it and the output of a
//     second forward. Exit 1 when anything differs by more than 1e-4.
//
// Two torch formulations of the same layer (both post-LN, ReLU, dropout 0):
//   module  torch::nn::TransformerEncoderLayer / TransformerDecoderLayer, (T, B, D) layout, the
//           decoder's causal mask as a float -inf mask (torch's own layer)
//   manual  the same parameters, written by hand batch-first: one fused QKV linear for
//           self-attention (Q and fused KV for cross-attention), heads as views, matmul,
//           softmax, matmul, layer_norm (skips torch::nn's torch::equal(query, key) checks)
// The driver races both and compares moekd with the fastest.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <map>

#include "transformer_bench_moekd.hpp"

namespace {

using namespace tbench;
namespace F = torch::nn::functional;

const char* kUsage =
    "usage: transformer_bench_torch --check [--quick] [--precision fp32|bf16]\n"
    "       transformer_bench_torch --side torch --case encoder|decoder [--variant module|manual]\n"
    "                               [--aten-threads N] [--blas-threads N] [--steps S] [--warmup W]\n"
    "                               [--precision fp32|bf16 (bf16: CPU autocast to bfloat16)]\n";

torch::Tensor from_values(const std::vector<float>& v, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<float*>(v.data()), shape, torch::kFloat32).clone();
}

/// torch.autocast("cpu", dtype=torch.bfloat16) as a scope (when `on`).
struct AutocastBf16 {
    bool on;
    explicit AutocastBf16(bool enable) : on(enable) {
        if (!on) return;
        at::autocast::set_cpu_enabled(true);
        at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    }
    ~AutocastBf16() {
        if (!on) return;
        at::autocast::set_cpu_enabled(false);
        at::autocast::clear_cache();
    }
};

struct TorchSide {
    Sizes s;
    Case which;
    bool manual;
    torch::nn::TransformerEncoderLayer enc{nullptr};
    torch::nn::TransformerDecoderLayer dec{nullptr};
    std::unique_ptr<torch::optim::Adam> opt;
    std::vector<torch::Tensor> params;
    // module: x (T, B, D), mem (S, B, D), gy (T, B, D); manual: batch first (B, T, D)
    torch::Tensor x, mem, gy, causal;  // causal: (T, T) float, -inf above the diagonal
    bool bf16 = false;  // the forward under torch's CPU autocast to bfloat16 (backward follows it)

    TorchSide(const Sizes& sz, Case c, const Inputs& in, bool manual_variant) : s(sz), which(c), manual(manual_variant) {
        if (c == Case::Encoder) {
            enc = torch::nn::TransformerEncoderLayer(torch::nn::TransformerEncoderLayerOptions(s.D, s.H)
                                                         .dim_feedforward(s.F)
                                                         .dropout(0.0)
                                                         .activation(torch::kReLU));
            enc->train();
            params = enc->parameters();
        } else {
            dec = torch::nn::TransformerDecoderLayer(torch::nn::TransformerDecoderLayerOptions(s.D, s.H)
                                                         .dim_feedforward(s.F)
                                                         .dropout(0.0)
                                                         .activation(torch::kReLU));
            dec->train();
            params = dec->parameters();
        }
        opt = std::make_unique<torch::optim::Adam>(
            params, torch::optim::AdamOptions(kLr).betas({kBeta1, kBeta2}).eps(kEps).weight_decay(0));
        x = from_values(in.x, {s.B, s.T, s.D});
        mem = from_values(in.mem, {s.B, s.S, s.D});
        gy = from_values(in.gy, {s.B, s.T, s.D});
        if (!manual) {  // the layout torch::nn's layers take
            x = x.transpose(0, 1).contiguous();
            mem = mem.transpose(0, 1).contiguous();
            gy = gy.transpose(0, 1).contiguous();
        }
        x.requires_grad_(true);
        mem.requires_grad_(true);
        causal = torch::full({s.T, s.T}, -std::numeric_limits<float>::infinity()).triu(1);
    }

    /// Multi-head attention by hand, batch first. q_in: (B, T, D), kv_in: (B, S, D) -> (B, T, D)
    torch::Tensor mha(torch::nn::MultiheadAttention& m, const torch::Tensor& q_in, const torch::Tensor& kv_in,
                      bool self, const torch::Tensor& mask) const {
        const int64_t B = q_in.size(0), L = q_in.size(1), S = kv_in.size(1), D = s.D, H = s.H, Dh = D / H;
        const torch::Tensor& W = m->in_proj_weight;
        const torch::Tensor& b = m->in_proj_bias;
        torch::Tensor q, k, v;
        if (self) {
            auto qkv = F::linear(q_in, W, b).view({B, L, 3, H, Dh}).permute({2, 0, 3, 1, 4});  // (3, B, H, L, Dh)
            q = qkv[0], k = qkv[1], v = qkv[2];
        } else {
            q = F::linear(q_in, W.narrow(0, 0, D), b.narrow(0, 0, D)).view({B, L, H, Dh}).transpose(1, 2);
            auto kv = F::linear(kv_in, W.narrow(0, D, 2 * D), b.narrow(0, D, 2 * D))
                          .view({B, S, 2, H, Dh})
                          .permute({2, 0, 3, 1, 4});  // (2, B, H, S, Dh)
            k = kv[0], v = kv[1];
        }
        auto scores = torch::matmul(q * (1.0 / std::sqrt(double(Dh))), k.transpose(-2, -1));  // (B, H, L, S)
        if (mask.defined()) scores = scores + mask;
        auto ctx = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({B, L, D});
        return F::linear(ctx, m->out_proj->weight, m->out_proj->bias);
    }
    static torch::Tensor ln(const torch::nn::LayerNorm& n, const torch::Tensor& x) {
        return torch::layer_norm(x, {x.size(-1)}, n->weight, n->bias, 1e-5);
    }
    static torch::Tensor ffn(const torch::nn::Linear& l1, const torch::nn::Linear& l2, const torch::Tensor& x) {
        return F::linear(torch::relu(F::linear(x, l1->weight, l1->bias)), l2->weight, l2->bias);
    }

    /// y in the variant's layout
    torch::Tensor forward() {
        if (!manual)
            return which == Case::Encoder ? enc->forward(x) : dec->forward(x, mem, causal);
        if (which == Case::Encoder) {
            auto h = ln(enc->norm1, x + mha(enc->self_attn, x, x, true, {}));
            return ln(enc->norm2, h + ffn(enc->linear1, enc->linear2, h));
        }
        auto h = ln(dec->norm1, x + mha(dec->self_attn, x, x, true, causal));
        h = ln(dec->norm2, h + mha(dec->multihead_attn, h, mem, false, {}));
        return ln(dec->norm3, h + ffn(dec->linear1, dec->linear2, h));
    }
    /// y as (B, T, D), contiguous
    torch::Tensor forward_btd() {
        auto y = forward();
        return manual ? y : y.transpose(0, 1).contiguous();
    }

    void step() {
        for (auto& p : params) p.mutable_grad().reset();  // set_to_none (torch 2.x default; no zero fill)
        x.mutable_grad().reset();
        mem.mutable_grad().reset();
        torch::Tensor y;
        {
            AutocastBf16 ac(bf16);
            y = forward();
        }
        y.backward(gy);
        opt->step();
    }

    /// (moekd name) -> the torch tensor it maps to: (param, first row) into in_proj for q/k/v.
    std::map<std::string, std::pair<torch::Tensor, int64_t>> name_map() {
        std::map<std::string, std::pair<torch::Tensor, int64_t>> m;
        auto attn = [&](const std::string& pre, torch::nn::MultiheadAttention& a) {
            const char* qkv[3] = {"q_proj", "k_proj", "v_proj"};
            for (int i = 0; i < 3; ++i) {
                m[pre + "." + qkv[i] + ".weight"] = {a->in_proj_weight, i * s.D};
                m[pre + "." + qkv[i] + ".bias"] = {a->in_proj_bias, i * s.D};
            }
            m[pre + ".out_proj.weight"] = {a->out_proj->weight, -1};
            m[pre + ".out_proj.bias"] = {a->out_proj->bias, -1};
        };
        auto lin = [&](const std::string& pre, torch::nn::Linear& l) {
            m[pre + ".weight"] = {l->weight, -1};
            m[pre + ".bias"] = {l->bias, -1};
        };
        auto norm = [&](const std::string& pre, torch::nn::LayerNorm& n) {
            m[pre + ".weight"] = {n->weight, -1};
            m[pre + ".bias"] = {n->bias, -1};
        };
        if (which == Case::Encoder) {
            attn("self_attn", enc->self_attn);
            lin("ffn.fc1", enc->linear1);
            lin("ffn.fc2", enc->linear2);
            norm("self_attn_layer_norm", enc->norm1);
            norm("final_layer_norm", enc->norm2);
        } else {
            attn("self_attn", dec->self_attn);
            attn("encoder_attn", dec->multihead_attn);
            lin("ffn.fc1", dec->linear1);
            lin("ffn.fc2", dec->linear2);
            norm("self_attn_layer_norm", dec->norm1);
            norm("encoder_attn_layer_norm", dec->norm2);
            norm("final_layer_norm", dec->norm3);
        }
        return m;
    }
    /// The part of torch tensor t that moekd's (rows, ...) tensor maps to.
    static torch::Tensor part(const torch::Tensor& t, int64_t row, int64_t rows) {
        return row < 0 ? t : t.narrow(0, row, rows);
    }
};

torch::Tensor as_torch(const moekd::Tensor<float>& t) {
    const auto c = moekd::detail::contiguous_data(t);
    std::vector<int64_t> shape(c.shape().begin(), c.shape().end());
    return torch::from_blob(const_cast<float*>(c.data()), shape, torch::kFloat32).clone();
}

/// One step of moekd and of each torch variant on the same weights and inputs.
bool check_case(const Sizes& s, Case c) {
    const Inputs in = make_inputs(s);
    bool ok = true;
    for (bool manual : {false, true}) {
        MoekdSide m(s, c, in);  // a fresh layer per variant (same seed, same weights, Adam at step 0)
        TorchSide tr(s, c, in, manual);
        auto names = tr.name_map();
        {  // moekd weights -> torch
            torch::NoGradGuard ng;
            MOEKD_CHECK(names.size() == m.named_parameters().size(), "check: ", names.size(), " mapped names vs ",
                        m.named_parameters().size(), " moekd parameters");
            for (auto& [n, t] : m.named_parameters()) {
                auto it = names.find(n);
                MOEKD_CHECK(it != names.end(), "check: no torch parameter for moekd '", n, "'");
                TorchSide::part(it->second.first, it->second.second, t.size(0)).copy_(as_torch(t));
            }
        }
        const char* var = manual ? "manual" : "module";
        double worst = 0;
        // max |a - b| / max(max |b|, floor): the floor keeps gradients that are zero in exact
        // arithmetic (the key-projection bias: softmax ignores a shift shared by all keys) from
        // turning rounding noise into a huge relative error
        auto report = [&](const std::string& what, const torch::Tensor& a, const torch::Tensor& b, double floor = 0) {
            const double num = (a.detach() - b.detach()).abs().max().item<double>();
            const double e = num / std::max(b.detach().abs().max().item<double>(), std::max(floor, 1e-30));
            worst = std::max(worst, e);
            if (e > 1e-4 || what == "output" || what == "output_after_step" || what == "grad.x" ||
                what == "grad.memory")
                std::printf("check: case=%s torch=%s what=%s max_rel_err=%.2e\n", case_name(c), var, what.c_str(), e);
        };
        // forward + backward on both
        const auto ym = m.forward();
        ym.backward(m.gy);
        auto yt = tr.forward();
        yt.backward(tr.gy);
        const auto ytb = manual ? yt : yt.transpose(0, 1);
        report("output", ytb, as_torch(ym));
        const double loss_m = (as_torch(ym).to(torch::kDouble) * as_torch(m.gy).to(torch::kDouble)).sum().item<double>();
        const double loss_t = (ytb.detach().to(torch::kDouble) * as_torch(m.gy).to(torch::kDouble)).sum().item<double>();
        std::printf("check: case=%s torch=%s what=loss=sum(y*gy) moekd=%.9g torch=%.9g rel_err=%.2e\n", case_name(c),
                    var, loss_m, loss_t, std::abs(loss_m - loss_t) / std::max(1e-30, std::abs(loss_t)));
        report("grad.x", manual ? tr.x.grad() : tr.x.grad().transpose(0, 1), as_torch(m.x.grad()));
        if (c == Case::Decoder)
            report("grad.memory", manual ? tr.mem.grad() : tr.mem.grad().transpose(0, 1), as_torch(m.mem.grad()));
        double gscale = 0;  // the largest gradient entry of any parameter
        for (auto& [n, t] : m.named_parameters()) gscale = std::max(gscale, as_torch(t.grad()).abs().max().item<double>());
        for (auto& [n, t] : m.named_parameters()) {
            auto& [tt, row] = names.at(n);
            report("grad." + n, TorchSide::part(tt.grad(), row, t.size(0)), as_torch(t.grad()), 1e-3 * gscale);
        }
        // Adam: the same gradients in (moekd's, copied into torch), the same parameters out. (The
        // first Adam step moves each weight by ~lr * sign(g), so comparing after each side's own
        // gradients would amplify rounding noise in gradients that are ~0.)
        {
            torch::NoGradGuard ng;
            for (auto& [n, t] : m.named_parameters()) {
                auto& [tt, row] = names.at(n);
                TorchSide::part(tt.mutable_grad(), row, t.size(0)).copy_(as_torch(t.grad()));
            }
        }
        m.opt->step();
        tr.opt->step();
        for (auto& [n, t] : m.named_parameters()) {
            auto& [tt, row] = names.at(n);
            report("param_after_adam." + n, TorchSide::part(tt, row, t.size(0)), as_torch(t));
        }
        {
            moekd::NoGrad ng;
            torch::NoGradGuard tng;
            report("output_after_step", tr.forward_btd(), as_torch(m.forward()));
        }
        std::printf("check: case=%s torch=%s what=all(output,grads,params) max_rel_err=%.2e -> %s\n", case_name(c), var,
                    worst, worst <= 1e-4 ? "agree" : "DISAGREE");
        ok = ok && worst <= 1e-4;
    }
    return ok;
}

/// bf16: each side's autocast output and input gradient against moekd's fp32 ones on the same
/// weights, within bf16's tolerance (max |a - b| / max |b| <= 3e-2; bf16 keeps 8 significant
/// bits), and the two sides against each other.
bool check_bf16_case(const Sizes& s, Case c) {
    const Inputs in = make_inputs(s);
    bool ok = true;
    for (bool manual : {false, true}) {
        MoekdSide m32(s, c, in), m16(s, c, in);  // same seed: same weights
        m16.bf16 = true;
        TorchSide tr(s, c, in, manual);
        tr.bf16 = true;
        auto names = tr.name_map();
        {
            torch::NoGradGuard ng;
            for (auto& [n, t] : m32.named_parameters()) {
                auto& [tt, row] = names.at(n);
                TorchSide::part(tt, row, t.size(0)).copy_(as_torch(t));
            }
        }
        const auto y32 = m32.forward();
        y32.backward(m32.gy);
        moekd::Tensor<float> y16;
        {
            moekd::Autocast ac(moekd::Precision::bf16);
            y16 = m16.forward();
            y16.backward(m16.gy);
        }
        torch::Tensor yt;
        {
            AutocastBf16 ac(true);
            yt = tr.forward();
        }
        yt.backward(tr.gy);
        const torch::Tensor ytb = (manual ? yt : yt.transpose(0, 1)).to(torch::kFloat32);
        const torch::Tensor gxt = (manual ? tr.x.grad() : tr.x.grad().transpose(0, 1)).to(torch::kFloat32);
        auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
            return (a.detach() - b.detach()).abs().max().item<double>() / std::max(b.detach().abs().max().item<double>(), 1e-30);
        };
        const char* var = manual ? "manual" : "module";
        const double e[6] = {rel(as_torch(y16), as_torch(y32)), rel(ytb, as_torch(y32)), rel(as_torch(y16), ytb),
                             rel(as_torch(m16.x.grad()), as_torch(m32.x.grad())), rel(gxt, as_torch(m32.x.grad())),
                             rel(as_torch(m16.x.grad()), gxt)};
        const bool good = *std::max_element(e, e + 6) <= 3e-2;
        std::printf("check: case=%s torch=%s bf16 max_rel_err output: moekd_vs_fp32=%.2e torch_vs_fp32=%.2e "
                    "moekd_vs_torch=%.2e; grad.x: %.2e %.2e %.2e -> %s\n",
                    case_name(c), var, e[0], e[1], e[2], e[3], e[4], e[5], good ? "agree" : "DISAGREE");
        ok = ok && good;
    }
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const long base_rss = proc_status_kb("VmRSS");
    const Options o = parse_options(argc, argv, kUsage);
    const Sizes s;
    if (o.check_only) {
        at::set_num_threads(1);
        bool ok = true;
        for (Case c : {Case::Encoder, Case::Decoder}) ok = check_case(s, c) && ok;
        if (o.bf16)
            for (Case c : {Case::Encoder, Case::Decoder}) ok = check_bf16_case(s, c) && ok;
        return ok ? 0 : 1;
    }
    if (o.side != "torch" || (o.variant != "module" && o.variant != "manual")) {
        std::fprintf(stderr, "%s", kUsage);
        return 2;
    }
    at::set_num_threads(o.aten_threads);
    openblas_set_num_threads(o.blas_threads);
    Result r;
    r.side = "torch";
    r.variant = o.variant;
    r.which = o.which;
    r.aten_threads = at::get_num_threads();
    r.blas_threads = openblas_get_num_threads();
    r.base_rss_kb = base_rss;
    {
        TorchSide t(s, o.which, make_inputs(s), o.variant == "manual");
        t.bf16 = o.bf16;
        time_steps(o, s, r, [&] { t.step(); });
    }
    r.peak_rss_kb = peak_rss_kb();
    print_result(r);
    return 0;
}
