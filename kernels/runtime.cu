// runtime.cu — the CUDA caching allocator, its Storage hook, and build_info().
//
// Host code only (no kernels); compiled by nvcc as part of the moekd::cuda library so the whole
// backend builds with one toolchain. See include/moekd/cuda/allocator.hpp for the design.
#include <cublas_v2.h>
#include <cusolverDn.h>
#if defined(MOEKD_HAVE_NCCL)
#include <nccl.h>
#endif

#include <moekd/cuda/allocator.hpp>
#include <moekd/cuda/runtime.hpp>

namespace moekd::cuda {

CudaAllocator& CudaAllocator::instance() {
    static CudaAllocator* a = new CudaAllocator();  // never destroyed: storages may outlive statics
    return *a;
}

size_t CudaAllocator::round_size(size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes <= 4096) return (bytes + 511) & ~size_t(511);
    size_t p = 4096;
    while (p < bytes) p <<= 1;
    const size_t step = p / 8;
    return (bytes + step - 1) / step * step;
}

void* CudaAllocator::allocate(size_t bytes) {
    const size_t n = round_size(bytes);
    int device = 0;
    MOEKD_CUDA_CHECK(cudaGetDevice(&device));
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    void* p = nullptr;
    bool from_cache = false;
    auto it = free_.find({device, n});
    if (it != free_.end() && !it->second.empty()) {
        from_cache = true;
        p = it->second.back();
        it->second.pop_back();
        ++stats_.cache_hits;
        stats_.bytes_cached -= n;
    } else {
        cudaError_t err = cudaMalloc(&p, n);
        if (err == cudaErrorMemoryAllocation) {  // give the cache back to the driver, try once more
            (void)cudaGetLastError();
            release_locked();
            err = cudaMalloc(&p, n);
        }
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            throw Error(msg(detail::cuda_error_message(err, "cudaMalloc(&p, n)", __FILE__, __LINE__),
                            ": allocating ", bytes, " bytes (", n, " rounded) on device ", device, "; ",
                            stats_.bytes_in_use, " bytes in use, ", stats_.bytes_cached, " cached"));
        }
    }
    // deallocate() runs in destructors, so it must not allocate: every block of a size class has
    // a slot reserved in that class's free list here, where throwing is allowed.
    try {
        if (!from_cache) {
            auto& list = free_[{device, n}];
            list.reserve(++blocks_[{device, n}]);
        }
        live_[p] = Block{n, device};
    } catch (...) {
        if (!from_cache) {
            if (auto b = blocks_.find({device, n}); b != blocks_.end() && b->second > 0) --b->second;
            (void)cudaFree(p);
        } else {
            free_[{device, n}].push_back(p);  // a slot is reserved: does not allocate
            stats_.bytes_cached += n;
        }
        throw Error(msg("cuda: out of host memory recording a block of ", n, " bytes on device ", device));
    }
    stats_.bytes_in_use += n;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
    return p;
}

void CudaAllocator::deallocate(void* p, size_t) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours (or freed twice): never throw from a destructor
    const Block b = it->second;
    live_.erase(it);
    stats_.bytes_in_use -= b.size;
    if (!caching_) {
        (void)cudaFree(p);  // may fail at process exit once the runtime has unloaded; nothing to do
        (void)cudaGetLastError();
        if (auto k = blocks_.find({b.device, b.size}); k != blocks_.end()) --k->second;  // no allocation
        return;
    }
    free_.find({b.device, b.size})->second.push_back(p);  // a slot was reserved in allocate()
    stats_.bytes_cached += b.size;
}

void CudaAllocator::release_locked() {
    for (auto& [key, blocks] : free_) {
        for (void* p : blocks) (void)cudaFree(p);
        blocks_[key] -= blocks.size();
        blocks.clear();  // keeps the capacity: the live blocks of this size still own their slots
    }
    (void)cudaGetLastError();
    stats_.bytes_cached = 0;
}

void CudaAllocator::empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked();
}

void CudaAllocator::set_caching(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    caching_ = on;
    if (!on) release_locked();
}

AllocatorStats CudaAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

namespace {
void* hook_allocate(size_t bytes) { return CudaAllocator::instance().allocate(bytes); }
void hook_deallocate(void* p, size_t bytes) { CudaAllocator::instance().deallocate(p, bytes); }
}  // namespace

void install_allocator() {
    auto& h = DeviceAllocHooks::cuda();
    h.allocate = &hook_allocate;
    h.deallocate = &hook_deallocate;
}

std::string build_info() {
    int rt = 0, drv = 0;
    (void)cudaRuntimeGetVersion(&rt);
    const cudaError_t drv_err = cudaDriverGetVersion(&drv);
    (void)cudaGetLastError();
    int bv[3] = {0, 0, 0}, sv[3] = {0, 0, 0};
    const libraryPropertyType props[3] = {MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL};
    for (int i = 0; i < 3; ++i) {
        (void)cublasGetProperty(props[i], &bv[i]);
        (void)cusolverGetProperty(props[i], &sv[i]);
    }
    std::string nccl = "not linked";
#if defined(MOEKD_HAVE_NCCL)
    int nv = 0;  // NCCL_VERSION_CODE: major * 10000 + minor * 100 + patch (since 2.9)
    if (ncclGetVersion(&nv) == ncclSuccess) nccl = msg(nv / 10000, ".", nv / 100 % 100, ".", nv % 100);
#endif
    const int n = device_count();
    return msg("CUDA runtime ", rt / 1000, ".", rt % 1000 / 10, ", driver ",
               drv_err == cudaSuccess && drv > 0 ? msg(drv / 1000, ".", drv % 1000 / 10) : std::string("none"),
               ", cuBLAS ", bv[0], ".", bv[1], ".", bv[2], ", cuSOLVER ", sv[0], ".", sv[1], ".", sv[2], ", NCCL ",
               nccl, ", devices: ", n, n == 0 ? msg(" (", no_device_reason(), ")") : std::string());
}

}  // namespace moekd::cuda
