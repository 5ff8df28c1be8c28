// storage.hpp — a flat buffer of elements shared by a tensor and all of its views.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>

#include "allocator.hpp"
#include "device.hpp"
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
        if (device == Device::CPU) {
            data_ = static_cast<T*>(CpuAllocator::instance().allocate(n * sizeof(T)));
        } else {
            auto& h = DeviceAllocHooks::cuda();
            MOEKD_CHECK(h.allocate, "Storage: a CUDA tensor was asked for, but this build has no CUDA "
                                    "backend (build with MOEKD_CUDA=ON and include <moekd/cuda.hpp>)");
            data_ = static_cast<T*>(h.allocate(n * sizeof(T)));
        }
    }
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
        if (device_ == Device::CPU) CpuAllocator::instance().deallocate(data_, size_ * sizeof(T));
        else if (DeviceAllocHooks::cuda().deallocate) DeviceAllocHooks::cuda().deallocate(data_, size_ * sizeof(T));
    }

    T* data() { return data_; }
    const T* data() const { return data_; }
    size_t size() const { return size_; }
    Device device() const { return device_; }

private:
    T* data_ = nullptr;
    size_t size_ = 0;
    Device device_ = Device::CPU;
};

}  // namespace moekd
