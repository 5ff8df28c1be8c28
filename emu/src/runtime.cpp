// runtime.cpp — the emulated CUDA runtime: one device, its memory registry, errors, streams and
// events. Everything is synchronous: a launch or copy has finished when its call returns, so
// streams and events only need to exist (and be checked for being ones we made).
//
// Device memory is recorded in a map from base address to size. It is kept where host code cannot
// touch it by accident, in one of two ways:
//   - release build: each allocation is its own mapping, PROT_NONE except while a kernel it is
//     passed to, a copy or an emulated library call runs (DeviceAccess opens just the allocations
//     named by the call's pointers), with a guard page right after its end. Host
//     code that reads a device tensor's data() (a CPU loop handed a CUDA tensor: a crash on a real
//     GPU) faults here too, with a message naming the address; a kernel writing past the end of
//     its buffer faults on the guard page.
//   - AddressSanitizer build: operator new memory of the exact size, so ASan reports a kernel that
//     indexes one element past its buffer, with the kernel's line. A pointer is device memory
// when it lies inside a recorded allocation; cudaMemcpy checks both ends against the direction
// it was given. MOEKD_EMU_DEVICES=0 emulates a machine without a GPU (every call answers
// cudaErrorNoDevice); MOEKD_EMU_DEVICE_MEMORY=<bytes> sets the device's size (default 8 GiB).
#include <moekd_emu/runtime.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <string>

namespace moekd::emu {
namespace {

constexpr size_t kAlign = 256;  // cudaMalloc's alignment

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kProtect = false;
#else
constexpr bool kProtect = true;
#endif

struct Mapping {
    void* start;
    size_t len;    // bytes mapped, the guard page included
    int open = 0;  // DeviceAccess scopes that opened it
};

struct Registry {
    std::mutex mu;
    std::map<uintptr_t, size_t> blocks;  // base -> bytes
    std::map<uintptr_t, Mapping> maps;   // base -> its mapping (protected mode)
    size_t in_use = 0;
    std::set<const void*> streams, events;
    std::map<const void*, size_t> optin;  // kernel -> dynamic shared bytes allowed
};
Registry& registry() {
    static Registry* r = new Registry();  // never destroyed: tensors may outlive static destructors
    return *r;
}

struct LastError {
    cudaError_t err = cudaSuccess;     // what cudaGetLastError returns next
    cudaError_t detail_err = cudaSuccess;
    std::string detail;                // the emulation's words for detail_err
    std::string text;                  // cudaGetErrorString's buffer
};
thread_local LastError g_last;

bool has_device() {
    static const bool on = [] {
        const char* v = std::getenv("MOEKD_EMU_DEVICES");
        return !(v && std::string(v) == "0");
    }();
    return on;
}

thread_local int g_device = 0;

std::string ptr_str(const void* p) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%p", p);
    return buf;
}

/// Is [p, p + n) host memory (not overlapping any device allocation)?
bool host_range(const void* p, size_t n) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + std::max<size_t>(n, 1);
    auto it = r.blocks.upper_bound(lo);
    if (it != r.blocks.begin()) {
        auto prev = std::prev(it);
        if (prev->first + prev->second > lo) return false;
    }
    return it == r.blocks.end() || it->first >= hi;
}

// ---- protection (release build) -----------------------------------------------------------------
std::atomic<uintptr_t> g_lo{UINTPTR_MAX}, g_hi{0};  // every address ever mapped as device memory
thread_local int g_in_device = 0;                    // DeviceAccess scopes of this thread, for the handler
struct sigaction g_previous;

void note_range(void* m, size_t len) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(m), b = a + len;
    uintptr_t lo = g_lo.load();
    while (a < lo && !g_lo.compare_exchange_weak(lo, a)) {
    }
    uintptr_t hi = g_hi.load();
    while (b > hi && !g_hi.compare_exchange_weak(hi, b)) {
    }
}

