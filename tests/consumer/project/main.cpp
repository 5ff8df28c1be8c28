// main.cpp — the outside project of tests/consumer: include moekd, build a tiny graph, run
// backward, and exit 0 only if the gradient matches the hand-derived one.
//
//   loss = sum(3 x^2 + sigmoid(x))    d loss / dx = 6 x + s (1 - s),  s = sigmoid(x)
#include <moekd/tensor.hpp>

#include <cmath>
#include <cstdio>

int main() {
    using moekd::Tensor;
    Tensor<double> x = Tensor<double>::from_vector({-1.5, -0.25, 0.0, 0.5, 2.0}, moekd::Shape{5});
    x.requires_grad_();
    Tensor<double> loss = moekd::sum(3.0 * x * x + moekd::sigmoid(x));
    loss.backward();
    const Tensor<double> g = x.grad();
    double worst = 0, gsum = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
        const double v = x.at({i}), s = 1 / (1 + std::exp(-v));
        worst = std::fmax(worst, std::fabs(g.at({i}) - (6 * v + s * (1 - s))));
        gsum += g.at({i});
    }
    std::printf("moekd consumer: loss %.6f, sum of grad %.6f, max grad error %.3g\n", loss.item(), gsum, worst);
    return worst < 1e-12 ? 0 : 1;
}
