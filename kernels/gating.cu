// gating.cu — compiles the router kernels of include/moekd/kernels/gating.cuh (and the softmax
// backward of kernels/softmax.cuh) for float and double, behind the raw launchers that
// include/moekd/cuda/gating.hpp declares.
#include <moekd/core/backend.hpp>
#include <moekd/cuda/dispatch.hpp>
#include <moekd/cuda/experts.hpp>
#include <moekd/cuda/gating.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/dispatch.cuh>
#include <moekd/kernels/gating.cuh>
#include <moekd/kernels/softmax.cuh>

namespace moekd::cuda::detail {
namespace {

// One thread per row: the smallest row index holding a NaN or inf (atomicMin: the answer does not
// depend on which thread gets there first). first: one value, N on entry.
template <class T>
__global__ void first_nonfinite_row_kernel(const T* __restrict__ x, int64_t N, int64_t E,
                                           unsigned long long* __restrict__ first) {
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
        if (!kern::row_all_finite(x + t * E, E)) atomicMin(first, static_cast<unsigned long long>(t));
}

}  // namespace

template <class T>
int64_t first_nonfinite_row_raw(const T* x, int64_t N, int64_t E) {
    Tensor<int64_t> first = Tensor<int64_t>::empty({1}, Device::CUDA);
    int64_t host = N;
    MOEKD_CUDA_CHECK(cudaMemcpy(first.data(), &host, sizeof host, cudaMemcpyHostToDevice));
    MOEKD_LAUNCH(kern::cuda::gating_grid(N, 256), 256, 0, 0, first_nonfinite_row_kernel<T>)(
        x, N, E, reinterpret_cast<unsigned long long*>(first.data()));
    MOEKD_CUDA_CHECK(cudaGetLastError());
    MOEKD_CUDA_CHECK(cudaMemcpy(&host, first.data(), sizeof host, cudaMemcpyDeviceToHost));
    return host;
}

template <class T>
void softmax_topk_raw(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                      bool normalize) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_topk<T>(logits, probs, idx, gates, N, E, k, normalize)));
}

template <class T>
void topk_gates_backward_raw(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs,
                             int64_t N, int64_t E, int64_t k, bool normalize) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_topk_gates_backward<T>(probs, idx, gates, dgates, dprobs, N, E, k, normalize)));
}

template <class T>
void softmax_backward_raw(const T* probs, const T* dprobs, T* dlogits, int64_t N, int64_t E) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_softmax_bwd<T>(probs, dprobs, dlogits, N, E, 1, false)));
}

void capacity_positions_raw(const int64_t* idx, const uint8_t* pad, int64_t* counts, int64_t* position, int64_t N,
                            int64_t k, int64_t E) {
    MOEKD_CUDA_CHECK(kern::cuda::launch_capacity_positions(idx, pad, counts, position, N, k, E));
}

template <class T>
void kept_gates_raw(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position, T* gates,
                    int64_t N, int64_t E, int64_t k) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_kept_gates<T>(probs, idx, slot, position, gates, N, E, k)));
}

template <class T>
void kept_gates_backward_raw(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                             const T* gates, const T* dgates, T* dprobs, int64_t N, int64_t E, int64_t k) {
    MOEKD_CUDA_CHECK(
        (kern::cuda::launch_kept_gates_backward<T>(probs, idx, slot, position, gates, dgates, dprobs, N, E, k)));
}

#define MOEKD_INSTANTIATE_GATING(T)                                                                          \
    template void softmax_topk_raw<T>(const T*, T*, int64_t*, T*, int64_t, int64_t, int64_t, bool);           \
    template void topk_gates_backward_raw<T>(const T*, const int64_t*, const T*, const T*, T*, int64_t, int64_t, \
                                             int64_t, bool);                                                  \
    template void softmax_backward_raw<T>(const T*, const T*, T*, int64_t, int64_t);                     \
    template int64_t first_nonfinite_row_raw<T>(const T*, int64_t, int64_t);                             \
    template void kept_gates_raw<T>(const T*, const int64_t*, const int64_t*, const int64_t*, T*, int64_t, int64_t, \
                                    int64_t);                                                              \
    template void kept_gates_backward_raw<T>(const T*, const int64_t*, const int64_t*, const int64_t*, const T*,  \
                                             const T*, T*, int64_t, int64_t, int64_t);
MOEKD_INSTANTIATE_GATING(float)
MOEKD_INSTANTIATE_GATING(double)
#undef MOEKD_INSTANTIATE_GATING

}  // namespace moekd::cuda::detail

