// losses.hpp — umbrella for the knowledge-transfer losses: symmetric KL and soft / hard
// distillation on logits (losses/kd.hpp), cosine-relation losses on hidden states and attention
// queries / keys, with the token-group sampler (losses/relation.hpp).
#pragma once

#include "losses/kd.hpp"
#include "losses/relation.hpp"
