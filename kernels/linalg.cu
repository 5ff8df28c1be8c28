// linalg.cu — the device table's linalg entries (core/backend.hpp, section "linalg"): the thin
// SVD of one row-major matrix through cuSOLVER's Jacobi SVD (gesvdj; linalg/svd_cuda.hpp), which
// linalg::svd (linalg/svd.hpp) calls for CUDA tensors, and so the OneS knowledge gathering
// (linalg/knowledge_gathering.hpp). Compiled by nvcc into moekd::cuda, and by g++ into the
// emulated backend (emu/), whose cuSOLVER is answered by emu/src/solver.cpp.
#include <moekd/core/backend.hpp>
#include <moekd/cuda/ops.hpp>
#include <moekd/linalg/svd_cuda.hpp>

namespace moekd::cuda {
namespace {

template <class T>
void svd_entry(const T* a, int64_t M, int64_t N, T* u, T* s, T* vt) {
    linalg::cuda::detail::svd_raw<T>(a, M, N, u, s, vt, 0.0, 100, "linalg::svd");
}

}  // namespace

void install_linalg_ops() {
    DeviceOps<float>::cuda().svd = &svd_entry<float>;
    DeviceOps<double>::cuda().svd = &svd_entry<double>;
}

}  // namespace moekd::cuda