namespace moekd::cuda {
namespace {

// The device-table entries of the MoE ops that have no cuda:: twin launcher (the others are the
// twins' raw launchers of cuda/{gating,dispatch,experts}.hpp).
template <class T>
void topk_gates_entry(const T* probs, const int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k, bool normalize) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_topk_gates<T>(probs, idx, gates, N, E, k, normalize)));
}
template <class T>
void rows_finite_entry(const T* x, int64_t N, int64_t E, uint8_t* ok) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_rows_finite<T>(x, N, E, ok)));
}
template <class T>
void row_logsumexp_entry(const T* x, T* out, int64_t N, int64_t E) {
    if (N == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_row_logsumexp<T>(x, out, N, E)));
}
template <class T>
void masked_column_mean_entry(const T* x, const uint8_t* pad, T* out, int64_t N, int64_t C, int64_t real) {
    if (C == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_masked_column_mean<T>(x, pad, out, N, C, real)));
}
template <class T>
void softmax_topk_entry(const T* logits, T* probs, int64_t* idx, T* gates, int64_t N, int64_t E, int64_t k,
                        bool normalize) {
    if (N > 0) detail::softmax_topk_raw(logits, probs, idx, gates, N, E, k, normalize);
}
template <class T>
void topk_gates_backward_entry(const T* probs, const int64_t* idx, const T* gates, const T* dgates, T* dprobs,
                               int64_t N, int64_t E, int64_t k, bool normalize) {
    if (N > 0) detail::topk_gates_backward_raw(probs, idx, gates, dgates, dprobs, N, E, k, normalize);
}
template <class T>
void kept_gates_entry(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position, T* gates,
                      int64_t N, int64_t E, int64_t k) {
    if (N > 0) detail::kept_gates_raw(probs, idx, slot, position, gates, N, E, k);
}
template <class T>
void kept_gates_backward_entry(const T* probs, const int64_t* idx, const int64_t* slot, const int64_t* position,
                               const T* gates, const T* dgates, T* dprobs, int64_t N, int64_t E, int64_t k) {
    if (N > 0) detail::kept_gates_backward_raw(probs, idx, slot, position, gates, dgates, dprobs, N, E, k);
}
void capacity_positions_entry(const int64_t* idx, const uint8_t* pad, int64_t* counts, int64_t* position, int64_t N,
                              int64_t k, int64_t E) {
    detail::capacity_positions_raw(idx, pad, counts, position, N, k, E);
}
void scatter_slots_entry(const int64_t* idx, const int64_t* position, const int64_t* offsets, int64_t* slot_of,
                         int64_t* slot_token, int64_t* slot_choice, int64_t* idx_copy, int64_t N, int64_t k,
                         int64_t capacity) {
    if (N * k == 0) return;
    MOEKD_CUDA_CHECK(kern::cuda::launch_scatter_slots_copy(idx, position, offsets, slot_of, slot_token, slot_choice,
                                                           idx_copy, N, k, capacity));
}
template <class T>
void permute_entry(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D) {
    if (S * D > 0) detail::permute_raw(x, slot_token, xs, S, D);
}
template <class T>
void permute_backward_entry(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k, int64_t D) {
    if (N * D > 0) detail::permute_backward_raw(dxs, slot_of, dx, N, k, D);
}
template <class T>
void combine_entry(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k, int64_t D) {
    if (N * D > 0) detail::combine_raw(ys, slot_of, gates, y, N, k, D);
}
template <class T>
void combine_backward_entry(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys, T* dgates,
                            int64_t N, int64_t k, int64_t D) {
    if (N > 0 && (dys || dgates)) detail::combine_backward_raw(dy, ys, slot_of, gates, dys, dgates, N, k, D);
}

template <class T>
void install_moe_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.moe_softmax_topk = &softmax_topk_entry<T>;
    o.moe_topk_gates = &topk_gates_entry<T>;
    o.moe_topk_gates_backward = &topk_gates_backward_entry<T>;
    o.moe_kept_gates = &kept_gates_entry<T>;
    o.moe_kept_gates_backward = &kept_gates_backward_entry<T>;
    o.moe_rows_finite = &rows_finite_entry<T>;
    o.moe_row_logsumexp = &row_logsumexp_entry<T>;
    o.moe_masked_column_mean = &masked_column_mean_entry<T>;
    o.moe_capacity_positions = &capacity_positions_entry;
    o.moe_dispatch_offsets = &detail::dispatch_offsets_raw;
    o.moe_scatter_slots = &scatter_slots_entry;
    o.moe_permute = &permute_entry<T>;
    o.moe_permute_backward = &permute_backward_entry<T>;
    o.moe_combine = &combine_entry<T>;
    o.moe_combine_backward = &combine_backward_entry<T>;
    o.moe_bias_act = &detail::bias_act_raw<T>;
    o.moe_add_bias = &detail::add_bias_raw<T>;
    o.moe_act_backward = &detail::act_backward_raw<T>;
    o.moe_column_sum = &detail::column_sum_raw<T>;
    o.moe_gemm_strided_batched = &detail::gemm_strided_batched_raw<T>;
}

}  // namespace

// Fills this family's entries of the device table (core/backend.hpp's MoE section), for float and
// double; called by install_ops (kernels/ops.cu).
void install_moe_ops() {
    install_moe_for<float>();
    install_moe_for<double>();
}
}  // namespace moekd::cuda
