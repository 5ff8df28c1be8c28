// nn.hpp — the umbrella header of moekd::nn: modules (module.hpp), basic layers, attention,
// Transformer layers and stacks, BERT / ViT, Houlsby adapters, and cached greedy / beam decoding
// of an encoder-decoder (nn/decode.hpp).
#pragma once

#include "nn/module.hpp"
#include "nn/layers.hpp"
#include "nn/attention.hpp"
#include "nn/adapter.hpp"
#include "nn/transformer.hpp"
#include "nn/models.hpp"
#include "nn/decode.hpp"
