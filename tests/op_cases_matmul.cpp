// op_cases_matmul.cpp — gradcheck cases for matmul (every torch.matmul shape rule: 2-D, 1-D
// promotion on either side, dot, batched with broadcast batch dims), bmm and linear.
// Transposed operands check that the no-copy column-major path has the right backward too.
#include <moekd/ops/matmul.hpp>

#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

static RegisterOps reg({
    {"matmul/2d", {{3, 4}, {4, 5}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/transposed_lhs", {{4, 3}, {4, 5}}, [](const In& x) { return matmul(x[0].t(), x[1]); }},
    {"matmul/transposed_rhs", {{3, 4}, {5, 4}}, [](const In& x) { return matmul(x[0], x[1].t()); }},
    {"matmul/both_transposed", {{4, 3}, {5, 4}}, [](const In& x) { return matmul(x[0].t(), x[1].t()); }},
    {"matmul/strided_slice", {{3, 7}, {4, 5}},
     [](const In& x) { return matmul(x[0].narrow(1, 2, 4), x[1]); }},
    {"matmul/vec_mat", {{4}, {4, 5}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/mat_vec", {{3, 4}, {4}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/dot", {{6}, {6}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/same_tensor_twice", {{4, 4}}, [](const In& x) { return matmul(x[0], x[0]); }},
    {"matmul/batched_broadcast", {{2, 1, 3, 4}, {5, 4, 2}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/batched_rhs_2d", {{2, 3, 4}, {4, 5}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/batched_lhs_2d", {{3, 4}, {2, 4, 5}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/batched_vec_rhs", {{2, 3, 4}, {4}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/vec_batched", {{4}, {2, 4, 3}}, [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/batched_transposed", {{2, 4, 3}, {2, 5, 4}},
     [](const In& x) { return matmul(x[0].transpose(1, 2), x[1].transpose(-1, -2)); }},
    {"bmm/basic", {{3, 2, 4}, {3, 4, 5}}, [](const In& x) { return bmm(x[0], x[1]); }},
    {"bmm/transposed", {{3, 4, 2}, {3, 4, 5}}, [](const In& x) { return bmm(x[0].transpose(1, 2), x[1]); }},
    {"linear/bias", {{3, 4}, {5, 4}, {5}}, [](const In& x) { return linear(x[0], x[1], x[2]); }},
    {"linear/no_bias", {{3, 4}, {5, 4}}, [](const In& x) { return linear(x[0], x[1]); }},
    {"linear/3d_input", {{2, 3, 4}, {5, 4}, {5}}, [](const In& x) { return linear(x[0], x[1], x[2]); }},
    {"linear/1d_input", {{4}, {5, 4}, {5}}, [](const In& x) { return linear(x[0], x[1], x[2]); }},
    {"linear/transposed_input", {{4, 3}, {5, 4}, {5}}, [](const In& x) { return linear(x[0].t(), x[1], x[2]); }},
    {"linear/transposed_weight", {{3, 4}, {4, 5}}, [](const In& x) { return linear(x[0], x[1].t()); }},
    {"linear/fused_relu", {{3, 4}, {5, 4}, {5}}, [](const In& x) { return linear(x[0], x[1], x[2], true); }},
    {"linear/fused_relu_3d_no_bias", {{2, 3, 4}, {5, 4}}, [](const In& x) { return linear(x[0], x[1], Tensor<double>(), true); }},
});
