// tensor.hpp — the public header for tensors, autograd and every op. Most users want this
// (or <moekd/moekd.hpp>, which also brings modules, MoE, losses and optimizers).
#pragma once

#include "core/tensor.hpp"
#include "autograd/engine.hpp"
#include "autograd/grad_mode.hpp"
#include "ops/view.hpp"
#include "ops/elementwise.hpp"
#include "ops/reduce.hpp"
