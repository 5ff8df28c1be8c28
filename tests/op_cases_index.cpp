// op_cases_index.cpp — gradcheck cases for the index, join and select families: embedding,
// index_select, gather, scatter_add, topk, concat, split, chunk, stack, where, masked_fill.
// Index tensors and masks are fixed values built inside each case; they cover repeated indices
// (gradients must accumulate), padding_idx, negative dims, uneven split/chunk, index shapes
// smaller than x, and broadcasting in where / masked_fill.
#include <moekd/ops/index.hpp>
#include <moekd/ops/join.hpp>
#include <moekd/ops/select.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

// Index and mask operands are made on the device of the case's inputs (idx_on / mask_on), so
// the backend-ops test runs every case on device tensors.
static RegisterOps reg({
    // ---- embedding: weight (V, D) ----
    {"embedding/repeated_ids", {{5, 3}},
     [](const In& x) { return embedding(x[0], idx_on(x[0], {0, 2, 2, 4, 1, 2}, {2, 3})); }},
    {"embedding/1d_ids", {{4, 2}}, [](const In& x) { return embedding(x[0], idx_on(x[0], {3, 3, 0})); }},
    // The padding row gets no gradient although the forward reads it (as torch); masking the
    // padded outputs makes the finite differences agree with that.
    {"embedding/padding_idx", {{5, 3}},
     [](const In& x) {
         IndexTensor ids = idx_on(x[0], {1, 2, 1, 4, 0, 2}, {2, 3});
         Tensor<double> keep = Tensor<double>::from_vector({0, 1, 0, 1, 1, 1}, {2, 3, 1}).to(x[0].device());
         return embedding(x[0], ids, 1) * keep;
     }},

    // ---- index_select ----
    {"index_select/dim0_repeated", {{4, 3}}, [](const In& x) { return index_select(x[0], 0, idx_on(x[0], {2, 0, 2})); }},
    {"index_select/negative_dim", {{2, 3, 4}},
     [](const In& x) { return index_select(x[0], -1, idx_on(x[0], {3, 1, 1, 0, 3})); }},
    {"index_select/transposed_input", {{3, 4}},
     [](const In& x) { return index_select(x[0].t(), 1, idx_on(x[0], {1, 1, 2})); }},

    // ---- gather / scatter_add ----
    {"gather/dim1_repeated", {{3, 4}},
     [](const In& x) { return gather(x[0], 1, idx_on(x[0], {0, 0, 3, 1, 2, 2}, {3, 2})); }},
    {"gather/dim0_smaller_index", {{4, 3}},
     [](const In& x) { return gather(x[0], 0, idx_on(x[0], {3, 0, 3, 3}, {2, 2})); }},
    {"gather/negative_dim_wider_index", {{2, 3, 4}},
     [](const In& x) {
         // index.size(dim) = 6 > x.size(dim) = 4 is allowed; the other dims are smaller or equal
         return gather(x[0], -1, idx_on(x[0], {0, 1, 2, 3, 3, 3, 1, 1, 0, 2, 2, 2, 3, 2, 1, 0, 0, 0,
                                     0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 3, 2, 2, 2, 2, 1, 1},
                                    {2, 3, 6}));
     }},
    {"gather/transposed_input", {{4, 3}},
     [](const In& x) { return gather(x[0].t(), 1, idx_on(x[0], {3, 0, 1, 1, 2, 2}, {3, 2})); }},
    {"scatter_add/dim0_repeated", {{3, 4}, {2, 4}},
     [](const In& x) { return scatter_add(x[0], 0, idx_on(x[0], {0, 1, 2, 0, 0, 1, 2, 0}, {2, 4}), x[1]); }},
    {"scatter_add/src_larger_than_index", {{3, 4}, {3, 3}},
     [](const In& x) { return scatter_add(x[0], 1, idx_on(x[0], {3, 3, 0, 1}, {2, 2}), x[1]); }},
    {"scatter_add/negative_dim", {{2, 3}, {2, 5}},
     [](const In& x) { return scatter_add(x[0], -1, idx_on(x[0], {0, 0, 2, 1, 0, 2, 2, 2, 1, 0}, {2, 5}), x[1]); }},
    {"scatter_add/same_tensor_twice", {{3, 3}},
     [](const In& x) { return scatter_add(x[0], 1, idx_on(x[0], {2, 2, 0, 1, 1, 1, 0, 0, 0}, {3, 3}), x[0] * x[0]); }},

    // ---- topk: values are differentiable (distinct inputs: no near ties to reorder) ----
    {"topk/last_dim", {{3, 5}}, [](const In& x) { return topk(x[0], 2).first; }, Init::Distinct},
    {"topk/dim0", {{4, 3}}, [](const In& x) { return topk(x[0], 3, 0).first; }, Init::Distinct},

    // ---- concat / stack ----
    {"concat/dim0", {{2, 3}, {4, 3}}, [](const In& x) { return concat<double>({x[0], x[1]}, 0); }},
    {"concat/dim1_three", {{2, 1}, {2, 3}, {2, 2}},
     [](const In& x) { return concat<double>({x[0], x[1] * 2.0, x[2]}, 1); }},
    {"concat/negative_dim", {{2, 3, 2}, {2, 3, 1}}, [](const In& x) { return concat<double>({x[0], x[1]}, -1); }},
    {"concat/same_tensor_twice", {{2, 3}}, [](const In& x) { return concat<double>({x[0], x[0].t().t()}, 0); }},
    {"stack/dim0", {{2, 3}, {2, 3}, {2, 3}}, [](const In& x) { return stack<double>({x[0], x[1], x[2]}, 0); }},
    {"stack/negative_dim", {{2, 3}, {2, 3}}, [](const In& x) { return stack<double>({x[0], x[1] * x[1]}, -1); }},

    // ---- split / chunk: views; each piece is used differently so every gradient is distinct ----
    {"split/uneven", {{5, 2}},
     [](const In& x) {
         auto p = split(x[0], 2, 0);  // 2, 2, 1
         return concat<double>({exp(p[0]), p[1] * 3.0, p[2] * p[2]}, 0);
     }},
    {"split/sizes_negative_dim", {{2, 6}},
     [](const In& x) {
         auto p = split(x[0], std::vector<int64_t>{1, 3, 2}, -1);
         return concat<double>({p[2] * 2.0, tanh(p[0]), p[1]}, -1);
     }},
    {"chunk/uneven", {{7, 2}},
     [](const In& x) {
         auto p = chunk(x[0], 3, 0);  // 3, 3, 1
         return concat<double>({p[0] * p[0], p[1] * -1.0, p[2]}, 0);
     }},
    {"chunk/negative_dim", {{2, 5}},
     [](const In& x) {
         auto p = chunk(x[0], 2, -1);  // 3, 2
         return concat<double>({p[1], exp(p[0])}, 1);
     }},

    // ---- where / masked_fill ----
    {"where/same_shape", {{2, 3}, {2, 3}},
     [](const In& x) { return where(mask_on(x[0], {1, 0, 0, 1, 1, 0}, {2, 3}), x[0], x[1]); }},
    {"where/broadcast_cond_3x1", {{3, 4}, {4}},
     [](const In& x) { return where(mask_on(x[0], {1, 0, 1}, {3, 1}), x[0], x[1]); }},
    {"where/all_broadcast", {{1, 4}, {3, 1}},
     [](const In& x) { return where(mask_on(x[0], {0, 1, 1, 0}, {4}), x[0], x[1]); }},
    {"where/scalar_branch", {{3, 4}},
     [](const In& x) { return where(gt(x[0], 0.0), x[0], 0.0); }, Init::AwayFromZero},
    {"masked_fill/same_shape", {{2, 3}},
     [](const In& x) { return masked_fill(x[0], mask_on(x[0], {0, 1, 0, 1, 1, 0}, {2, 3}), -7.0); }},
    {"masked_fill/broadcast_mask", {{2, 3, 4}},
     [](const In& x) { return masked_fill(x[0], mask_on(x[0], {1, 0, 0, 1}, {4}), 0.5); }},
    {"masked_fill/transposed_input", {{3, 2}},
     [](const In& x) { return masked_fill(x[0].t(), mask_on(x[0], {1, 0, 1}, {1, 3}), 0.0) * 2.0; }},
});
