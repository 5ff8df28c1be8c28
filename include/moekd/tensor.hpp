// tensor.hpp — the public header for tensors, autograd and every op. Most users want this
// (or <moekd/moekd.hpp>, which also brings modules, optimizers and checkpoints).
#pragma once

#include "core/tensor.hpp"
#include "autograd/engine.hpp"
#include "autograd/grad_mode.hpp"
#include "ops/view.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/reduce.hpp"
#include "ops/softmax.hpp"
#include "ops/norm.hpp"
#include "ops/loss.hpp"
#include "ops/dropout.hpp"
#include "ops/index.hpp"
#include "ops/join.hpp"
#include "ops/select.hpp"
