// kl.cu — compiles the fused symmetric-KL kernels of include/moekd/kernels/kl.cuh (block-per-row
// forward statistics, per-element backward) for float and double, plus the reduction of the row
// losses to the scalar loss, behind the raw launchers that include/moekd/cuda/kl.hpp declares.
#include <moekd/cuda/kl.hpp>
#include <moekd/kernels/kl.cuh>

namespace moekd::cuda::detail {
namespace {

constexpr int kReduceThreads = 256;

// One block: thread i sums rows i, i + 256, ... (in order, double), then a fixed tree. The result
// does not depend on scheduling. loss[0] = total / count (0 when count == 0), count[0] = kept rows.
template <class T>
__global__ void kl_loss_reduce_kernel(const kern::KlRowStats<T>* __restrict__ stats, const uint8_t* __restrict__ mask,
                                      T* __restrict__ loss, int64_t* __restrict__ count, int64_t rows) {
    __shared__ double s_sum[kReduceThreads];
    __shared__ long long s_cnt[kReduceThreads];
    double s = 0;
    long long c = 0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        if (mask && mask[r]) continue;
        s += static_cast<double>(stats[r].kl_ab) + static_cast<double>(stats[r].kl_ba);
        ++c;
    }
    s_sum[threadIdx.x] = s;
    s_cnt[threadIdx.x] = c;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (static_cast<int>(threadIdx.x) < h) {
            s_sum[threadIdx.x] += s_sum[threadIdx.x + h];
            s_cnt[threadIdx.x] += s_cnt[threadIdx.x + h];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        loss[0] = static_cast<T>(s_cnt[0] ? s_sum[0] / static_cast<double>(s_cnt[0]) : 0.0);
        count[0] = s_cnt[0];
    }
}

}  // namespace

template <class T>
void kl_forward_raw(const T* a, const T* b, const uint8_t* mask, T* stats, T* loss, int64_t* count, int64_t rows,
                    int64_t n) {
    auto* st = reinterpret_cast<kern::KlRowStats<T>*>(stats);
    if (rows > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_kl_fwd<T>(a, b, mask, st, rows, n)));
    MOEKD_LAUNCH(1, kReduceThreads, 0, 0, kl_loss_reduce_kernel<T>)(st, mask, loss, count, rows);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void kl_sym_backward_raw(const T* a, const T* b, const uint8_t* mask, const T* stats, T scale, T* ga, T* gb,
                         int64_t rows, int64_t n) {
    if (rows == 0) return;
    const auto* st = reinterpret_cast<const kern::KlRowStats<T>*>(stats);
    MOEKD_CUDA_CHECK((kern::cuda::launch_kl_sym_bwd<T>(a, b, mask, st, scale, ga, gb, rows, n)));
}

#define MOEKD_INSTANTIATE_KL(T)                                                                          \
    template void kl_forward_raw<T>(const T*, const T*, const uint8_t*, T*, T*, int64_t*, int64_t, int64_t); \
    template void kl_sym_backward_raw<T>(const T*, const T*, const uint8_t*, const T*, T, T*, T*, int64_t, int64_t);
MOEKD_INSTANTIATE_KL(float)
MOEKD_INSTANTIATE_KL(double)
#undef MOEKD_INSTANTIATE_KL

}  // namespace moekd::cuda::detail
