// storage.hpp — a flat buffer of elements shared by a tensor and all of its views.
//
// Running out of memory is a moekd::OutOfMemoryError naming the element type, the element count
// and the bytes; the destructor never throws or allocates (it runs while exceptions unwind).
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>

#include "allocator.hpp"
#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"

namespace moekd {

/// Hooks the CUDA backend installs (moekd/cuda/allocator.hpp) so that storage can live on a GPU
/// without the CPU headers depending on CUDA.
struct DeviceAllocHooks {
    void* (*allocate)(size_t bytes) = nullptr;
    void (*deallocate)(void* p, size_t bytes) = nullptr;
    static DeviceAllocHooks& cuda() {
        static DeviceAllocHooks h;
        return h;
    }
};

template <class T>
class Storage {
    static_assert(std::is_trivially_copyable_v<T>, "Storage holds trivially copyable elements");

public:
    /// Uninitialised storage of n elements on `device`.
    Storage(size_t n, Device device = Device::CPU) : size_(n), device_(device) {
        if (n > CpuAllocator::kMaxBytes / sizeof(T)) throw OutOfMemoryError(describe_failure(n, device));
        if (device == Device::CPU) {
            data_ = static_cast<T*>(CpuAllocator::instance().try_allocate(n * sizeof(T)));
            if (!data_) throw OutOfMemoryError(describe_failure(n, device));
        } else {
            auto& h = DeviceAllocHooks::cuda();
            MOEKD_CHECK(h.allocate, "Storage: a CUDA tensor was asked for, but this build has no CUDA "
                                    "backend (build with MOEKD_CUDA=ON and include <moekd/cuda.hpp>)");
            data_ = static_cast<T*>(h.allocate(n * sizeof(T)));
        }
    }
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() noexcept {
        if (device_ == Device::CPU) CpuAllocator::instance().deallocate(data_, size_ * sizeof(T));
        else if (DeviceAllocHooks::cuda().deallocate) DeviceAllocHooks::cuda().deallocate(data_, size_ * sizeof(T));
    }

    T* data() { return data_; }
    const T* data() const { return data_; }
    size_t size() const { return size_; }
    Device device() const { return device_; }

private:
    static std::string describe_failure(size_t n, Device device) {
        const char* name = dtype_name<T>();
        const std::string what = msg(n, " elements of ", std::string(name) == "unknown" ? msg(sizeof(T), "-byte type") : name,
                                     device == Device::CPU ? "" : " (on the GPU)");
        if (n > CpuAllocator::kMaxBytes / sizeof(T))
            return msg("out of memory: ", what, " is more than any machine has (", n, " x ", sizeof(T), " bytes)");
        return CpuAllocator::instance().out_of_memory_message(n * sizeof(T), what);
    }

    T* data_ = nullptr;
    size_t size_ = 0;
    Device device_ = Device::CPU;
};

}  // namespace moekd
