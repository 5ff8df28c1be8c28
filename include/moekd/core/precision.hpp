// precision.hpp — the precision matrix products compute in: fp32, or bf16 inside an autocast
// scope (as torch.autocast(dtype=torch.bfloat16)).
//
//   {
//       moekd::Autocast ac(moekd::Precision::bf16);  // matmul / linear / bmm / expert GEMMs in bf16
//       Tensor<float> loss = model(x);               // everything else stays fp32
//       loss.backward();                             // a product's backward runs in the precision
//   }                                                // its forward ran in, wherever backward() is
//   opt.step();                                      // master weights, grads, moments: fp32
//
// Inside the scope a product takes bf16 copies of its operands (round to nearest even) and
// accumulates in fp32 into an fp32 result; tensors stay Tensor<float>. A parameter's bf16 copy is
// made once and reused (forward and backward, every layer that reads it) until an optimizer
// step, or the last scope's end, drops the copies. Softmax, layer norm, losses, the router and
// reductions never change precision. The state is per thread and follows moekd's pool into its
// workers; a scope asked for bf16 where bf16 products cannot run (a build without oneDNN, or a
// CPU without AVX512-BF16) stays fp32, and `bf16_support().why` says why.
//
// On the GPU, as torch.autocast("cuda", dtype=torch.bfloat16): `Autocast ac(Precision::bf16,
// Device::CUDA)` runs the products of CUDA tensors through cublasGemmEx on bf16 copies with fp32
// accumulation (kernels/gemm_bf16.cu); `bf16_support(Device::CUDA)` asks the CUDA backend (a GPU of
// compute capability 8.0 or later). The state is per device, as torch.autocast's: a CUDA scope
// leaves CPU products fp32, and a CPU scope CUDA products.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "device.hpp"
#include "error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace moekd {

enum class Precision { fp32, bf16 };

inline const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

/// "fp32" or "bf16"; anything else is an error that lists the choices.
inline Precision parse_precision(std::string_view s) {
    if (s == "fp32") return Precision::fp32;
    if (s == "bf16") return Precision::bf16;
    throw Error(msg("precision '", s, "' is not supported: choose fp32 or bf16"));
}

namespace detail {

/// The precision of this thread's products, per device (as torch.autocast's state is per device
/// type): a CPU scope leaves CUDA products fp32 and the reverse.
struct PrecisionState {
    Precision cpu = Precision::fp32, cuda = Precision::fp32;
};
inline thread_local PrecisionState tl_precision;

/// Bumped by every optimizer step (and by anyone who writes parameters in place inside a scope):
/// the cached bf16 copies of parameters are made again after it changes.
inline std::atomic<uint64_t>& param_generation() {
    static std::atomic<uint64_t> g{0};
    return g;
}
/// Autocast scopes alive in the process; the parameter copies are dropped when it falls to 0.
inline std::atomic<int>& autocast_scopes() {
    static std::atomic<int> n{0};
    return n;
}
void clear_bf16_cache();  // ops/gemm_bf16.hpp

/// Whether this CPU has the AVX512-BF16 dot products (CPUID leaf 7, sub-leaf 1, EAX bit 5).
inline bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 1, a, b, c, d);
    (void)b, (void)c, (void)d;
    return (a >> 5) & 1u;
#else
    return false;
#endif
}

}  // namespace detail

/// Whether bf16 products run here, and if not, why (one line, for a run's header).
struct Bf16Support {
    bool ok = false;
    std::string why;
};
namespace detail {
/// Installed by the CUDA backend (kernels/gemm_bf16.cu) with its table entries: whether its bf16
/// GEMMs run on the current device, and why not.
inline Bf16Support (*&cuda_bf16_probe())() {
    static Bf16Support (*probe)() = nullptr;
    return probe;
}
}  // namespace detail

/// Whether bf16 products run on `device` here (CPU: oneDNN on AVX512-BF16; CUDA: cuBLAS on a GPU
/// of compute capability >= 8.0), and if not, why.
inline Bf16Support bf16_support(Device device = Device::CPU) {
    if (device == Device::CUDA) {
        if (!detail::cuda_bf16_probe())
            return {false, "this program has no CUDA backend (link moekd::cuda and include <moekd/cuda.hpp>)"};
        return detail::cuda_bf16_probe()();
    }
#if !defined(MOEKD_DNNL)
    return {false, "this build has no oneDNN (MOEKD_DNNL off; apt-get install libdnnl-dev and reconfigure)"};
#else
    if (!detail::cpu_has_avx512_bf16()) return {false, "this CPU has no AVX512-BF16 instructions"};
    return {true, "oneDNN bf16 matmul (AVX512-BF16)"};
#endif
}

/// The precision products of `device`'s tensors run in on this thread now.
inline Precision autocast_precision(Device device = Device::CPU) {
    return device == Device::CUDA ? detail::tl_precision.cuda : detail::tl_precision.cpu;
}

/// Products in `p` while alive (bf16 falls back to fp32 where bf16_support(device) is false:
/// `device` is where the scope's products run). Scopes nest; each restores the precision it found.
class Autocast {
public:
    explicit Autocast(Precision p = Precision::bf16, Device device = Device::CPU)
        : saved_(detail::tl_precision), device_(device) {
        if (p == Precision::bf16 && !bf16_support(device).ok) p = Precision::fp32;
        (device == Device::CUDA ? detail::tl_precision.cuda : detail::tl_precision.cpu) = p;
        ++detail::autocast_scopes();
    }
    ~Autocast() {
        detail::tl_precision = saved_;
        if (--detail::autocast_scopes() == 0) detail::clear_bf16_cache();
    }
    Autocast(const Autocast&) = delete;
    Autocast& operator=(const Autocast&) = delete;
    /// The precision this scope's device runs (fp32 when bf16 was asked for and cannot run).
    Precision active() const { return autocast_precision(device_); }

private:
    detail::PrecisionState saved_;
    Device device_;
};

namespace detail {
/// Sets this thread's precision for a while (pool workers take their caller's; backward closures
/// take their forward's).
class PrecisionGuard {
public:
    explicit PrecisionGuard(PrecisionState p) : saved_(tl_precision) { tl_precision = p; }
    ~PrecisionGuard() { tl_precision = saved_; }
    PrecisionGuard(const PrecisionGuard&) = delete;
    PrecisionGuard& operator=(const PrecisionGuard&) = delete;

private:
    PrecisionState saved_;
};
}  // namespace detail

}  // namespace moekd
