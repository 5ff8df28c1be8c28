// op_cases_moe.cpp — gradcheck cases for the Mixture-of-Experts ops (moe/*.hpp), in double:
//   router/...     router_logits, softmax_topk (probs and gates, top-1 plain, top-2 and top-3 renormalised),
//                  topk_gates at fixed experts, kept_gates (renormalised after capacity dropping)
//   dispatch/...   permute_tokens, combine_tokens, expert_ffn (per-expert and stacked weights,
//                  ReLU and GELU, with and without biases), and the three chained, with capacity
//                  dropping and pad tokens
//   moe_layer/...  MoELayer::forward_fixed (given experts and gates; the layer's weights fixed),
//                  and the full routed forward plus its aux loss (top-2 with capacity: gates
//                  renormalised after dropping, fairseq's default, and before, GShard)
//   balance/...    switch / KL-uniform balance losses and the router z-loss, with pad tokens
// Routing indices are fixed values built here, on the device of the case's inputs (idx_on /
// mask_on; plans are built from routing there: the backend-ops test runs every case on CUDA
// tensors). Cases that route by argmax draw Normal inputs, so no two router probabilities lie
// within the finite-difference step of each other.
#include <moekd/moe.hpp>
#include <moekd/ops/softmax.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

namespace {
IndexTensor ix(std::vector<int64_t> v, Shape s) { return IndexTensor::from_vector(v, s); }
Tensor<uint8_t> mask(std::vector<uint8_t> v) { return Tensor<uint8_t>::from_vector(v); }

// 6 tokens, top-2 over 3 experts; token 4 is padding. First choices: 0 0 1 0 - 2, so with
// capacity 3 expert 0 keeps tokens 0, 1, 3 (first choices) and drops token 5's second choice.
const IndexTensor& route6() {
    static IndexTensor r = ix({0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 2, 0}, {6, 2});
    return r;
}
const Tensor<uint8_t>& pad6() {
    static Tensor<uint8_t> p = mask({0, 0, 0, 0, 1, 0});
    return p;
}
// the same on the device of `like`
IndexTensor route6(const Tensor<double>& like) { return idx_on(like, route6().to_vector(), {6, 2}); }
Tensor<uint8_t> pad6(const Tensor<double>& like) { return mask_on(like, pad6().to_vector(), {6}); }

// A plan built once per device from routing on that device (make(like) builds it).
struct PlanPerDevice {
    moe::PlanPtr cpu, dev;
    template <class F>
    const moe::PlanPtr& on(const Tensor<double>& like, F make) {
        moe::PlanPtr& p = like.device() == Device::CPU ? cpu : dev;
        if (!p) p = make(like);
        return p;
    }
};
const moe::PlanPtr& plan6(const Tensor<double>& like = Tensor<double>::scalar(0)) {  // capacity 3, pad token 4
    static PlanPerDevice p;
    return p.on(like, [](const Tensor<double>& l) { return moe::make_dispatch_plan(route6(l), 3, 3, pad6(l)); });
}
const moe::PlanPtr& plan6_dropless(const Tensor<double>& like = Tensor<double>::scalar(0)) {
    static PlanPerDevice p;
    return p.on(like, [](const Tensor<double>& l) { return moe::make_dispatch_plan(route6(l), 3, -1); });
}

// A layer per device, the same weights (the device one is the CPU one's twin moved over).
template <class F>
moe::MoELayer<double>& layer_on(const Tensor<double>& like, std::shared_ptr<moe::MoELayer<double>> (&pair)[2], F make) {
    auto& l = pair[like.device() == Device::CPU ? 0 : 1];
    if (!l) {
        l = make();
        if (like.device() != Device::CPU) l->to(like.device());
    }
    return *l;
}

// per-expert weights from inputs x[first ...]: w1 (F, D), b1 (F), w2 (D, F), b2 (D) per expert
moe::ExpertWeights<double> per_expert(const In& x, size_t first, int64_t E, bool biases = true) {
    moe::ExpertWeights<double> w;
    const size_t step = biases ? 4 : 2;
    for (int64_t e = 0; e < E; ++e) {
        const size_t b = first + e * step;
        w.w1.push_back(x[b]);
        w.b1.push_back(biases ? x[b + 1] : Tensor<double>());
        w.w2.push_back(x[b + (biases ? 2 : 1)]);
        w.b2.push_back(biases ? x[b + 3] : Tensor<double>());
    }
    return w;
}
std::vector<Shape> expert_shapes(int64_t E, int64_t D, int64_t F, bool biases = true) {
    std::vector<Shape> s;
    for (int64_t e = 0; e < E; ++e) {
        s.push_back({F, D});
        if (biases) s.push_back({F});
        s.push_back({D, F});
        if (biases) s.push_back({D});
    }
    return s;
}
std::vector<Shape> cat(std::vector<Shape> a, const std::vector<Shape>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

std::shared_ptr<moe::MoELayer<double>> layer(int64_t E, int64_t k, nn::Activation act, double cap_factor = 1.25,
                                             bool dropless = true, bool before_dropping = false) {
    moe::MoEConfig c;
    c.d_model = 4;
    c.ffn_dim = 5;
    c.activation = act;
    c.router.num_experts = E;
    c.router.top_k = k;
    c.router.dropless = dropless;
    c.router.capacity_factor_train = cap_factor;
    c.router.normalize_gate_prob_before_dropping = before_dropping;
    c.balance = moe::BalanceLoss::Switch;
    c.z_loss_weight = 0.1;
    c.name = "test_moe";
    Generator gen(7);
    return std::make_shared<moe::MoELayer<double>>(c, gen);
}
}  // namespace

static RegisterOps reg({
    // ---- router ----
    {"router/logits", {{7, 5}, {3, 5}}, [](const In& x) { return moe::router_logits(x[0], x[1]); }},
    {"router/logits_transposed_x", {{5, 600}, {4, 5}},  // 600 rows: two row blocks on 2 threads
     [](const In& x) { return moe::router_logits(x[0].t(), x[1]); }, Init::Normal, 1e-6, 1e-5},
    {"router/logits_bias", {{7, 5}, {3, 5}, {3}},
     [](const In& x) { return moe::router_logits(x[0], x[1], x[2]); }},
    {"router/probs", {{5, 4}}, [](const In& x) { return moe::softmax_topk(x[0], 1, false).probs; }},
    {"router/top1_plain", {{6, 4}}, [](const In& x) { return moe::softmax_topk(x[0], 1, false).gates; }},
    {"router/top2_renormalised", {{6, 4}}, [](const In& x) { return moe::softmax_topk(x[0], 2, true).gates; }},
    {"router/top3_of_5_renormalised", {{4, 5}}, [](const In& x) { return moe::softmax_topk(x[0], 3, true).gates; }},
    {"router/top2_plain_noncontiguous", {{4, 6}},
     [](const In& x) { return moe::softmax_topk(x[0].t(), 2, false).gates; }},
    {"router/topk_gates_fixed", {{6, 3}},
     [](const In& x) { return moe::topk_gates(softmax(x[0], -1), route6(x[0]), true); }},
    // renormalised after capacity dropping (fairseq's default): token 5 lost its second choice
    // (gate 1 on its first), token 4 is padding
    {"router/kept_gates_capacity_pad", {{6, 3}},
     [](const In& x) { return moe::kept_gates(softmax(x[0], -1), route6(x[0]), plan6(x[0])); }},
    {"router/kept_gates_both_dropped", {{5, 3}},
     [](const In& x) {
         static PlanPerDevice pp;
         const std::vector<int64_t> r = {0, 1, 0, 1, 0, 2, 1, 0, 0, 1};
         const auto& p = pp.on(x[0], [&](const Tensor<double>& l) { return moe::make_dispatch_plan(idx_on(l, r, {5, 2}), 3, 2); });
         return moe::kept_gates(softmax(x[0], -1), idx_on(x[0], r, {5, 2}), p);
     }},

    // ---- dispatch: the three ops, alone and chained ----
    {"dispatch/permute_capacity_pad", {{6, 3}}, [](const In& x) { return moe::permute_tokens(x[0], plan6(x[0])); }},
    {"dispatch/permute_dropless", {{6, 3}}, [](const In& x) { return moe::permute_tokens(x[0], plan6_dropless(x[0])); }},
    {"dispatch/combine_capacity_pad", {{plan6()->rows(), 3}, {6, 2}},
     [](const In& x) { return moe::combine_tokens(x[0], x[1], plan6(x[0])); }},
    {"dispatch/combine_dropless", {{plan6_dropless()->rows(), 3}, {6, 2}},
     [](const In& x) { return moe::combine_tokens(x[0], x[1], plan6_dropless(x[0])); }},
    {"dispatch/expert_ffn_relu", cat({{plan6()->rows(), 3}}, expert_shapes(3, 3, 4)),
     [](const In& x) { return moe::expert_ffn(x[0], plan6(x[0]), per_expert(x, 1, 3), nn::Activation::ReLU); }},
    {"dispatch/expert_ffn_gelu_no_bias", cat({{plan6_dropless()->rows(), 3}}, expert_shapes(3, 3, 4, false)),
     [](const In& x) {
         return moe::expert_ffn(x[0], plan6_dropless(x[0]), per_expert(x, 1, 3, false), nn::Activation::GELU);
     }},
    {"dispatch/expert_ffn_stacked", {{plan6()->rows(), 3}, {3, 4, 3}, {3, 4}, {3, 3, 4}, {3, 3}},
     [](const In& x) {
         moe::ExpertWeights<double> w;
         w.W1 = x[1], w.B1 = x[2], w.W2 = x[3], w.B2 = x[4];
         return moe::expert_ffn(x[0], plan6(x[0]), w, nn::Activation::GELU);
     }},
    // every expert gets 2 rows: on the device the stacked GEMMs are strided-batched
    {"dispatch/expert_ffn_stacked_uniform_rows", {{6, 3}, {3, 4, 3}, {3, 4}, {3, 3, 4}, {3, 3}},
     [](const In& x) {
         static PlanPerDevice pp;
         const auto& p = pp.on(x[0], [](const Tensor<double>& l) {
             return moe::make_dispatch_plan(idx_on(l, {0, 1, 2, 2, 1, 0}, {6, 1}), 3, -1);
         });
         moe::ExpertWeights<double> w;
         w.W1 = x[1], w.B1 = x[2], w.W2 = x[3], w.B2 = x[4];
         return moe::expert_ffn(x[0], p, w, nn::Activation::GELU);
     }},
    {"dispatch/chain_top2_capacity_pad", cat({{6, 3}, {6, 2}}, expert_shapes(3, 3, 4)),
     [](const In& x) {
         const auto& p = plan6(x[0]);
         return moe::combine_tokens(moe::expert_ffn(moe::permute_tokens(x[0], p), p, per_expert(x, 2, 3)), x[1], p);
     }},
    // an empty expert (none routed to expert 3) and one that takes most rows
    {"dispatch/chain_empty_expert", cat({{5, 2}, {5, 1}}, expert_shapes(4, 2, 3)),
     [](const In& x) {
         static PlanPerDevice pp;
         const auto& p = pp.on(x[0], [](const Tensor<double>& l) {
             return moe::make_dispatch_plan(idx_on(l, {1, 1, 0, 1, 2}, {5, 1}), 4, -1);
         });
         return moe::combine_tokens(moe::expert_ffn(moe::permute_tokens(x[0], p), p, per_expert(x, 2, 4)), x[1], p);
     }},

    // ---- the layer ----
    {"moe_layer/fixed_top1_relu", {{2, 3, 4}, {6, 1}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> l[2];
         return layer_on(x[0], l, [] { return layer(3, 1, nn::Activation::ReLU); })
             .forward_fixed(x[0], idx_on(x[0], {2, 0, 0, 1, 2, 0}, {6, 1}), x[1]);
     }},
    {"moe_layer/fixed_top2_capacity_pad_gelu", {{6, 4}, {6, 2}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> l[2];
         return layer_on(x[0], l, [] { return layer(3, 2, nn::Activation::GELU); })
             .forward_fixed(x[0], route6(x[0]), x[1], pad6(x[0]), 3);
     }},
    {"moe_layer/routed_top2_with_aux", {{2, 4, 4}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> ls[2];
         auto& l = layer_on(x[0], ls, [] { return layer(4, 2, nn::Activation::GELU); });
         const nn::FFNOutput<double> o = l.forward(x[0], mask_on(x[0], {0, 0, 0, 1, 0, 0, 1, 1}, {2, 4}));
         return add(o.y, o.aux);
     }},
    // top-2 with capacity (factor 0.5: capacity 2 of 8 tokens x 2 choices over 4 experts), gates
    // renormalised after dropping (the default) and before (GShard)
    {"moe_layer/routed_top2_capacity_after_dropping", {{8, 4}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> ls[2];
         auto& l = layer_on(x[0], ls, [] { return layer(4, 2, nn::Activation::GELU, 0.5, false); });
         const nn::FFNOutput<double> o = l.forward(x[0], Tensor<uint8_t>());
         return add(o.y, o.aux);
     }},
    {"moe_layer/routed_top2_capacity_before_dropping", {{8, 4}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> ls[2];
         auto& l = layer_on(x[0], ls, [] { return layer(4, 2, nn::Activation::GELU, 0.5, false, true); });
         const nn::FFNOutput<double> o = l.forward(x[0], Tensor<uint8_t>());
         return add(o.y, o.aux);
     }},
    {"moe_layer/routed_top1_capacity", {{8, 4}},
     [](const In& x) {
         static std::shared_ptr<moe::MoELayer<double>> ls[2];
         auto& l = layer_on(x[0], ls, [] { return layer(2, 1, nn::Activation::GELU, 1.0, false); });  // capacity 4 of 8
         const nn::FFNOutput<double> o = l.forward(x[0], Tensor<uint8_t>());
         return add(o.y, o.aux);
     }},

    // ---- balance ----
    {"balance/switch", {{6, 3}},
     [](const In& x) { return moe::switch_balance_loss(softmax(x[0], -1), route6(x[0])); }},
    {"balance/switch_pad", {{6, 3}},
     [](const In& x) { return moe::switch_balance_loss(softmax(x[0], -1), route6(x[0]), pad6(x[0])); }},
    {"balance/kl_uniform", {{5, 4}}, [](const In& x) { return moe::kl_uniform_balance_loss(softmax(x[0], -1)); }},
    {"balance/kl_uniform_pad", {{6, 3}},
     [](const In& x) { return moe::kl_uniform_balance_loss(softmax(x[0], -1), pad6(x[0])); }},
    {"balance/z_loss", {{5, 4}}, [](const In& x) { return moe::router_z_loss(x[0] * 3.0); }},
    {"balance/z_loss_pad", {{6, 3}}, [](const In& x) { return moe::router_z_loss(x[0], pad6(x[0])); }},
    {"balance/mean_router_prob_pad", {{6, 3}},
     [](const In& x) { return moe::mean_router_prob(softmax(x[0], -1), pad6(x[0])); }},
});
