// kl.cu — the device table's KL entries (core/backend.hpp; moekd::symmetric_kl and
// soft_distill in losses/kd.hpp): the fused kernels of include/moekd/kernels/kl.cuh (a
// warp or a block per row for the forward statistics, per-element backward kernels) for float and
// double, plus the reduction of the row losses to the scalar loss (one block, a fixed order in
// double). Compiled by nvcc into moekd::cuda, and by g++ into the emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/kl.cuh>

namespace moekd::cuda {
namespace {

constexpr int kReduceThreads = 256;

// One block: thread i sums rows i, i + 256, ... (in order, double), then a fixed tree. The result
// does not depend on scheduling. The row loss is kl_ab + kl_ba (sym) or kl_ab (soft distillation);
// loss[0] = mul * total / count (0 when count == 0), count[0] = kept rows (when count is not null).
template <class T>
__global__ void kl_loss_reduce_kernel(const kern::KlRowStats<T>* __restrict__ stats, const uint8_t* __restrict__ mask,
                                      bool sym, double mul, T* __restrict__ loss, int64_t* __restrict__ count,
                                      int64_t rows) {
    __shared__ double s_sum[kReduceThreads];
    __shared__ long long s_cnt[kReduceThreads];
    double s = 0;
    long long c = 0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        if (mask && mask[r]) continue;
        s += sym ? static_cast<double>(stats[r].kl_ab) + static_cast<double>(stats[r].kl_ba)
                 : static_cast<double>(stats[r].kl_ab);
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
        loss[0] = static_cast<T>(s_cnt[0] ? mul * s_sum[0] / static_cast<double>(s_cnt[0]) : 0.0);
        if (count) count[0] = s_cnt[0];
    }
}

template <class T>
void kl_reduce(const kern::KlRowStats<T>* st, const uint8_t* mask, bool sym, double mul, T* loss, int64_t* count,
               int64_t rows) {
    MOEKD_LAUNCH(1, kReduceThreads, 0, 0, kl_loss_reduce_kernel<T>)(st, mask, sym, mul, loss, count, rows);
    MOEKD_CUDA_CHECK(cudaGetLastError());
}

/// stats[r] for every non-pad row; loss[0] = sum over kept rows (fixed order, double) / count;
/// count[0] = kept rows. a, b: (rows, n); mask: (rows) or null.
template <class T>
void kl_forward_raw(const T* a, const T* b, const uint8_t* mask, T* stats, T* loss, int64_t* count, int64_t rows,
                    int64_t n) {
    auto* st = reinterpret_cast<kern::KlRowStats<T>*>(stats);
    if (rows > 0) MOEKD_CUDA_CHECK((kern::cuda::launch_kl_fwd<T>(a, b, mask, st, rows, n)));
    kl_reduce<T>(st, mask, true, 1.0, loss, count, rows);
}

/// ga / gb (either may be null) = g[0] / count[0] * d(symmetric KL of the row)/d logits; zero for
/// pad rows and when count[0] == 0. g, count: device pointers.
template <class T>
void kl_sym_backward_raw(const T* a, const T* b, const uint8_t* mask, const T* stats, const T* g, const int64_t* count,
                         T* ga, T* gb, int64_t rows, int64_t n) {
    if (rows * n == 0 || (!ga && !gb)) return;
    const auto* st = reinterpret_cast<const kern::KlRowStats<T>*>(stats);
    MOEKD_CUDA_CHECK((kern::cuda::launch_kl_sym_bwd<T>(a, b, mask, st, g, count, ga, gb, rows, n)));
}

template <class T>
void soft_distill_raw(const T* student, const T* teacher, double temperature, T* stats, T* loss, int64_t rows,
                      int64_t n) {
    auto* st = reinterpret_cast<kern::KlRowStats<T>*>(stats);
    const T inv_t = static_cast<T>(1.0 / temperature);  // as the CPU's scaled copies
    // a = teacher / temp (the target p), b = student / temp
    if (rows > 0)
        MOEKD_CUDA_CHECK((kern::cuda::launch_kl_fwd<T>(teacher, student, nullptr, st, rows, n, 0, true, inv_t)));
    kl_reduce<T>(st, nullptr, false, temperature * temperature, loss, nullptr, rows);
}

template <class T>
void soft_distill_backward_raw(const T* student, const T* teacher, double temperature, const T* stats, const T* g,
                               T* gs, int64_t rows, int64_t n) {
    if (rows * n == 0) return;
    const auto* st = reinterpret_cast<const kern::KlRowStats<T>*>(stats);
    const T inv_t = static_cast<T>(1.0 / temperature);
    MOEKD_CUDA_CHECK((kern::cuda::launch_kl_target_bwd<T>(student, teacher, inv_t, st, g, temperature, gs, rows, n)));
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.symmetric_kl = &kl_forward_raw<T>;
    o.symmetric_kl_backward = &kl_sym_backward_raw<T>;
    o.soft_distill = &soft_distill_raw<T>;
    o.soft_distill_backward = &soft_distill_backward_raw<T>;
}

}  // namespace

void detail::install_kl_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