/// SIGSEGV inside device memory: say what happened, then hand the signal on (the default action,
/// or whatever handler was there before: Catch2's names the test).
void on_fault(int sig, siginfo_t* info, void* ctx) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
    if (a >= g_lo.load() && a < g_hi.load()) {
        const char* msg = g_in_device == 0
                              ? "moekd emulated CUDA: host code touched device memory outside a kernel, cudaMemcpy or "
                                "a library call (a CUDA tensor's data() read by a CPU loop? on a GPU this is a crash "
                                "too)\n"
                              : "moekd emulated CUDA: device code ran past the end of a device allocation (guard "
                                "page), into freed device memory, or into an allocation it was not passed\n";
        ssize_t w = write(2, msg, std::strlen(msg));
        (void)w;
    }
    sigaction(SIGSEGV, &g_previous, nullptr);  // returning re-runs the access under it
    (void)sig, (void)ctx;
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_previous);
    });
}

void set_prot(const Mapping& m, int prot) {
    mprotect(m.start, m.len - static_cast<size_t>(sysconf(_SC_PAGESIZE)), prot);  // the guard stays closed
}

#define MOEKD_EMU_NEED_DEVICE()                                                        \
    do {                                                                               \
        if (!has_device()) return set_error(cudaErrorNoDevice, "MOEKD_EMU_DEVICES=0"); \
    } while (0)

cudaError_t check_copy(const char* call, void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return set_error(cudaErrorInvalidValue, (std::string(call) + ": null pointer").c_str());
    const bool dd = device_range(dst, n), sd = device_range(src, n);
    const bool dh = host_range(dst, n), sh = host_range(src, n);
    const auto where = [&](const char* side, const void* p, bool want_device) {
        return std::string(call) + ": " + side + " " + ptr_str(p) + " (" + std::to_string(n) + " bytes) is " +
               (want_device ? "not inside one device allocation" : "device memory, not host memory");
    };
    switch (kind) {
        case cudaMemcpyHostToDevice:
            if (!dd) return set_error(cudaErrorInvalidValue, where("destination", dst, true).c_str());
            if (!sh) return set_error(cudaErrorInvalidValue, where("source", src, false).c_str());
            break;
        case cudaMemcpyDeviceToHost:
            if (!sd) return set_error(cudaErrorInvalidValue, where("source", src, true).c_str());
            if (!dh) return set_error(cudaErrorInvalidValue, where("destination", dst, false).c_str());
            break;
        case cudaMemcpyDeviceToDevice:
            if (!dd) return set_error(cudaErrorInvalidValue, where("destination", dst, true).c_str());
            if (!sd) return set_error(cudaErrorInvalidValue, where("source", src, true).c_str());
            break;
        case cudaMemcpyHostToHost:
            if (!dh) return set_error(cudaErrorInvalidValue, where("destination", dst, false).c_str());
            if (!sh) return set_error(cudaErrorInvalidValue, where("source", src, false).c_str());
            break;
        case cudaMemcpyDefault:
            if (!(dd || dh) || !(sd || sh))
                return set_error(cudaErrorInvalidValue,
                                 (std::string(call) + ": a range straddles device and host memory").c_str());
            break;
        default: return set_error(cudaErrorInvalidMemcpyDirection, (std::string(call) + ": unknown kind").c_str());
    }
    return cudaSuccess;
}

}  // namespace

bool device_range(const void* p, size_t bytes, const void** base, size_t* size) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = r.blocks.upper_bound(a);
    if (it == r.blocks.begin()) return false;
    --it;
    if (a < it->first || a - it->first + bytes > it->second) return false;
    if (base) *base = reinterpret_cast<const void*>(it->first);
    if (size) *size = it->second;
    return true;
}

bool host_access_faults() { return kProtect; }

DeviceAccess::DeviceAccess(std::initializer_list<const void*> ptrs) : DeviceAccess(std::vector<const void*>(ptrs)) {}

DeviceAccess::DeviceAccess(const std::vector<const void*>& ptrs) {
    ++g_in_device;
    if (!kProtect) return;
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    for (const void* p : ptrs) {
        if (!p) continue;
        const uintptr_t a = reinterpret_cast<uintptr_t>(p);
        auto it = r.blocks.upper_bound(a);
        if (it == r.blocks.begin()) continue;
        --it;
        if (a >= it->first + std::max<size_t>(it->second, 1)) continue;  // host memory
        Mapping& m = r.maps.at(it->first);
        if (m.open++ == 0) set_prot(m, PROT_READ | PROT_WRITE);
        opened_.push_back(it->first);
    }
}

