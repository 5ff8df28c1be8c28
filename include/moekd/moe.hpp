// moe.hpp — the Mixture-of-Experts module in one include: the router (top-k gating, capacity,
// jitter), dispatch (counting-sort permutation, grouped expert GEMMs, gate-weighted combine, all
// differentiable), the balance losses and load statistics, and MoELayer, an nn::FFNBase that a
// Transformer layer takes in place of its dense FFN.
#pragma once

#include "moe/balance.hpp"
#include "moe/dispatch.hpp"
#include "moe/expert_ffn.hpp"
#include "moe/moe_layer.hpp"
#include "moe/router.hpp"
