// op_cases_kt.cpp — gradcheck cases for the knowledge-transfer losses (losses/kd.hpp,
// losses/relation.hpp): symmetric KL (pad masks, detach flags, 3-D logits, views), soft and hard
// distillation (student side only), token-relation losses (differing widths, groups, teacher
// gradient on / off) and the attention query-key relation loss.
//
// A side that is detached (or a teacher that gets no gradient) is built inside the case from a
// fixed seed, not passed as an input: finite differences on it would see the loss move while
// the op, by design, reports no gradient. Those tensors and the pad masks are made on the device
// of the case's first input (fixed(x[0], ...), mask_on(x[0], ...)), so every case also runs on
// CUDA tensors in tests/gpu/backend_ops_test.cpp.
#include <moekd/losses/kd.hpp>
#include <moekd/losses/relation.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

namespace {

/// A fixed (not finite-differenced) tensor, the same on every call of a case, on the device of
/// the case's input `like` (the backend-ops test runs the cases on device tensors).
Tensor<double> fixed(const Tensor<double>& like, const Shape& s, uint64_t seed, double scale = 1.0) {
    Generator g(seed);
    return Tensor<double>::randn(s, g, 0.0, scale).to(like.device());
}

}  // namespace

static RegisterOps reg({
    // ---- symmetric KL ---------------------------------------------------------------------------
    {"symmetric_kl/basic", {{3, 7}, {3, 7}}, [](const In& x) { return symmetric_kl(x[0], x[1]); }},
    {"symmetric_kl/btv_pad_mask", {{2, 3, 5}, {2, 3, 5}},
     [](const In& x) { return symmetric_kl(x[0], x[1], mask_on(x[0], {0, 1, 0, 0, 0, 1}, {2, 3})); }},
    {"symmetric_kl/pad_mask_2d", {{4, 6}, {4, 6}},
     [](const In& x) { return symmetric_kl(x[0], x[1], mask_on(x[0], {1, 0, 0, 1}, {4})); }},
    {"symmetric_kl/detach_b", {{3, 6}},
     [](const In& x) {
         Tensor<double> b = fixed(x[0], {3, 6}, 11);
         b.requires_grad_();
         return symmetric_kl(x[0], b, {}, false, true);
     }},
    {"symmetric_kl/detach_a_pad", {{3, 6}},
     [](const In& x) {
         Tensor<double> a = fixed(x[0], {3, 6}, 12);
         a.requires_grad_();
         return symmetric_kl(a, x[0], mask_on(x[0], {0, 0, 1}, {3}), true, false);
     }},
    {"symmetric_kl/transposed_views", {{5, 3}, {3, 5}}, [](const In& x) { return symmetric_kl(x[0].t(), x[1]); }},
    {"symmetric_kl/sharp_logits", {{2, 9}, {2, 9}},
     [](const In& x) { return symmetric_kl(x[0] * 4.0, x[1] * 4.0 + 30.0); }, Init::Normal, 1e-6, 1e-5},
    {"symmetric_kl/one_class", {{3, 1}, {3, 1}}, [](const In& x) { return symmetric_kl(x[0], x[1]); }},
    {"symmetric_kl/scaled_upstream", {{2, 4}, {2, 4}}, [](const In& x) { return symmetric_kl(x[0], x[1]) * 3.0; }},

    // ---- distillation (student side) ------------------------------------------------------------
    {"soft_distill/t1", {{4, 6}}, [](const In& x) { return soft_distill(x[0], fixed(x[0], {4, 6}, 21), 1.0); }},
    {"soft_distill/t2_btv", {{2, 3, 5}},
     [](const In& x) { return soft_distill(x[0], fixed(x[0], {2, 3, 5}, 22, 2.0), 2.0); }},
    {"soft_distill/t05_transposed", {{6, 3}},
     [](const In& x) { return soft_distill(x[0].t(), fixed(x[0], {3, 6}, 23), 0.5); }},
    {"hard_distill/basic", {{5, 4}}, [](const In& x) { return hard_distill(x[0], fixed(x[0], {5, 4}, 24)); }},
    {"hard_distill/btv", {{2, 3, 6}}, [](const In& x) { return hard_distill(x[0], fixed(x[0], {2, 3, 6}, 25)); }},

    // ---- token relations --------------------------------------------------------------------------
    {"relation_loss/detached_teacher", {{6, 4}},
     [](const In& x) { return relation_loss(x[0], fixed(x[0], {6, 7}, 31)); }},
    {"relation_loss/widths_differ_teacher_grad", {{5, 3}, {5, 7}},
     [](const In& x) { return relation_loss(x[0], x[1], false); }},
    {"relation_loss/groups", {{3, 4, 5}, {3, 4, 6}}, [](const In& x) { return relation_loss(x[0], x[1], false); }},
    {"relation_loss/groups_detached", {{2, 5, 3}},
     [](const In& x) { return relation_loss(x[0], fixed(x[0], {2, 5, 8}, 32), true); }},
    {"relation_loss/transposed_student", {{4, 6}, {6, 3}},
     [](const In& x) { return relation_loss(x[0].t(), x[1], false); }},
    {"relation_loss/same_width", {{4, 4}, {4, 4}}, [](const In& x) { return relation_loss(x[0], x[1], false); }},

    // ---- query-key relations -----------------------------------------------------------------------
    {"qk_relation_loss/all_sides", {{2, 2, 4, 3}, {2, 2, 4, 3}, {2, 2, 4, 5}, {2, 2, 4, 5}},
     [](const In& x) { return qk_relation_loss(x[0], x[1], x[2], x[3], false); }},
    {"qk_relation_loss/detached_teacher", {{2, 3, 4, 2}, {2, 3, 4, 2}},
     [](const In& x) {
         return qk_relation_loss(x[0], x[1], fixed(x[0], {2, 3, 4, 4}, 41), fixed(x[0], {2, 3, 4, 4}, 42));
     }},
    {"qk_relation_loss/heads_3d", {{2, 5, 3}, {2, 5, 3}, {2, 5, 3}, {2, 5, 3}},
     [](const In& x) { return qk_relation_loss(x[0], x[1], x[2], x[3], false); }},
    {"qk_relation_loss/same_q_and_k", {{1, 2, 4, 3}},
     [](const In& x) {
         return qk_relation_loss(x[0], x[0], fixed(x[0], {1, 2, 4, 3}, 43), fixed(x[0], {1, 2, 4, 3}, 44));
     }},
});
