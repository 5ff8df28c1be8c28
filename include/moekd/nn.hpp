// nn.hpp — the umbrella header of moekd::nn: modules (module.hpp), basic layers, attention,
// Transformer layers and stacks, BERT / ViT, and Houlsby adapters.
#pragma once

#include "nn/module.hpp"
#include "nn/layers.hpp"
#include "nn/attention.hpp"
#include "nn/adapter.hpp"
#include "nn/transformer.hpp"
#include "nn/models.hpp"