DeviceAccess::~DeviceAccess() {
    --g_in_device;
    if (!kProtect) return;
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    for (uintptr_t base : opened_) {
        auto it = r.maps.find(base);
        if (it != r.maps.end() && --it->second.open == 0) set_prot(it->second, PROT_NONE);
    }
}

cudaError_t set_error(cudaError_t err, const char* detail) {
    g_last.err = err;
    g_last.detail_err = err;
    g_last.detail = detail ? detail : "";
    return err;
}

size_t shared_optin(const void* func) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.optin.find(func);
    return it == r.optin.end() ? 0 : it->second;
}

bool valid_stream(cudaStream_t s) {
    if (!s) return true;
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    return r.streams.count(s) > 0;
}

size_t device_capacity() {
    static const size_t cap = [] {
        const char* v = std::getenv("MOEKD_EMU_DEVICE_MEMORY");
        return v ? static_cast<size_t>(std::strtoull(v, nullptr, 10)) : size_t(8) << 30;
    }();
    return cap;
}

size_t device_bytes_in_use() {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    return r.in_use;
}

}  // namespace moekd::emu

using namespace moekd::emu;

// ---- device --------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
    if (!count) return set_error(cudaErrorInvalidValue, "cudaGetDeviceCount: null count");
    *count = 0;
    MOEKD_EMU_NEED_DEVICE();
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    MOEKD_EMU_NEED_DEVICE();
    *device = g_device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    MOEKD_EMU_NEED_DEVICE();
    if (device != 0)
        return set_error(cudaErrorInvalidDevice,
                         ("cudaSetDevice(" + std::to_string(device) + "): the emulation has one device, 0").c_str());
    g_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    MOEKD_EMU_NEED_DEVICE();
    if (device != 0) return set_error(cudaErrorInvalidDevice, "cudaGetDeviceProperties: one device, 0");
    std::memset(p, 0, sizeof *p);
    std::snprintf(p->name, sizeof p->name, "moekd emulated CUDA device (host fibers)");
    p->totalGlobalMem = device_capacity();
    p->sharedMemPerBlock = kDefaultSharedBytes;
    p->sharedMemPerBlockOptin = kMaxSharedOptin;
    p->warpSize = kWarpSize;
    p->maxThreadsPerBlock = kMaxThreadsPerBlock;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = kMaxBlockDimXY;
    p->maxThreadsDim[2] = kMaxBlockDimZ;
    p->maxGridSize[0] = static_cast<int>(kMaxGridX);
    p->maxGridSize[1] = p->maxGridSize[2] = kMaxGridYZ;
    p->multiProcessorCount = 1;
    p->major = 9;
    p->minor = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
    MOEKD_EMU_NEED_DEVICE();
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
    *v = 0;  // no driver: the emulation is the runtime's own
    return cudaSuccess;
}

// ---- errors --------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
    const cudaError_t e = g_last.err;
    g_last.err = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError() { return g_last.err; }

