// tcd.hpp — TCD, transfer-capability distillation ("Improving the Downstream Performance of
// Mixture-of-Experts Transformers via Weak Vanilla Transformers", Lu et al.; text in
// ../shared/papers/): a weak vanilla Transformer teaches an MoE Transformer by aligning, layer by
// layer, the pairwise cosine-similarity matrices of their token representations (model trunk,
// residual inner, attention query-key). The whole method is in losses/tcd.hpp (the capture by
// forward hooks, the token-group sampling and the loss); this header is its place among the
// methods.
//
// Usage (lines of the complete program in docs/methods.md, which the tests build and run; tests/docs
// checks that every line below is in it):
//
//   const tcd::TcdWeights w{/*trunk=*/1.0, /*inner=*/1.0, /*attention=*/0.0};
//   tcd::RepresentationCapture<float> cs(student, tcd::CaptureWhat::from(w)), ct(teacher, tcd::CaptureWhat::from(w));
//   // ...
//   const nn::AuxOutput<float> out = student.forward_with_aux(ids);
//   const Tensor<int64_t> groups = tcd::sample_batch_token_groups(2, 8, Tensor<uint8_t>(), /*groups=*/2, /*size=*/6, gen);
//   Tensor<float> loss = tcd::tcd_loss(cs, ct, groups, w).total + out.aux;  // + the MLM loss in a trainer
#pragma once

#include "../losses/tcd.hpp"
