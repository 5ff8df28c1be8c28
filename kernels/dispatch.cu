// dispatch.cu — compiles the token-permutation kernels of include/moekd/kernels/dispatch.cuh
// (prefix sum of the kept counts, stable scatter, permute / combine and their backward) for
// float and double, behind the raw launchers that include/moekd/cuda/dispatch.hpp declares.
#include <moekd/cuda/dispatch.hpp>
#include <moekd/kernels/dispatch.cuh>

namespace moekd::cuda::detail {

void dispatch_offsets_raw(const int64_t* counts, int64_t* kept, int64_t* offsets, int64_t E, int64_t capacity) {
    MOEKD_CUDA_CHECK(kern::cuda::launch_dispatch_offsets(counts, kept, offsets, E, capacity));
}

void scatter_slots_raw(const int64_t* idx, const int64_t* position, const int64_t* offsets, int64_t* slot_of,
                       int64_t* slot_token, int64_t* slot_choice, int64_t N, int64_t k, int64_t capacity) {
    MOEKD_CUDA_CHECK(
        kern::cuda::launch_scatter_slots(idx, position, offsets, slot_of, slot_token, slot_choice, N, k, capacity));
}

template <class T>
void permute_raw(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_permute<T>(x, slot_token, xs, S, D)));
}

template <class T>
void permute_backward_raw(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k, int64_t D) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_permute_backward<T>(dxs, slot_of, dx, N, k, D)));
}

template <class T>
void combine_raw(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k, int64_t D) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_combine<T>(ys, slot_of, gates, y, N, k, D)));
}

template <class T>
void combine_backward_raw(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys, T* dgates,
                          int64_t N, int64_t k, int64_t D) {
    MOEKD_CUDA_CHECK((kern::cuda::launch_combine_backward<T>(dy, ys, slot_of, gates, dys, dgates, N, k, D)));
}

#define MOEKD_INSTANTIATE_DISPATCH(T)                                                                   \
    template void permute_raw<T>(const T*, const int64_t*, T*, int64_t, int64_t);                         \
    template void permute_backward_raw<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t);        \
    template void combine_raw<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int64_t);       \
    template void combine_backward_raw<T>(const T*, const T*, const int64_t*, const T*, T*, T*, int64_t, int64_t, \
                                          int64_t);
MOEKD_INSTANTIATE_DISPATCH(float)
MOEKD_INSTANTIATE_DISPATCH(double)
#undef MOEKD_INSTANTIATE_DISPATCH

}  // namespace moekd::cuda::detail
