// relation.cu — the device table's cosine-relation entries (core/backend.hpp; relation_loss and
// qk_relation_loss in losses/relation.hpp, whose Gram matrices are the table's gemm): the kernels of
// include/moekd/kernels/relation.cuh (row normalisation forward / backward, Gram difference; a warp
// or a block per row) for float and double, plus the reduction of the squared differences to the
// loss (one block, a fixed order in double). Compiled by nvcc into moekd::cuda, and by g++ into the
// emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/relation.cuh>

namespace moekd::cuda {
namespace {

constexpr int kReduceThreads = 256;

// One block: thread i sums x[i], x[i + 256], ... in double, then a fixed tree; out[0] = scale * sum.
template <class T>
__global__ void sum_scaled_kernel(const T* __restrict__ x, int64_t n, double scale, T* __restrict__ out) {
    __shared__ double s_sum[kReduceThreads];
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(x[i]);
    s_sum[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (static_cast<int>(threadIdx.x) < h) s_sum[threadIdx.x] += s_sum[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = static_cast<T>(scale * s_sum[0]);
}

template <class T>
void l2_normalize_raw(const T* x, T* y, T* nrm, int64_t rows, int64_t n, T eps) {
    if (rows == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_l2_normalize_fwd<T>(x, y, nrm, rows, n, eps)));
}

/// gx from the gradient g of y, times scale[0] first when scale (a device pointer) is not null.
template <class T>
void l2_normalize_backward_raw(const T* y, const T* g, const T* scale, const T* nrm, T* gx, int64_t rows, int64_t n,
                               T eps) {
    if (rows == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_l2_normalize_bwd<T>(y, g, scale, gx, nrm, rows, n, eps)));
}

/// e (rows, n) holds gs, becomes gs - gt; loss[0] = scale * sum of all squares (rows in order, double).
template <class T>
void relation_diff_raw(T* e, const T* gt, T* sq, T* loss, int64_t rows, int64_t n, double scale) {
    if (rows > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_relation_diff<T>(e, gt, sq, rows, n)));
    MOEKD_LAUNCH(1, kReduceThreads, 0, 0, sum_scaled_kernel<T>)(sq, rows, scale, loss);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.l2_normalize_rows = &l2_normalize_raw<T>;
    o.l2_normalize_rows_backward = &l2_normalize_backward_raw<T>;
    o.relation_diff = &relation_diff_raw<T>;
}

}  // namespace

void detail::install_relation_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
