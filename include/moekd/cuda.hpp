// cuda.hpp — the CUDA backend. One op API: moekd's ops (and autograd) take CUDA tensors as they
// take CPU ones; this header adds no second set of device functions, only what a program needs
// around them.
//
// Only for programs built with MOEKD_CUDA=ON that link moekd::cuda (the library built from
// kernels/*.cu; it brings CUDA::cudart, cuBLAS, cuSOLVER and NCCL when found), or moekd::cuda_emu
// (the same kernels on an emulated device, emu/). Including it installs the GPU caching allocator
// and fills the op API's device table, so:
//
//   if (moekd::cuda::device_count() == 0) return;          // no GPU: never throws; no_device_reason() says why
//   auto x = Tensor<float>::randn({8, 16}).to(Device::CUDA).requires_grad_();
//   auto w = w_cpu.to(Device::CUDA), b = b_cpu.to(Device::CUDA);
//   auto loss = mean(gelu(linear(x, w, b)));               // every op on the GPU
//   loss.backward();                                       // x.grad() is on the GPU too
//   float l = loss.item();                                 // .item(), .to_vector(), .to(Device::CPU) copy back
//   model.to(Device::CUDA);                                // nn modules, the MoE layer, optimizers, losses alike
//
// The public surface, all in namespace moekd::cuda:
//   cuda/runtime.hpp    device_count(), no_device_reason(), current_device(), set_device(),
//                       synchronize(), build_info()
//   cuda/allocator.hpp  CudaAllocator (the caching allocator), memory_stats(), empty_cache(),
//                       install_allocator()
//   cuda/ops.hpp        install_ops(): the device table of core/backend.hpp (DeviceOps<T>)
//   cuda/error.hpp      MOEKD_CUDA_CHECK(call), for a program's own CUDA runtime calls
// Tensor<T>::to(Device) moves data between host and device (a data move, no history).
//
// Layout of the implementation (nothing of it is for programs to call):
//   include/moekd/kernels/<family>.cuh  the MOEKD_HD per-element / per-row math (the CPU ops call
//                                       it too), then the __global__ kernels and their
//                                       kern::cuda::launch_* launchers (nvcc and the emulation only)
//   kernels/<family>.cu                 the table entries of one family: host functions over raw
//                                       device pointers that launch those kernels (or cuBLAS /
//                                       cuSOLVER), file-local, and detail::install_<family>_ops()
//                                       assigning them to DeviceOps<T>; install_ops() (kernels/ops.cu)
//                                       calls every family's installer. kernels/README.md lists
//                                       which file fills which entries.
//   kernels/cublas.hpp                  the cuBLAS handle and column-major GEMM the kernel files
//                                       share (moekd::cuda::detail; private to kernels/, not installed)
// Anything in moekd::cuda::detail is internal.
#pragma once

#include "cuda/allocator.hpp"
#include "cuda/error.hpp"
#include "cuda/ops.hpp"
#include "cuda/runtime.hpp"
