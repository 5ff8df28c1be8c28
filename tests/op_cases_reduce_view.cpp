// op_cases_reduce_view.cpp — gradcheck cases for reductions and views.
#include "op_registry.hpp"

using namespace moekd;
using namespace moekd::test;

static RegisterOps reg({
    {"sum/all", {{3, 4}}, [](const In& x) { return sum(x[0]); }},
    {"sum/dim1", {{3, 4}}, [](const In& x) { return sum(x[0], {1}); }},
    {"sum/dims_keepdim", {{2, 3, 4}}, [](const In& x) { return sum(x[0], {0, 2}, true); }},
    {"sum/negative_dim", {{2, 3, 4}}, [](const In& x) { return sum(x[0], {-1}); }},
    {"mean/all", {{3, 4}}, [](const In& x) { return mean(x[0]); }},
    {"mean/dim0_keepdim", {{3, 4}}, [](const In& x) { return mean(x[0], {0}, true); }},
    {"max/dim", {{3, 5}}, [](const In& x) { return max(x[0], {1}); }, Init::Distinct},
    {"max/all", {{3, 5}}, [](const In& x) { return max(x[0]); }, Init::Distinct},
    {"min/dims", {{2, 3, 4}}, [](const In& x) { return min(x[0], {0, 2}, true); }, Init::Distinct},
    {"var/unbiased", {{3, 5}}, [](const In& x) { return var(x[0], {1}); }},
    {"var/biased_all", {{3, 5}}, [](const In& x) { return var(x[0], {}, false); }},

    {"view/basic", {{3, 4}}, [](const In& x) { return x[0].view({2, 6}) * x[0].view({2, 6}); }},
    {"reshape/non_contiguous", {{3, 4}}, [](const In& x) { return x[0].t().reshape({-1}); }},
    {"transpose/basic", {{2, 3, 4}}, [](const In& x) { return x[0].transpose(0, 2) * 2.0; }},
    {"permute/basic", {{2, 3, 4}}, [](const In& x) { return x[0].permute({1, 2, 0}).contiguous(); }},
    {"narrow/middle", {{5, 4}}, [](const In& x) { return x[0].narrow(0, 1, 3); }},
    {"narrow/slice_select", {{5, 4}}, [](const In& x) { return x[0].slice(1, 1, -1) + x[0].select(0, -1).narrow(0, 0, 2); }},
    {"expand/basic", {{3, 1}}, [](const In& x) { return x[0].expand({2, 3, 4}); }},
    {"squeeze/basic", {{3, 1, 4}}, [](const In& x) { return x[0].squeeze(1); }},
    {"unsqueeze/basic", {{3, 4}}, [](const In& x) { return x[0].unsqueeze(1).expand({3, 2, 4}); }},
    {"contiguous/transposed", {{3, 4}}, [](const In& x) { return x[0].t().contiguous(); }},
    {"contiguous/flatten", {{2, 3, 4}}, [](const In& x) { return x[0].flatten(1); }},
});
