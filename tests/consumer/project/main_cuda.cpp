// main_cuda.cpp — the outside project's CUDA program: a host-compiled (g++) file that links the
// installed moekd::cuda library. It must link and start anywhere; with a GPU it also checks
// that the device gelu matches the CPU one.
#include <moekd/cuda.hpp>
#include <moekd/tensor.hpp>

#include <cmath>
#include <cstdio>

int main() {
    namespace cuda = moekd::cuda;
    std::printf("moekd consumer (CUDA): %s\n", cuda::build_info().c_str());
    if (cuda::device_count() == 0) {
        std::printf("no CUDA device (%s): linked and started, nothing to run\n", cuda::no_device_reason().c_str());
        return 0;
    }
    const auto x = moekd::Tensor<double>::from_vector({-2.0, -0.5, 0.0, 0.75, 3.0});
    const auto y = cuda::to_cpu(cuda::unary<moekd::kern::Gelu>(cuda::to_device(x)));
    const auto ref = moekd::gelu(x);
    double worst = 0;
    for (int64_t i = 0; i < x.numel(); ++i) worst = std::fmax(worst, std::fabs(y.at({i}) - ref.at({i})));
    std::printf("device gelu vs CPU gelu: max error %.3g\n", worst);
    return worst < 1e-12 ? 0 : 1;
}