const char* cudaGetErrorName(cudaError_t err) {
    switch (err) {
#define MOEKD_EMU_NAME(e) \
    case e: return #e;
        MOEKD_EMU_NAME(cudaSuccess)
        MOEKD_EMU_NAME(cudaErrorInvalidValue)
        MOEKD_EMU_NAME(cudaErrorMemoryAllocation)
        MOEKD_EMU_NAME(cudaErrorInitializationError)
        MOEKD_EMU_NAME(cudaErrorInvalidConfiguration)
        MOEKD_EMU_NAME(cudaErrorInvalidDevicePointer)
        MOEKD_EMU_NAME(cudaErrorInvalidMemcpyDirection)
        MOEKD_EMU_NAME(cudaErrorNoDevice)
        MOEKD_EMU_NAME(cudaErrorInvalidDevice)
        MOEKD_EMU_NAME(cudaErrorInvalidResourceHandle)
        MOEKD_EMU_NAME(cudaErrorNotReady)
        MOEKD_EMU_NAME(cudaErrorIllegalAddress)
        MOEKD_EMU_NAME(cudaErrorLaunchOutOfResources)
        MOEKD_EMU_NAME(cudaErrorLaunchFailure)
        MOEKD_EMU_NAME(cudaErrorNotSupported)
        MOEKD_EMU_NAME(cudaErrorUnknown)
#undef MOEKD_EMU_NAME
    }
    return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
    const char* base = "unknown error";
    switch (err) {
        case cudaSuccess: base = "no error"; break;
        case cudaErrorInvalidValue: base = "invalid argument"; break;
        case cudaErrorMemoryAllocation: base = "out of memory"; break;
        case cudaErrorInitializationError: base = "initialization error"; break;
        case cudaErrorInvalidConfiguration: base = "invalid configuration argument"; break;
        case cudaErrorInvalidDevicePointer: base = "invalid device pointer"; break;
        case cudaErrorInvalidMemcpyDirection: base = "invalid copy direction for memcpy"; break;
        case cudaErrorNoDevice: base = "no CUDA-capable device is detected"; break;
        case cudaErrorInvalidDevice: base = "invalid device ordinal"; break;
        case cudaErrorInvalidResourceHandle: base = "invalid resource handle"; break;
        case cudaErrorNotReady: base = "device not ready"; break;
        case cudaErrorIllegalAddress: base = "an illegal memory access was encountered"; break;
        case cudaErrorLaunchOutOfResources: base = "too many resources requested for launch"; break;
        case cudaErrorLaunchFailure: base = "unspecified launch failure"; break;
        case cudaErrorNotSupported: base = "operation not supported"; break;
        default: break;
    }
    if (err == cudaSuccess || err != g_last.detail_err || g_last.detail.empty()) return base;
    g_last.text = std::string(base) + " [emulated CUDA: " + g_last.detail + "]";
    return g_last.text.c_str();
}

