// main_cuda.cpp — the outside project's CUDA program: a host-compiled (g++) file that links the
// installed moekd::cuda library and uses it as a user would: the ordinary ops on tensors moved to
// the device with Tensor::to. It must link and start anywhere; with a GPU it also checks that a
// small layer (linear + gelu + layer_norm + softmax), forward and backward, matches the CPU.
#include <moekd/cuda.hpp>
#include <moekd/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace {

using moekd::Device;
using moekd::Tensor;

struct Run {
    std::vector<double> y, gx, gw;
};

Run run(const Tensor<double>& x0, const Tensor<double>& w0, const Tensor<double>& b0, Device dev) {
    Tensor<double> x = x0.detach().to(dev).requires_grad_(), w = w0.detach().to(dev).requires_grad_();
    const Tensor<double> b = b0.to(dev);
    const Tensor<double> h = moekd::gelu(moekd::linear(x, w, b));
    const Tensor<double> y = moekd::softmax(moekd::layer_norm(h, moekd::Shape{h.size(1)}), -1);
    moekd::sum(y * y).backward();
    return {y.to_vector(), x.grad().to_vector(), w.grad().to_vector()};  // to_vector copies back from the device
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
    double worst = a.size() == b.size() ? 0.0 : INFINITY;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::fmax(worst, std::fabs(a[i] - b[i]));
    return worst;
}

}  // namespace

int main() {
    namespace cuda = moekd::cuda;
    std::printf("moekd consumer (CUDA): %s\n", cuda::build_info().c_str());
    if (cuda::device_count() == 0) {
        std::printf("no CUDA device (%s): linked and started, nothing to run\n", cuda::no_device_reason().c_str());
        return 0;
    }
    moekd::Generator gen(1);
    const auto x = Tensor<double>::randn({5, 8}, gen), w = Tensor<double>::randn({6, 8}, gen);
    const auto b = Tensor<double>::randn({6}, gen);
    const Run c = run(x, w, b, Device::CPU), d = run(x, w, b, Device::CUDA);
    const double worst = std::max({max_diff(c.y, d.y), max_diff(c.gx, d.gx), max_diff(c.gw, d.gw)});
    std::printf("linear + gelu + layer_norm + softmax on the GPU vs the CPU (forward, x and w gradients): "
                "max error %.3g; peak GPU memory %zu bytes\n",
                worst, cuda::memory_stats().peak_bytes_in_use);
    return worst < 1e-10 ? 0 : 1;
}
