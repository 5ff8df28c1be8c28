// cuda.hpp — the CUDA backend: device memory, host<->device copies, elementwise kernels, cuBLAS,
// and the MoE / distillation kernels (router, dispatch, expert FFN, symmetric KL, cosine relation).
//
// Only for programs built with MOEKD_CUDA=ON that link moekd::cuda (the library built from
// kernels/*.cu; it brings CUDA::cudart, cuBLAS, cuSOLVER and NCCL when found). Including it
// installs the GPU caching allocator, so Tensor<T>::empty(shape, Device::CUDA) works.
//
//   if (moekd::cuda::device_count() == 0) return;           // no GPU: never throws
//   auto xd = moekd::cuda::to_device(x);                     // x: (N, D) on the CPU
//   auto yd = moekd::cuda::unary<moekd::kern::Gelu>(xd);     // same MOEKD_HD math as moekd::gelu
//   auto zd = moekd::cuda::matmul(yd, moekd::cuda::to_device(w));  // w: (D, K) -> (N, K)
//   auto z  = moekd::cuda::to_cpu(zd);
//   auto r  = moekd::cuda::softmax_topk(logits_d, 2, true);  // router; cuda/gating.hpp
//   auto p  = moekd::cuda::make_dispatch_plan(r.experts, E, capacity);   // cuda/dispatch.hpp
//   auto ce = moekd::cuda::cross_entropy(logits_d, targets_d);           // cuda/softmax.hpp
//   auto ln = moekd::cuda::layer_norm(x_d, w_d, b_d);                    // cuda/norm.hpp
//
// It also fills the op API's device table (cuda/ops.hpp), so the ops themselves take CUDA tensors,
// with autograd, as on the CPU:
//   auto x = Tensor<float>::randn({8, 16}).to(Device::CUDA).requires_grad_();
//   auto loss = mean(gelu(linear(x, w_d, b_d)));             // all on the GPU
//   loss.backward();                                         // x.grad() is on the GPU too
//
// The cuda:: functions above carry no autograd; they are the launch layer the ops build on.
#pragma once

#include "cuda/allocator.hpp"
#include "cuda/blas.hpp"
#include "cuda/copy.hpp"
#include "cuda/dispatch.hpp"
#include "cuda/elementwise.hpp"
#include "cuda/error.hpp"
#include "cuda/experts.hpp"
#include "cuda/gating.hpp"
#include "cuda/kl.hpp"
#include "cuda/norm.hpp"
#include "cuda/ops.hpp"
#include "cuda/relation.hpp"
#include "cuda/runtime.hpp"
#include "cuda/softmax.hpp"
