// moekd.hpp — everything: tensors, autograd and ops (tensor.hpp), modules (nn.hpp), the MoE
// layer and the WideNet stack, the methods TSJT / TCD / OneS (methods.hpp), knowledge-transfer
// losses, SVD and SVD knowledge gathering (linalg.hpp), optimizers and schedules, safetensors and
// training checkpoints, Hugging Face checkpoints of BERT / ViT (io/hf.hpp), data readers. The
// CUDA backend is separate: <moekd/cuda.hpp>, linked through moekd::cuda.
#pragma once

#include "tensor.hpp"
#include "nn.hpp"
#include "moe.hpp"
#include "nn/widenet.hpp"
#include "methods.hpp"
#include "losses.hpp"
#include "linalg.hpp"
#include "optim/optimizers.hpp"
#include "optim/schedule.hpp"
#include "io/safetensors.hpp"
#include "io/checkpoint.hpp"
#include "io/hf.hpp"
#include "data/cifar.hpp"
#include "data/idx.hpp"
#include "testing/gradcheck.hpp"
