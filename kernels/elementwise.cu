// elementwise.cu — compiles the elementwise kernels of include/moekd/kernels/elementwise.cuh
// once, for every functor in float and double, so host-compiled code can launch them.
//
// The launcher templates are defined in include/moekd/cuda/elementwise.hpp (nvcc part); this
// file only instantiates them. Adding a functor to MOEKD_CUDA_{UNARY,BINARY}_FUNCTORS there
// adds it here.
#include <moekd/cuda/elementwise.hpp>

namespace moekd::cuda::detail {

#define MOEKD_CUDA_INSTANTIATE_UNARY(F)                                                          \
    template void unary_fwd<kern::F, float>(const float*, float*, int64_t);                      \
    template void unary_fwd<kern::F, double>(const double*, double*, int64_t);                   \
    template void unary_bwd<kern::F, float>(const float*, const float*, const float*, float*, int64_t); \
    template void unary_bwd<kern::F, double>(const double*, const double*, const double*, double*, int64_t);
#define MOEKD_CUDA_INSTANTIATE_BINARY(F)                                                         \
    template void binary_fwd<kern::F, float>(const float*, const float*, float*, int64_t);       \
    template void binary_fwd<kern::F, double>(const double*, const double*, double*, int64_t);

MOEKD_CUDA_UNARY_FUNCTORS(MOEKD_CUDA_INSTANTIATE_UNARY)
MOEKD_CUDA_BINARY_FUNCTORS(MOEKD_CUDA_INSTANTIATE_BINARY)

}  // namespace moekd::cuda::detail
