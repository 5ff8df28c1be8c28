// gating.cu — compiles the router kernels of include/moekd/kernels/gating.cuh (and the softmax
// backward of kernels/softmax.cuh) for float and double, behind the raw launchers that
// include/moekd/cuda/gating.hpp declares.
#include <moekd/cuda/gating.hpp>
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
