// softmax.cu — the device table's softmax / log_softmax and cross-entropy entries (core/backend.hpp;
// moekd::softmax, log_softmax in ops/softmax.hpp, moekd::cross_entropy in ops/loss.hpp): the row
// kernels of include/moekd/kernels/softmax.cuh (a warp per row for rows up to 1024 entries, a
// block per row above, a thread per row for a strided dim; the loss reduction), for float and
// double. Compiled by nvcc into moekd::cuda, and by g++ into the emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/softmax.cuh>

namespace moekd::cuda {
namespace {

/// y = softmax (log_softmax when `log`) of contiguous x read as (outer, n, inner), over n.
template <class T>
void softmax_fwd(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (outer * n * inner == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_fwd<T>(x, y, outer, n, inner, log)));
}

/// gx = the backward of softmax (log_softmax when `log`) from its output y and gradient g.
template <class T>
void softmax_bwd(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (outer * n * inner == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_bwd<T>(y, g, gx, outer, n, inner, log)));
}

/// Per-row loss, max and log-sum of logits (N, C), ignored rows 0; loss: the reduced scalar (the
/// row sum in double / divisor, divisor 0 gives 0), or null for Reduction::None.
template <class T>
void cross_entropy_fwd(const T* logits, const int64_t* targets, T* rows, T* rmax, T* lsum, T* loss, int64_t N,
                       int64_t C, int64_t ignore_index, T smoothing, double divisor) {
    if (N > 0)
        MOEKD_CUDA_CHECK(
            (kern::cuda::launch_cross_entropy_fwd<T>(logits, targets, rows, rmax, lsum, N, C, ignore_index, smoothing)));
    if (loss) MOEKD_CUDA_CHECK((kern::cuda::launch_cross_entropy_reduce<T>(rows, loss, N, divisor)));
}

/// gx (N, C): scale(r) = g[r] when per_row, else g[0] / divisor.
template <class T>
void cross_entropy_bwd(const T* logits, const int64_t* targets, const T* rmax, const T* lsum, const T* g, bool per_row,
                       T divisor, T* gx, int64_t N, int64_t C, int64_t ignore_index, T smoothing) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_cross_entropy_bwd<T>(logits, targets, rmax, lsum, g, per_row, divisor, gx, N, C,
                                                              ignore_index, smoothing)));
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.softmax = &softmax_fwd<T>;
    o.softmax_backward = &softmax_bwd<T>;
    o.cross_entropy = &cross_entropy_fwd<T>;
    o.cross_entropy_backward = &cross_entropy_bwd<T>;
}

}  // namespace

void detail::install_softmax_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
