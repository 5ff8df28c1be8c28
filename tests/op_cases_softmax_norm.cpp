// op_cases_softmax_norm.cpp — gradcheck cases for softmax, log_softmax, layer_norm,
// cross_entropy, nll_loss and dropout.
// Covers: softmax over dim 0, the last dim, a middle dim and a transposed (non-contiguous) input;
// layer_norm with and without affine, over 1 and 2 dims; cross_entropy with ignored targets,
// label smoothing, 3-D logits, each reduction and +1000 logits. Index tensors are built inside
// the case functions; dropout builds its Generator there too, with a constant seed, so every
// finite-difference evaluation sees the same mask.
#include <moekd/ops/dropout.hpp>
#include <moekd/ops/loss.hpp>
#include <moekd/ops/norm.hpp>
#include <moekd/ops/softmax.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

static RegisterOps reg({
    // ---- softmax / log_softmax ---------------------------------------------------------------
    {"softmax/last_dim", {{3, 5}}, [](const In& x) { return softmax(x[0], -1); }},
    {"softmax/dim0", {{4, 3}}, [](const In& x) { return softmax(x[0], 0); }},
    {"softmax/middle_dim", {{2, 3, 4}}, [](const In& x) { return softmax(x[0], 1); }},
    {"softmax/transposed_input", {{3, 4}}, [](const In& x) { return softmax(x[0].t(), 1); }},
    {"softmax/transposed_input_dim0", {{3, 4}}, [](const In& x) { return softmax(x[0].t(), 0); }},
    {"softmax/large_offset", {{2, 4}}, [](const In& x) { return softmax(x[0] + 1000.0, -1); }},
    {"log_softmax/last_dim", {{3, 5}}, [](const In& x) { return log_softmax(x[0], -1); }},
    {"log_softmax/dim0", {{4, 3}}, [](const In& x) { return log_softmax(x[0], 0); }},
    {"log_softmax/transposed_input", {{2, 3, 4}}, [](const In& x) { return log_softmax(x[0].transpose(0, 2), 1); }},

    // ---- layer_norm --------------------------------------------------------------------------
    {"layer_norm/no_affine", {{3, 5}}, [](const In& x) { return layer_norm(x[0], {5}); }},
    {"layer_norm/affine", {{3, 5}, {5}, {5}}, [](const In& x) { return layer_norm(x[0], {5}, x[1], x[2]); }},
    {"layer_norm/weight_only", {{2, 3, 4}, {4}}, [](const In& x) { return layer_norm(x[0], {4}, x[1]); }},
    {"layer_norm/bias_only", {{2, 4}, {4}},
     [](const In& x) { return layer_norm(x[0], {4}, Tensor<double>(), x[1]); }},
    {"layer_norm/two_dims_affine", {{2, 3, 4}, {3, 4}, {3, 4}},
     [](const In& x) { return layer_norm(x[0], {3, 4}, x[1], x[2]); }},
    {"layer_norm/two_dims_no_affine", {{2, 3, 4}}, [](const In& x) { return layer_norm(x[0], {3, 4}); }},
    {"layer_norm/transposed_input", {{4, 3}, {4}, {4}},
     [](const In& x) { return layer_norm(x[0].t(), {4}, x[1], x[2], 1e-3); }},

    // ---- cross_entropy / nll_loss ----------------------------------------------------------------
    {"cross_entropy/basic", {{4, 5}}, [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {1, 0, 4, 2})); }},
    {"cross_entropy/ignore_index", {{4, 5}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {1, -100, 4, -100})); }},
    {"cross_entropy/custom_ignore_index", {{3, 4}}, [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {0, 3, 0}), 0); }},
    {"cross_entropy/label_smoothing", {{4, 5}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {1, 0, 4, 2}), -100, 0.1); }},
    {"cross_entropy/smoothing_and_ignore", {{4, 5}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {1, -100, 4, 2}), -100, 0.1); }},
    {"cross_entropy/logits_3d", {{2, 3, 4}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {0, 3, 1, 2, -100, 3}, {2, 3}), -100, 0.2); }},
    {"cross_entropy/sum", {{3, 4}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {0, 3, 1}), -100, 0.0, Reduction::Sum); }},
    {"cross_entropy/none", {{3, 4}},
     [](const In& x) { return cross_entropy(x[0], idx_on(x[0], {0, -100, 1}), -100, 0.3, Reduction::None); }},
    {"cross_entropy/large_logits", {{3, 4}},
     [](const In& x) { return cross_entropy(x[0] + 1000.0, idx_on(x[0], {0, 3, 1}), -100, 0.1); }},
    {"cross_entropy/transposed_logits", {{4, 3}},
     [](const In& x) { return cross_entropy(x[0].t(), idx_on(x[0], {0, 3, 1})); }},
    {"nll_loss/basic", {{4, 5}},
     [](const In& x) { return nll_loss(log_softmax(x[0], -1), idx_on(x[0], {1, -100, 4, 2})); }},
    {"nll_loss/none", {{2, 3, 4}},
     [](const In& x) { return nll_loss(x[0], idx_on(x[0], {0, 3, 1, 2, -100, 3}, {2, 3}), -100, Reduction::None); }},

    // ---- dropout -----------------------------------------------------------------------------
    {"dropout/p0.3", {{4, 5}},
     [](const In& x) {
         Generator gen(42);
         return dropout(x[0], 0.3, true, gen);
     }},
    {"dropout/transposed_input", {{4, 5}},
     [](const In& x) {
         Generator gen(7);
         return dropout(x[0].t(), 0.5, true, gen);
     }},
    {"dropout/eval_identity", {{3, 4}},
     [](const In& x) {
         Generator gen(1);
         return dropout(x[0], 0.5, false, gen) * 2.0;
     }},
});
