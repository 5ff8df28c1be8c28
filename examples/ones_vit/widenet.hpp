// widenet.hpp — the models of the OneS reproduction and the two OneS initialisation steps, named
// in the example's namespace. All of it is library code:
//   nn::WideNetViT (nn/widenet.hpp)   a ViT whose L blocks share ONE attention module and ONE FFN
//                                     (WideNet, as the OneS paper cites it), each block with its own
//                                     two LayerNorms; with experts > 0 the shared FFN is an MoE layer
//                                     (the teacher), with experts = 0 a dense FFN (the student)
//   ones::copy_matched_layers,        OneS sec. 3 and eq. 10-14 (methods/ones.hpp)
//   ones::gather_ffn
#pragma once

#include <moekd/methods/ones.hpp>
#include <moekd/nn/widenet.hpp>

namespace ones_vit {

using namespace moekd;
using nn::WideNetConfig;
using nn::WideNetOutput;
using nn::WideNetViT;
using ones::copy_matched_layers;
using ones::gather_ffn;
using ones::GatherReport;
using ones::is_ffn_name;

}  // namespace ones_vit
