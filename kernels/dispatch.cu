// dispatch.cu — the device table's token-dispatch entries (core/backend.hpp; moe::make_dispatch_plan,
// permute_tokens and combine_tokens in moe/dispatch.hpp): the kernels of
// include/moekd/kernels/dispatch.cuh (prefix sum of the kept counts, the stable scatter, permute /
// combine and their backward; every sum in a fixed order, no atomics), for float and double. The
// plan's histogram pass (capacity positions) is the router's (kernels/gating.cu). Compiled by nvcc
// into moekd::cuda, and by g++ into the emulated backend (emu/).
#include <moekd/core/backend.hpp>
#include <moekd/cuda/error.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/kernels/dispatch.cuh>

namespace moekd::cuda {
namespace {

void dispatch_offsets(const int64_t* counts, int64_t* kept, int64_t* offsets, int64_t E, int64_t capacity) {
    MOEKD_CUDA_CHECK(kern::cuda::launch_dispatch_offsets(counts, kept, offsets, E, capacity));
}

void scatter_slots(const int64_t* idx, const int64_t* position, const int64_t* offsets, int64_t* slot_of,
                   int64_t* slot_token, int64_t* slot_choice, int64_t* idx_copy, int64_t N, int64_t k,
                   int64_t capacity) {
    if (N * k == 0) return;
    MOEKD_CUDA_CHECK(kern::cuda::launch_scatter_slots(idx, position, offsets, slot_of, slot_token, slot_choice,
                                                      idx_copy, N, k, capacity));
}

template <class T>
void permute(const T* x, const int64_t* slot_token, T* xs, int64_t S, int64_t D) {
    if (S * D == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_permute<T>(x, slot_token, xs, S, D)));
}

template <class T>
void permute_backward(const T* dxs, const int64_t* slot_of, T* dx, int64_t N, int64_t k, int64_t D) {
    if (N * D == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_permute_backward<T>(dxs, slot_of, dx, N, k, D)));
}

template <class T>
void combine(const T* ys, const int64_t* slot_of, const T* gates, T* y, int64_t N, int64_t k, int64_t D) {
    if (N * D == 0) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_combine<T>(ys, slot_of, gates, y, N, k, D)));
}

template <class T>
void combine_backward(const T* dy, const T* ys, const int64_t* slot_of, const T* gates, T* dys, T* dgates, int64_t N,
                      int64_t k, int64_t D) {
    if (N == 0 || (!dys && !dgates)) return;
    MOEKD_CUDA_CHECK((kern::cuda::launch_combine_backward<T>(dy, ys, slot_of, gates, dys, dgates, N, k, D)));
}

template <class T>
void install_for() {
    DeviceOps<T>& o = DeviceOps<T>::cuda();
    o.moe_dispatch_offsets = &dispatch_offsets;  // integer only: the same functions in both tables
    o.moe_scatter_slots = &scatter_slots;
    o.moe_permute = &permute<T>;
    o.moe_permute_backward = &permute_backward<T>;
    o.moe_combine = &combine<T>;
    o.moe_combine_backward = &combine_backward<T>;
}

}  // namespace

void detail::install_dispatch_ops() {
    install_for<float>();
    install_for<double>();
}

}  // namespace moekd::cuda
