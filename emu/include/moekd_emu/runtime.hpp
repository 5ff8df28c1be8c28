// moekd_emu/runtime.hpp — the CUDA runtime API, answered by host code: the test-only "emulated
// CUDA" build (emu/README.md). Nothing here talks to a GPU.
//
// The kernels of kernels/*.cu are compiled by g++ against this header (through the shims
// emu/include/cuda_runtime_api.h etc., which only the emulated build puts on the include path)
// and run on the CPU: every block of a launch, the threads of a block as fibers (src/fibers.cpp).
// What the emulation adds over "call the kernel in a loop" is what a GPU would refuse or what
// would go wrong there silently:
//   - device memory comes from its own registry: a host pointer passed to a kernel, cudaMemcpy
//     with the wrong direction, or a copy past the end of an allocation is an error naming it;
//   - launch configurations are checked against the device's limits (1024 threads a block,
//     48 KiB of dynamic shared memory unless opted in, grid limits);
//   - __syncthreads that not every thread reaches, warp shuffles naming lanes that do not take
//     part, and deadlocks are errors naming the kernel, the block and the source line;
//   - an emulated device has a fixed memory size, so device out-of-memory can be tested.
// Errors come back as cudaError_t, as from the real runtime; cudaGetErrorString(err) adds what
// the emulation saw. Types and enumerator values follow the real headers where code depends on
// them (cudaSuccess == 0, cudaMemcpyKind).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

// ---- types -------------------------------------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorUnknown = 999,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2, cudaMemoryTypeManaged = 3 };

struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
    void* devicePointer;
    void* hostPointer;
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int multiProcessorCount;
    int major, minor;
};

enum libraryPropertyType { MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2 };
/// The element types of the *Ex library calls (library_types.h; the toolkit's values).
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
using cudaDataType = cudaDataType_t;

struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
inline constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;

// ---- the runtime API (emu/src/runtime.cpp) -------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);

cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
    return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaMemset2D(void* p, size_t pitch, int value, size_t width, size_t height);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p);

cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <class F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}

// ---- what the emulation adds (for the launch layer, the libraries and tests) ---------------------
namespace moekd::emu {

/// The emulated device's limits (an sm_90-class part: H100 / H200).
inline constexpr unsigned kMaxThreadsPerBlock = 1024, kMaxBlockDimXY = 1024, kMaxBlockDimZ = 64;
inline constexpr unsigned kMaxGridX = 2147483647u, kMaxGridYZ = 65535;
inline constexpr size_t kDefaultSharedBytes = 48 * 1024, kMaxSharedOptin = 227 * 1024;
inline constexpr int kWarpSize = 32;

/// Where [p, p + bytes) lies in device memory: the base and size of the allocation holding p.
/// Returns false when p is not inside an allocation, or the range runs past its end.
bool device_range(const void* p, size_t bytes, const void** base = nullptr, size_t* size = nullptr);

/// While one is alive, the device allocations holding the given pointers are open to the calling
/// code (a kernel's pointer arguments, a copy's ends, a library call's operands); everything
/// else stays closed, so host code touching device memory faults (release build; runtime.cpp).
/// Pointers that are not device memory are ignored.
class DeviceAccess {
public:
    explicit DeviceAccess(std::initializer_list<const void*> ptrs);
    explicit DeviceAccess(const std::vector<const void*>& ptrs);
    ~DeviceAccess();
    DeviceAccess(const DeviceAccess&) = delete;
    DeviceAccess& operator=(const DeviceAccess&) = delete;

private:
    std::vector<uintptr_t> opened_;
};

/// True when host code touching device memory faults (the release build; false under ASan,
/// where device memory is heap memory so ASan can check kernels' indexing instead).
bool host_access_faults();

/// Records an error the way the runtime does (returned by the next cudaGetLastError), with the
/// text cudaGetErrorString(err) adds; returns err.
cudaError_t set_error(cudaError_t err, const char* detail);

/// The dynamic shared memory opt-in of a kernel (cudaFuncSetAttribute), 0 if none.
size_t shared_optin(const void* func);

/// Is s a stream this emulated runtime made (or the default stream 0)?
bool valid_stream(cudaStream_t s);

/// Bytes of device memory the emulated device has (MOEKD_EMU_DEVICE_MEMORY, default 8 GiB), and
/// how many allocations / bytes are live (for tests of the caching allocator's bookkeeping).
size_t device_capacity();
size_t device_bytes_in_use();

}  // namespace moekd::emu
