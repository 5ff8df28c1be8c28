// op_cases_elementwise.cpp — gradcheck cases for unary ops and broadcasting binary ops.
// Broadcasting edge cases: size-1 dims on either side, 0-dim scalars, rank differences,
// both operands broadcast at once, and non-contiguous (transposed) operands.
#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

static RegisterOps reg({
    {"neg/basic", {{3, 4}}, [](const In& x) { return neg(x[0]); }},
    {"exp/basic", {{3, 4}}, [](const In& x) { return exp(x[0]); }},
    {"log/basic", {{3, 4}}, [](const In& x) { return log(x[0]); }, Init::Positive},
    {"sqrt/basic", {{3, 4}}, [](const In& x) { return sqrt(x[0]); }, Init::Positive},
    {"rsqrt/basic", {{3, 4}}, [](const In& x) { return rsqrt(x[0]); }, Init::Positive},
    {"abs/basic", {{3, 4}}, [](const In& x) { return abs(x[0]); }, Init::AwayFromZero},
    {"tanh/basic", {{3, 4}}, [](const In& x) { return tanh(x[0]); }},
    {"sigmoid/basic", {{3, 4}}, [](const In& x) { return sigmoid(x[0] * 4.0); }},
    {"relu/basic", {{3, 4}}, [](const In& x) { return relu(x[0]); }, Init::AwayFromZero},
    {"gelu/basic", {{3, 4}}, [](const In& x) { return gelu(x[0] * 2.0); }},
    {"silu/basic", {{3, 4}}, [](const In& x) { return silu(x[0] * 2.0); }},
    {"silu/transposed_input", {{3, 4}}, [](const In& x) { return silu(x[0].t()); }},
    {"pow/cube", {{3, 4}}, [](const In& x) { return pow(x[0], 3.0); }},
    {"pow/fractional", {{3, 4}}, [](const In& x) { return pow(x[0], -1.5); }, Init::Positive},
    {"exp/transposed_input", {{3, 4}}, [](const In& x) { return exp(x[0].t()); }},

    {"add/same_shape", {{3, 4}, {3, 4}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/broadcast_row", {{3, 4}, {4}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/broadcast_col", {{3, 4}, {3, 1}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/both_broadcast", {{3, 1}, {1, 4}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/scalar_tensor", {{3, 4}, {}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/scalar_left", {{}, {2, 3}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/rank_diff", {{2, 3, 4}, {3, 1}}, [](const In& x) { return add(x[0], x[1]); }},
    {"add/same_tensor_twice", {{3, 4}}, [](const In& x) { return add(x[0], x[0]); }},
    {"sub/broadcast", {{2, 1, 4}, {3, 1}}, [](const In& x) { return sub(x[0], x[1]); }},
    {"sub/scalar", {{3, 4}}, [](const In& x) { return 1.5 - x[0]; }},
    {"mul/same_shape", {{3, 4}, {3, 4}}, [](const In& x) { return mul(x[0], x[1]); }},
    {"mul/broadcast", {{2, 3, 4}, {1, 3, 1}}, [](const In& x) { return mul(x[0], x[1]); }},
    {"mul/transposed", {{4, 3}, {3, 4}}, [](const In& x) { return mul(x[0].t(), x[1]); }},
    {"mul/square", {{3, 4}}, [](const In& x) { return x[0] * x[0]; }},
    {"div/same_shape", {{3, 4}, {3, 4}}, [](const In& x) { return div(x[0], x[1]); }, Init::Positive},
    {"div/broadcast", {{2, 3}, {3}}, [](const In& x) { return div(x[0], x[1]); }, Init::Positive},
    {"div/scalar_numerator", {{3}}, [](const In& x) { return 2.0 / x[0]; }, Init::Positive},
});
