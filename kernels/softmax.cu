// softmax.cu — compiles the softmax / log_softmax and cross-entropy kernels of
// include/moekd/kernels/softmax.cuh (a warp per row for rows up to 1024 entries, a block per row
// above, a thread per row for a strided dim; the loss reduction) for float and double, behind the
// raw launchers that include/moekd/cuda/softmax.hpp declares.
#include <moekd/cuda/softmax.hpp>
#include <moekd/kernels/softmax.cuh>

namespace moekd::cuda::detail {

template <class T>
void softmax_fwd_raw(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (outer * n * inner == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_fwd<T>(x, y, outer, n, inner, log)));
}

template <class T>
void softmax_grad_raw(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (outer * n * inner == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_bwd<T>(y, g, gx, outer, n, inner, log)));
}

template <class T>
void cross_entropy_fwd_raw(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                           int64_t C, int64_t ignore_index, T smoothing, double divisor) {
    if (N > 0)
        MOEKD_CUDA_CHECK(
            (kern::cuda::launch_cross_entropy_fwd<T>(logits, targets, rows, rmax, lsum, N, C, ignore_index, smoothing)));
    if (loss) MOEKD_CUDA_CHECK((kern::cuda::launch_cross_entropy_reduce<T>(rows, loss, N, divisor)));
}

template <class T>
void cross_entropy_bwd_raw(const T* logits, const int64_t* targets, const T* rmax, const T* lsum, const T* g,
                           bool per_row, T divisor, T* gx, int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_cross_entropy_bwd<T>(logits, targets, rmax, lsum, g, per_row, divisor, gx, N, C,
                                                              ignore_index, smoothing)));
}

#define MOEKD_INSTANTIATE_SOFTMAX(T)                                                                          \
    template void softmax_fwd_raw<T>(const T*, T*, int64_t, int64_t, int64_t, bool);                           \
    template void softmax_grad_raw<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool);                \
    template void cross_entropy_fwd_raw<T>(const T*, const int64_t*, T*, T*, T*, T*, int64_t, int64_t, int64_t, T, \
                                           double);                                                           \
    template void cross_entropy_bwd_raw<T>(const T*, const int64_t*, const T*, const T*, const T*, bool, T, T*,   \
                                           int64_t, int64_t, int64_t, T);
MOEKD_INSTANTIATE_SOFTMAX(float)
MOEKD_INSTANTIATE_SOFTMAX(double)
#undef MOEKD_INSTANTIATE_SOFTMAX

}  // namespace moekd::cuda::detail