// ---- memory --------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
    if (!p) return set_error(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
    *p = nullptr;
    MOEKD_EMU_NEED_DEVICE();
    if (bytes == 0) return cudaSuccess;
    Registry& r = registry();
    {
        std::lock_guard<std::mutex> lock(r.mu);
        if (bytes > device_capacity() - std::min(r.in_use, device_capacity()))
            return set_error(cudaErrorMemoryAllocation,
                             ("cudaMalloc(" + std::to_string(bytes) + " bytes): the emulated device has " +
                              std::to_string(device_capacity() - r.in_use) + " of " +
                              std::to_string(device_capacity()) + " bytes free (MOEKD_EMU_DEVICE_MEMORY)")
                                 .c_str());
    }
    if (kProtect) {
        install_fault_handler();
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        const size_t body = (bytes + page - 1) / page * page;
        std::lock_guard<std::mutex> lock(r.mu);
        void* m = mmap(nullptr, body + page, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return set_error(cudaErrorMemoryAllocation, "cudaMalloc: mmap failed (host out of memory)");
        mprotect(static_cast<char*>(m) + body, page, PROT_NONE);  // the guard page stays closed
        // the buffer ends as close to the guard page as the 256-byte alignment allows
        char* q = static_cast<char*>(m) + body - (bytes + kAlign - 1) / kAlign * kAlign;
        r.blocks[reinterpret_cast<uintptr_t>(q)] = bytes;
        r.maps[reinterpret_cast<uintptr_t>(q)] = Mapping{m, body + page};
        note_range(m, body + page);
        r.in_use += bytes;
        *p = q;
        return cudaSuccess;
    }
    void* q = ::operator new(bytes, std::align_val_t(kAlign), std::nothrow);
    if (!q) return set_error(cudaErrorMemoryAllocation, "cudaMalloc: the host is out of memory");
    std::lock_guard<std::mutex> lock(r.mu);
    r.blocks[reinterpret_cast<uintptr_t>(q)] = bytes;
    r.in_use += bytes;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    Registry& r = registry();
    {
        std::lock_guard<std::mutex> lock(r.mu);
        auto it = r.blocks.find(reinterpret_cast<uintptr_t>(p));
        if (it == r.blocks.end())
            return set_error(cudaErrorInvalidDevicePointer,
                             ("cudaFree(" + ptr_str(p) + "): not the start of a device allocation").c_str());
        r.in_use -= it->second;
        r.blocks.erase(it);
        if (kProtect) {
            auto m = r.maps.find(reinterpret_cast<uintptr_t>(p));
            munmap(m->second.start, m->second.len);
            r.maps.erase(m);
            return cudaSuccess;
        }
    }
    ::operator delete(p, std::align_val_t(kAlign));
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    MOEKD_EMU_NEED_DEVICE();
    *total_bytes = device_capacity();
    *free_bytes = device_capacity() - std::min(device_bytes_in_use(), device_capacity());
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    MOEKD_EMU_NEED_DEVICE();
    if (const cudaError_t e = check_copy("cudaMemcpy", dst, src, bytes, kind)) return e;
    DeviceAccess open{dst, src};
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    if (!valid_stream(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync: unknown stream");
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
    MOEKD_EMU_NEED_DEVICE();
    if (bytes == 0) return cudaSuccess;
    if (!device_range(p, bytes))
        return set_error(cudaErrorInvalidValue, ("cudaMemset: " + ptr_str(p) + " (" + std::to_string(bytes) +
                                                 " bytes) is not inside one device allocation")
                                                    .c_str());
    DeviceAccess open{p};
    std::memset(p, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
    if (!valid_stream(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaMemsetAsync: unknown stream");
    return cudaMemset(p, value, bytes);
}
cudaError_t cudaMemset2D(void* p, size_t pitch, int value, size_t width, size_t height) {
    MOEKD_EMU_NEED_DEVICE();
    if (width == 0 || height == 0) return cudaSuccess;
    if (width > pitch) return set_error(cudaErrorInvalidValue, "cudaMemset2D: width > pitch");
    if (!device_range(p, pitch * (height - 1) + width))
        return set_error(cudaErrorInvalidValue, ("cudaMemset2D: " + ptr_str(p) + " (pitch " + std::to_string(pitch) +
                                                 ", " + std::to_string(height) + " rows of " + std::to_string(width) +
                                                 " bytes) is not inside one device allocation")
                                                    .c_str());
    DeviceAccess open{p};
    for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(p) + r * pitch, value, width);
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
    if (!a) return set_error(cudaErrorInvalidValue, "cudaPointerGetAttributes: null attributes");
    const bool dev = p && device_range(p, 1);
    a->type = dev ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    a->device = dev ? 0 : -1;
    a->devicePointer = dev ? const_cast<void*>(p) : nullptr;
    a->hostPointer = dev ? nullptr : const_cast<void*>(p);
    return cudaSuccess;
}

// ---- streams, events, kernel attributes ----------------------------------------------------------
struct CUstream_st {
    unsigned flags;
};
struct CUevent_st {
    std::chrono::steady_clock::time_point t;
};

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
    MOEKD_EMU_NEED_DEVICE();
    *s = new CUstream_st{flags};
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    r.streams.insert(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    Registry& r = registry();
    {
        std::lock_guard<std::mutex> lock(r.mu);
        if (!s || !r.streams.erase(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream");
    }
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (!valid_stream(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: unknown stream");
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
    if (!valid_stream(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaStreamQuery: unknown stream");
    return cudaSuccess;  // everything is done when its call returns
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
    MOEKD_EMU_NEED_DEVICE();
    *e = new CUevent_st{std::chrono::steady_clock::now()};
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    r.events.insert(*e);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    Registry& r = registry();
    {
        std::lock_guard<std::mutex> lock(r.mu);
        if (!e || !r.events.erase(e)) return set_error(cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event");
    }
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!valid_stream(s)) return set_error(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown stream");
    e->t = std::chrono::steady_clock::now();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return set_error(cudaErrorNotSupported, "cudaFuncSetAttribute: only MaxDynamicSharedMemorySize is emulated");
    if (value < 0 || static_cast<size_t>(value) > kMaxSharedOptin)
        return set_error(cudaErrorInvalidValue, ("cudaFuncSetAttribute: " + std::to_string(value) +
                                                 " bytes of dynamic shared memory; the device allows " +
                                                 std::to_string(kMaxSharedOptin))
                                                    .c_str());
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    r.optin[func] = static_cast<size_t>(value);
    return cudaSuccess;
}
