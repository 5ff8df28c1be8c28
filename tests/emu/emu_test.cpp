// emu_test.cpp — the emulated CUDA runtime itself (emu/): that kernels see the execution model a
// GPU gives them, and that what a GPU would refuse, or silently get wrong, is an error naming the
// kernel. Written as CUDA (kernels + MOEKD_LAUNCH) and compiled by g++ with MOEKD_EMULATED_CUDA,
// as the kernels of kernels/*.cu are in the emulated build.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/kernels/common.cuh>

namespace {

// ---- kernels ----------------------------------------------------------------------------------

// out[block] = sum of in[block * blockDim + t] by a shared-memory tree (barriers in a loop).
__global__ void block_sum_kernel(const int* in, int* out) {
    __shared__ int smem[1024];
    const unsigned t = threadIdx.x;
    smem[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) smem[t] += smem[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = smem[0];
}

// out[warp] = sum over the warp by __shfl_down_sync; ballot of odd lanes into bits[warp].
__global__ void warp_ops_kernel(const float* in, float* out, unsigned* bits) {
    const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
    float v = in[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    const unsigned b = __ballot_sync(0xffffffffu, lane % 2 == 1);
    const float first = __shfl_sync(0xffffffffu, in[t], 0);
    const float x = __shfl_xor_sync(0xffffffffu, in[t], 1);
    if (lane == 0) {
        out[warp] = v;
        bits[warp] = b;
    }
    out[64 + t] = first;
    out[64 + 1024 + t] = x;
}

// thread 0 returns early: the barrier is reached by 127 of 128 threads.
__global__ void divergent_barrier_kernel(int* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

// even and odd threads wait at two different barriers.
__global__ void two_barriers_kernel(int* out) {
    if (threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// a full-warp shuffle in a block of 16 threads: lanes 16..31 do not exist.
__global__ void short_warp_kernel(float* out) { out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1); }

// lane 1 exits before the shuffle that names it.
__global__ void exited_lane_kernel(float* out) {
    if (threadIdx.x == 1) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

// lanes 0..15 wait at a barrier, lanes 16..31 of the same warp in a shuffle that names them all.
__global__ void deadlock_kernel(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
    }
}

__global__ void fill_kernel(float* out, int n, float v) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = v;
}

__global__ void dynamic_shared_kernel(float* out) {
    MOEKD_DYNAMIC_SHARED(float, buf);
    buf[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__global__ void past_the_end_kernel(float* out, int n) { out[n + threadIdx.x] = 1.0f; }

__global__ void atomic_kernel(int* counter, int* minv) {
    atomicAdd(counter, 1);
    atomicMin(minv, int(blockIdx.x * blockDim.x + threadIdx.x));
}

// ---- helpers ------------------------------------------------------------------------------------

template <class T>
T* device_alloc(size_t n) {
    T* p = nullptr;
    REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
    return p;
}

template <class T>
std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    REQUIRE(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
}

/// The error of the last launch, and its text.
std::string launch_error(cudaError_t expect) {
    const cudaError_t e = cudaGetLastError();
    CHECK(e == expect);
    return cudaGetErrorString(e);
}

}  // namespace

TEST_CASE("emu: __syncthreads and shared memory give a block-wide tree sum", "[emu]") {
    const int blocks = 3, threads = 256;
    std::vector<int> in(blocks * threads);
    std::iota(in.begin(), in.end(), 1);
    int* din = device_alloc<int>(in.size());
    int* dout = device_alloc<int>(blocks);
    REQUIRE(cudaMemcpy(din, in.data(), in.size() * sizeof(int), cudaMemcpyHostToDevice) == cudaSuccess);
    MOEKD_LAUNCH(blocks, threads, 0, 0, block_sum_kernel)(din, dout);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<int> out = to_host(dout, blocks);
    for (int b = 0; b < blocks; ++b) {
        const int lo = b * threads + 1, hi = (b + 1) * threads;
        CHECK(out[b] == (lo + hi) * threads / 2);
    }
    cudaFree(din);
    cudaFree(dout);
}

TEST_CASE("emu: warp shuffles and ballots exchange values between lanes", "[emu]") {
    const int threads = 64;
    std::vector<float> in(threads);
    for (int i = 0; i < threads; ++i) in[i] = float(i);
    float* din = device_alloc<float>(threads);
    float* dout = device_alloc<float>(64 + 2048);
    unsigned* dbits = device_alloc<unsigned>(2);
    REQUIRE(cudaMemcpy(din, in.data(), threads * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    MOEKD_LAUNCH(1, threads, 0, 0, warp_ops_kernel)(din, dout, dbits);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<float> out = to_host(dout, 64 + 2048);
    const std::vector<unsigned> bits = to_host(dbits, 2);
    CHECK(out[0] == 496.0f);         // 0 + ... + 31
    CHECK(out[1] == 496.0f + 1024);  // 32 + ... + 63
    CHECK(bits[0] == 0xaaaaaaaau);
    CHECK(bits[1] == 0xaaaaaaaau);
    for (int t = 0; t < threads; ++t) {
        CHECK(out[64 + t] == float(t / 32 * 32));  // lane 0 of its warp
        CHECK(out[64 + 1024 + t] == float(t ^ 1));
    }
    cudaFree(din);
    cudaFree(dout);
    cudaFree(dbits);
}

TEST_CASE("emu: a __syncthreads some threads skip is an error naming the kernel and the line", "[emu]") {
    int* d = device_alloc<int>(128);
    MOEKD_LAUNCH(1, 128, 0, 0, divergent_barrier_kernel)(d);
    const std::string e = launch_error(cudaErrorLaunchFailure);
    CHECK_THAT(e, Catch::Contains("divergent_barrier_kernel") && Catch::Contains("reached by 127 of the block's 128") &&
                      Catch::Contains("emu_test.cpp:"));
    MOEKD_LAUNCH(1, 64, 0, 0, two_barriers_kernel)(d);
    CHECK_THAT(launch_error(cudaErrorLaunchFailure), Catch::Contains("two different __syncthreads"));
    cudaFree(d);
}

TEST_CASE("emu: warp collectives check their masks", "[emu]") {
    float* d = device_alloc<float>(64);
    MOEKD_LAUNCH(1, 16, 0, 0, short_warp_kernel)(d);
    CHECK_THAT(launch_error(cudaErrorLaunchFailure), Catch::Contains("names lane 16") && Catch::Contains("has 16 lanes"));
    MOEKD_LAUNCH(1, 32, 0, 0, exited_lane_kernel)(d);
    CHECK_THAT(launch_error(cudaErrorLaunchFailure), Catch::Contains("lane 1 of the mask has exited"));
    MOEKD_LAUNCH(1, 32, 0, 0, deadlock_kernel)(d);
    CHECK_THAT(launch_error(cudaErrorLaunchFailure),
               Catch::Contains("deadlock: no thread can go on") && Catch::Contains("wait in __shfl_sync"));
    cudaFree(d);
}

TEST_CASE("emu: launch configurations are checked against the device's limits", "[emu]") {
    float* d = device_alloc<float>(2048);
    MOEKD_LAUNCH(1, 1025, 0, 0, fill_kernel)(d, 2048, 1.0f);
    CHECK_THAT(launch_error(cudaErrorInvalidConfiguration), Catch::Contains("1025 threads a block; the limit is 1024"));
    MOEKD_LAUNCH(dim3(1, 70000), 32, 0, 0, fill_kernel)(d, 2048, 1.0f);
    CHECK_THAT(launch_error(cudaErrorInvalidConfiguration), Catch::Contains("grid dimensions"));
    MOEKD_LAUNCH(0, 32, 0, 0, fill_kernel)(d, 2048, 1.0f);
    CHECK_THAT(launch_error(cudaErrorInvalidConfiguration), Catch::Contains("is 0"));
    MOEKD_LAUNCH(1, 32, 64 * 1024, 0, dynamic_shared_kernel)(d);
    CHECK_THAT(launch_error(cudaErrorInvalidConfiguration), Catch::Contains("cudaFuncSetAttribute"));
    REQUIRE(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
            cudaSuccess);
    MOEKD_LAUNCH(1, 32, 64 * 1024, 0, dynamic_shared_kernel)(d);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<float> out = to_host(d, 32);
    for (int t = 0; t < 32; ++t) CHECK(out[t] == float(31 - t));
    cudaFree(d);
}

TEST_CASE("emu: host pointers where device memory belongs are caught", "[emu]") {
    std::vector<float> host(64);
    MOEKD_LAUNCH(1, 64, 0, 0, fill_kernel)(host.data(), 64, 1.0f);
    CHECK_THAT(launch_error(cudaErrorInvalidDevicePointer), Catch::Contains("fill_kernel") &&
                                                                Catch::Contains("argument 0") &&
                                                                Catch::Contains("not device memory"));
    float* d = device_alloc<float>(64);
    CHECK(cudaMemcpy(host.data(), d, 64 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK_THAT(std::string(cudaGetErrorString(cudaErrorInvalidValue)), Catch::Contains("destination"));
    CHECK(cudaMemcpy(d, host.data(), 65 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // past the end
    CHECK(cudaMemcpy(d, host.data(), 64 * sizeof(float), cudaMemcpyDeviceToDevice) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(d, host.data(), 64 * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaFree(host.data()) == cudaErrorInvalidDevicePointer);
    (void)cudaGetLastError();
    cudaFree(d);
}

TEST_CASE("emu: grid-stride loops, atomics and device out-of-memory", "[emu]") {
    const int n = 10000;
    float* d = device_alloc<float>(n);
    MOEKD_LAUNCH(7, 128, 0, 0, fill_kernel)(d, n, 2.5f);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<float> out = to_host(d, n);
    CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 2.5f; }));
    int* c = device_alloc<int>(2);
    const int init[2] = {0, 1 << 30};
    REQUIRE(cudaMemcpy(c, init, sizeof init, cudaMemcpyHostToDevice) == cudaSuccess);
    MOEKD_LAUNCH(5, 96, 0, 0, atomic_kernel)(c, c + 1);
    const std::vector<int> got = to_host(c, 2);
    CHECK(got[0] == 5 * 96);
    CHECK(got[1] == 0);
    void* big = nullptr;
    CHECK(cudaMalloc(&big, moekd::emu::device_capacity() + 1) == cudaErrorMemoryAllocation);
    CHECK_THAT(std::string(cudaGetErrorString(cudaErrorMemoryAllocation)), Catch::Contains("bytes free"));
    (void)cudaGetLastError();
    cudaFree(d);
    cudaFree(c);
}

namespace {
/// Runs f in a child process; returns the signal that ended it (0 if it exited).
template <class F>
int signal_of_child(F f) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        std::signal(SIGSEGV, SIG_DFL);  // no Catch2 handler in the child: just die of it
        f();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}
}  // namespace

TEST_CASE("emu: host code touching device memory, and kernels past the end, fault", "[emu]") {
    if (!moekd::emu::host_access_faults()) {
        WARN("sanitizer build: device memory is heap memory here, checked by ASan instead");
        return;
    }
    float* d = device_alloc<float>(1000);
    // a CPU loop handed a device pointer: a crash on a GPU, and here
    CHECK(signal_of_child([&] { volatile float v = d[3]; (void)v; }) == SIGSEGV);
    CHECK(signal_of_child([&] { d[999] = 1.0f; }) == SIGSEGV);
    // the same memory is fine from a kernel and through cudaMemcpy
    MOEKD_LAUNCH(1, 1000, 0, 0, fill_kernel)(d, 1000, 4.0f);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    CHECK(to_host(d, 1000)[999] == 4.0f);
    // a kernel writing right past its buffer hits the guard page
    CHECK(signal_of_child([&] { MOEKD_LAUNCH(1, 64, 0, 0, past_the_end_kernel)(d, 1000); }) == SIGSEGV);
    cudaFree(d);
}
