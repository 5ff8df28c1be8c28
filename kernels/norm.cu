// norm.cu — the device table's layer-norm entries (core/backend.hpp; moekd::layer_norm in
// ops/norm.hpp): the kernels of include/moekd/kernels/norm.cuh (a warp per row for rows up to 1024
// entries, a block per row above; the two-pass deterministic column reduction of the weight / bias
// gradients), for float and double. Compiled by nvcc into moekd::cuda, and by g++ into the
// emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/core/tensor.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/norm.cuh>

namespace moekd::cuda {
namespace {

/// y, mean, rstd of M contiguous rows of N; w, b may be null.
template <class T>
void layer_norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t M, int64_t N, T eps) {
    if (M == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_layer_norm_fwd<T>(x, w, b, y, mean, rstd, M, N, eps)));
}

/// gx, gw, gb: each may be null (not wanted). Allocates the parameter-gradient workspace itself.
template <class T>
void layer_norm_bwd(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* gx, T* gw, T* gb, int64_t M,
                    int64_t N) {
    if (M == 0) return;
    Tensor<double> partial;  // (gw, gb) x chunks x N doubles of pass 1
    const int64_t parts = (gw ? 1 : 0) + (gb ? 1 : 0);
    if (parts) partial = Tensor<double>::empty({parts, kern::cuda::layer_norm_param_chunks(M), N}, Device::CUDA);
    MOEKD_CUDA_CHECK((kern::cuda::launch_layer_norm_bwd<T>(x, w, g, mean, rstd, gx, gw, gb,
                                                           parts ? partial.data() : nullptr, M, N)));
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.layer_norm = &layer_norm_fwd<T>;
    o.layer_norm_backward = &layer_norm_bwd<T>;
}

}  // namespace

void detail::install_norm_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
