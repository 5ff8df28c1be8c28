// gating.cu — the device table's MoE router entries (core/backend.hpp; moe/router.hpp,
// moe/balance.hpp, and the histogram pass of moe::make_dispatch_plan): the kernels of
// include/moekd/kernels/gating.cuh — fused softmax over E + top-k + gates, the gates at given
// experts and their backward, the gates renormalised over the kept choices and their backward, the
// finite check and logsumexp of router rows, the masked column mean, and the capacity positions
// (a block-level scan per expert) — for float and double. Compiled by nvcc into moekd::cuda, and
// by g++ into the emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/gating.cuh>

namespace moekd::cuda {
namespace {

template <class T>
void softmax_topk(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k, bool normalize) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_topk<T>(logits, probs, idx, gates, N, E, k, normalize)));
}
template <class T>
void topk_gates(const T* probs, const int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k, bool normalize) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_topk_gates<T>(probs, idx, gates, N, E, k, normalize)));
}
template <class T>
void topk_gates_backward(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs, int64_t N,
                         int64_t E, int64_t k, bool normalize) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_topk_gates_backward<T>(probs, idx, gates, dgates, dprobs, N, E, k, normalize)));
}
template <class T>
void kept_gates(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position, T* gates, int64_t N,
                int64_t E, int64_t k) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_kept_gates<T>(probs, idx, slot, position, gates, N, E, k)));
}
template <class T>
void kept_gates_backward(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                         const T* gates, const T* dgates, T* dprobs, int64_t N, int64_t E, int64_t k) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK(
        (kern::cuda::launch_kept_gates_backward<T>(probs, idx, slot, position, gates, dgates, dprobs, N, E, k)));
}
template <class T>
void rows_finite(const T* x, int64_t N, int64_t E, uint8_t* ok) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_rows_finite<T>(x, N, E, ok)));
}
template <class T>
void row_logsumexp(const T* x, T* out, int64_t N, int64_t E) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_row_logsumexp<T>(x, out, N, E)));
}
template <class T>
void masked_column_mean(const T* x, const uint8_t* pad, T* out, int64_t N, int64_t C, int64_t real) {
    if (C == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_masked_column_mean<T>(x, pad, out, N, C, real)));
}
void capacity_positions(const int64_t* idx, const uint8_t* pad, int64_t* counts, int64_t* position, int64_t N,
                        int64_t k, int64_t E) {
    MOEKD_CUDA_CHECK(kern::cuda::launch_capacity_positions(idx, pad, counts, position, N, k, E));
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.moe_softmax_topk = &softmax_topk<T>;
    o.moe_topk_gates = &topk_gates<T>;
    o.moe_topk_gates_backward = &topk_gates_backward<T>;
    o.moe_kept_gates = &kept_gates<T>;
    o.moe_kept_gates_backward = &kept_gates_backward<T>;
    o.moe_rows_finite = &rows_finite<T>;
    o.moe_row_logsumexp = &row_logsumexp<T>;
    o.moe_masked_column_mean = &masked_column_mean<T>;
    o.moe_capacity_positions = &capacity_positions;  // integer only: the same function in both tables
}

}  // namespace

void detail::install_router_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
