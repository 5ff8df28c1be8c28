// tcd.hpp — TCD, transfer-capability distillation ("Improving the Downstream Performance of
// Mixture-of-Experts Transformers via Weak Vanilla Transformers", Lu et al.; text in
// ../shared/papers/): a weak vanilla Transformer teaches an MoE Transformer by aligning, layer by
// layer, the pairwise cosine-similarity matrices of their token representations (model trunk,
// residual inner, attention query-key). The whole method is in losses/tcd.hpp (the capture by
// forward hooks, the token-group sampling and the loss); this header is its place among the
// methods.
//
// Usage (two nn::BertEncoder of the same depth and heads; the student with MoE FFNs; a complete
// program, built and run by the tests: docs/methods.md):
//
//   tcd::TcdWeights w;                                   // lambda_T, lambda_I, lambda_A
//   tcd::RepresentationCapture<float> cs(student, tcd::CaptureWhat::from(w)), ct(teacher, tcd::CaptureWhat::from(w));
//   { NoGrad ng; teacher.forward_with_aux(ids, {}, pad); }   // the teacher gets no gradient
//   const nn::AuxOutput<float> o = student.forward_with_aux(ids, {}, pad);
//   const Tensor<int64_t> groups = tcd::sample_batch_token_groups(B, T, pad, 32, 128, gen);
//   Tensor<float> loss = mlm_loss + tcd::tcd_loss(cs, ct, groups, w).total;
#pragma once

#include "../losses/tcd.hpp"
