// norm.cu — compiles the layer-norm kernels of include/moekd/kernels/norm.cuh (a warp per row for
// rows up to 1024 entries, a block per row above; the two-pass deterministic column reduction of
// the weight / bias gradients) for float and double, behind the raw launchers that
// include/moekd/cuda/norm.hpp declares.
#include <moekd/cuda/norm.hpp>
#include <moekd/kernels/norm.cuh>

namespace moekd::cuda::detail {

template <class T>
void layer_norm_fwd_raw(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N, T eps) {
    if (M == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_layer_norm_fwd<T>(x, w, b, y, mean, rstd, M, N, eps)));
}

template <class T>
void layer_norm_bwd_raw(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw, T* gb,
                        int64_t M, int64_t N) {
    if (M == 0) return;
    Tensor<double> partial;  // (gw, gb) x chunks x N doubles of pass 1
    const int64_t parts = (gw ? 1 : 0) + (gb ? 1 : 0);
    if (parts) partial = Tensor<double>::empty({parts, kern::cuda::layer_norm_param_chunks(M), N}, Device::CUDA);
    MOEKD_CUDA_CHECK((kern::cuda::launch_layer_norm_bwd<T>(x, w, g, mean, rstd, gx, gw, gb,
                                                           parts ? partial.data() : nullptr, M, N)));
}

#define MOEKD_INSTANTIATE_NORM(T)                                                                             \
    template void layer_norm_fwd_raw<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, T);        \
    template void layer_norm_bwd_raw<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, \
                                        int64_t);
MOEKD_INSTANTIATE_NORM(float)
MOEKD_INSTANTIATE_NORM(double)
#undef MOEKD_INSTANTIATE_NORM

}  // namespace moekd::cuda::detail
