// rows_gpu_test.cpp — the row kernels of the CUDA backend (kernels/softmax.cu, kernels/norm.cu)
// through the op API: moekd::softmax, log_softmax, cross_entropy and layer_norm, forward and
// autograd backward, on CUDA tensors against the same ops on the CPU with the same random inputs.
// backend_ops_test runs the registry's small cases in double; this program covers the kernels'
// paths: row lengths on both sides of the warp / block switch (1, 7, 32, 33, 1000, 1024, 1025, 5000,
// 32768), 1, 3 and 129 rows, float and double, a dim that is not the last (the strided kernels),
// ignored targets, label smoothing, rows with +1000 and -inf logits, all-equal rows; the layer-norm
// weight / bias gradients (several row chunks), and the same bits twice. Compiled by g++, linked
// with moekd::cuda (or moekd::cuda_emu: rows_gpu_test_emu).
//
// Needs a GPU. Without one it prints "SKIPPED: no CUDA device: <reason>" and exits 77 (ctest:
// skipped). `rows_gpu_test --no-device` runs the checks that hold without a GPU: the row ops'
// device entries are installed, and the CPU ops are unchanged.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <moekd/cuda.hpp>
#include <moekd/tensor.hpp>

#include "gpu_main.hpp"

using namespace moekd;

namespace {

const std::vector<int64_t> kLengths{1, 7, 32, 33, 1000, 1024, 1025, 5000, 32768};
const std::vector<int64_t> kRows{1, 3, 129};

/// Under the sanitizers the emulated device switches fibers with swapcontext (two system calls a
/// switch), and 129 rows of 32768 take minutes: there the block-per-row path is covered by 1 and 3
/// rows of 32768, and many rows by 129 of up to 5000.
bool skip_case(int64_t rows, int64_t n) {
#if defined(__SANITIZE_ADDRESS__)
    return rows > 3 && n > 5000;
#else
    (void)rows, (void)n;
    return false;
#endif
}

/// The largest error seen per (dtype, quantity), printed at the end.
std::map<std::string, double>& worst() {
    static std::map<std::string, double> w;
    return w;
}

/// The error of got (either device) against want (CPU), each value relative to the largest |want|
/// of its row of `row_len` consecutive elements (the whole tensor when row_len is 0; the absolute
/// error for a row of zeros), so a row of +1000 logits does not hide the errors of its neighbours. Non-finite values must agree exactly
/// (NaN with NaN, inf with the same inf). `floor` bounds the row scale from below (a row whose
/// exact values are rounding residue, e.g. the gradient of one class). Records the result under
/// `what`.
template <class T, class W = T>
double row_err(const Tensor<T>& got_any, const Tensor<W>& want_any, int64_t row_len, const std::string& what,
               double floor = 0) {
    REQUIRE(got_any.defined());
    REQUIRE(want_any.defined());
    const Tensor<T> got = got_any.detach().to(Device::CPU);
    const Tensor<W> want = want_any.detach().to(Device::CPU);
    REQUIRE(got.shape() == want.shape());
    const std::vector<T> g = got.to_vector();
    const std::vector<W> w = want.to_vector();
    const size_t L = row_len > 0 ? static_cast<size_t>(row_len) : std::max<size_t>(1, g.size());
    double err = 0;
    size_t mismatched_nonfinite = 0;
    for (size_t r0 = 0; r0 < g.size(); r0 += L) {
        const size_t r1 = std::min(g.size(), r0 + L);
        double scale = 0;
        for (size_t i = r0; i < r1; ++i)
            if (std::isfinite(double(w[i]))) scale = std::max(scale, std::abs(double(w[i])));
        if (scale == 0) scale = 1;  // a row of zeros (e.g. the x gradient of N = 1): absolute error
        scale = std::max(scale, floor);
        for (size_t i = r0; i < r1; ++i) {
            const double a = g[i], b = w[i];
            if (!std::isfinite(b) || !std::isfinite(a)) {
                const bool same = (std::isnan(a) && std::isnan(b)) || a == b;
                mismatched_nonfinite += !same;
                continue;
            }
            err = std::max(err, std::abs(a - b) / scale);
        }
    }
    CHECK(mismatched_nonfinite == 0);
    const std::string key = std::string(dtype_name<T>()) + " " + what;
    worst()[key] = std::max(worst()[key], err);
    return err;
}

// Against the CPU op in the same dtype. Float: the CPU's own sums are serial or 16-lane float
// sums over up to 32768 terms, the device's per-lane partials and a tree, so the two differ by
// the CPU's rounding more than the device's (up to 7e-5 seen in a dominant probability of a 32k
// row; record_truth below shows the device float is the closer to the double result).
template <class T>
constexpr double tol() {
    return sizeof(T) == 4 ? 1e-4 : 1e-12;
}

template <class T>
Tensor<double> as_double(const Tensor<T>& t) {
    if (!t.defined()) return Tensor<double>();
    const std::vector<T> v = t.to_vector();
    if (t.dim() == 0) return Tensor<double>::scalar(static_cast<double>(v[0]));
    return Tensor<double>::from_vector(std::vector<double>(v.begin(), v.end()), t.shape());
}

/// Float only: the device result and the CPU float result, each against the CPU op run in double
/// on the same (float-valued) inputs, recorded as "<what> vs double: device" / "... cpu" (printed
/// at the end); the device float must be within the float tolerance of it too.
template <class T>
void record_truth(const Tensor<T>& gpu, const Tensor<T>& cpu, const Tensor<double>& truth, int64_t row_len,
                  const std::string& what, double floor = 0) {
    if constexpr (std::is_same_v<T, float>) {
        const double eg = row_err(gpu, truth, row_len, what + " vs double: device", floor);
        const double ec = row_err(cpu, truth, row_len, what + " vs double: cpu", floor);
        (void)ec;
        CHECK(eg < tol<float>());
    }
}

template <class T>
Tensor<T> leaf(Tensor<T> t) {
    t.requires_grad_();
    return t;
}

template <class T>
std::vector<T> bits(const Tensor<T>& t) {
    return t.to_vector();
}

template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
    const std::vector<T> x = bits(a), y = bits(b);
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
}

/// (rows, n) logits: N(0, 3), row 0 with some +1000 entries, row 1 with some -inf entries (when
/// n > 1 and `neg_inf`), row 2 all equal.
template <class T>
Tensor<T> make_logits(int64_t rows, int64_t n, Generator& gen, bool neg_inf = true) {
    Tensor<T> x = Tensor<T>::randn({rows, n}, gen, 0.0, 3.0);
    T* p = x.data();
    for (int64_t i = 0; i < n; i += 7) p[i] = T(1000) + T(i % 3);
    if (rows > 1 && n > 1 && neg_inf)
        for (int64_t i = 1; i < n; i += 3) p[n + i] = -INFINITY;
    if (rows > 2)
        for (int64_t i = 0; i < n; ++i) p[2 * n + i] = T(0.25);
    return x;
}

// ---- softmax / log_softmax -----------------------------------------------------------------------
template <class T>
struct RowsOut {
    Tensor<T> y, gx;
};

/// The op and its autograd backward on x's device (x's values and g are copied there).
template <class T>
RowsOut<T> run_softmax(const Tensor<T>& x, const Tensor<T>& g, int64_t dim, bool log, Device dev = Device::CPU) {
    Tensor<T> xl = leaf(x.detach().clone().to(dev));
    Tensor<T> y = log ? log_softmax(xl, dim) : softmax(xl, dim);
    y.backward(g.to(dev));
    return {y.detach(), xl.grad()};
}

template <class T>
void check_softmax_case(const Tensor<T>& x, int64_t dim, bool log, int64_t row_len) {
    Generator gen(5);
    const Tensor<T> g = Tensor<T>::randn(x.shape(), gen);
    const RowsOut<T> cpu = run_softmax(x, g, dim, log);
    const RowsOut<T> dev = run_softmax(x, g, dim, log, Device::CUDA);
    const Tensor<T> yd = dev.y, gxd = dev.gx;
    CHECK(yd.device() == Device::CUDA);
    CHECK(gxd.device() == Device::CUDA);
    const std::string name = log ? "log_softmax" : "softmax";
    CHECK(row_err(yd, cpu.y, row_len, name + " forward") < tol<T>());
    CHECK(row_err(gxd, cpu.gx, row_len, name + " backward") < tol<T>());
    if constexpr (std::is_same_v<T, float>) {
        const RowsOut<double> truth = run_softmax(as_double(x), as_double(g), dim, log);
        record_truth(yd, cpu.y, truth.y, row_len, name + " forward");
        record_truth(gxd, cpu.gx, truth.gx, row_len, name + " backward");
    }
}

template <class T>
void check_softmax_last_dim() {
    Generator gen(3);
    for (int64_t n : kLengths)
        for (int64_t rows : kRows) {
            if (skip_case(rows, n)) continue;
            INFO(dtype_name<T>() << " rows=" << rows << " n=" << n);
            const Tensor<T> x = make_logits<T>(rows, n, gen);
            check_softmax_case(x, -1, false, n);
            check_softmax_case(x, 1, true, n);
        }
}

template <class T>
void check_softmax_strided() {
    Generator gen(4);
    for (const auto& [shape, dim] : std::vector<std::pair<Shape, int64_t>>{
             {Shape{4, 37, 5}, 1}, {Shape{3, 1025, 2}, 1}, {Shape{7, 33}, 0}, {Shape{2, 3, 129, 4}, -2}}) {
        INFO(dtype_name<T>() << " shape=" << shape << " dim=" << dim);
        Tensor<T> x = Tensor<T>::randn(shape, gen, 0.0, 3.0);
        x.data()[0] = T(1000);
        x.data()[1] = -INFINITY;
        check_softmax_case(x, dim, false, 0);
        check_softmax_case(x, dim, true, 0);
    }
}

TEST_CASE("device softmax / log_softmax over the last dim match the CPU ops (warp and block rows)", "[cuda]") {
    check_softmax_last_dim<float>();
    check_softmax_last_dim<double>();
}

TEST_CASE("device softmax / log_softmax over a dim that is not last match the CPU ops (strided rows)", "[cuda]") {
    check_softmax_strided<float>();
    check_softmax_strided<double>();
}

TEST_CASE("device softmax of an all -inf row is NaN, as on the CPU", "[cuda]") {
    for (int64_t n : {5, 2000}) {
        Tensor<float> x = Tensor<float>::full({2, n}, -INFINITY);
        x.data()[n] = 1.0f;  // row 1 is fine
        const Tensor<float> xd = x.to(Device::CUDA);
        row_err(softmax(xd), softmax(x), n, "softmax all -inf");
        row_err(log_softmax(xd), log_softmax(x), n, "log_softmax all -inf");
        CHECK(std::isnan(softmax(xd).to_vector()[0]));
    }
}

// ---- cross-entropy -------------------------------------------------------------------------------
/// The op and its autograd backward on `dev` (logits, targets and g are copied there).
template <class T>
RowsOut<T> run_cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& targets, int64_t ignore_index,
                             double smoothing, Reduction red, const Tensor<T>& g, Device dev = Device::CPU) {
    Tensor<T> xl = leaf(logits.detach().clone().to(dev));
    const Tensor<T> loss = cross_entropy(xl, targets.to(dev), ignore_index, smoothing, red);
    loss.backward(g.to(dev));
    return {loss.detach(), xl.grad()};
}

template <class T>
void check_cross_entropy_case(const Tensor<T>& logits, const Tensor<int64_t>& targets, double smoothing,
                              Reduction red, const std::string& tag, int64_t ignore_index = -100) {
    Generator gen(9);
    const int64_t N = targets.numel(), C = logits.size(1);
    const Tensor<T> g = red == Reduction::None ? Tensor<T>::randn({N}, gen) : Tensor<T>::scalar(T(0.7));
    const RowsOut<T> cpu = run_cross_entropy(logits, targets, ignore_index, smoothing, red, g);
    const RowsOut<T> dev = run_cross_entropy(logits, targets, ignore_index, smoothing, red, g, Device::CUDA);
    const Tensor<T> loss = dev.y, gx = dev.gx;
    CHECK(loss.device() == Device::CUDA);
    CHECK(gx.device() == Device::CUDA);
    CHECK(loss.shape() == cpu.y.shape());
    CHECK(row_err(loss, cpu.y, 0, "cross_entropy loss" + tag) < tol<T>());
    // C = 1: the exact gradient is 0 and the computed one rounding residue (FMA contraction);
    // rows of real gradients are 0.7 / count (over 5e-3) times (1 - p) here
    CHECK(row_err(gx, cpu.gx, C, "cross_entropy grad" + tag, 1e-3) < tol<T>());
    if constexpr (std::is_same_v<T, float>) {
        const RowsOut<double> truth =
            run_cross_entropy(as_double(logits), targets, ignore_index, smoothing, red, as_double(g));
        record_truth(loss, cpu.y, truth.y, 0, "cross_entropy loss" + tag);
        record_truth(gx, cpu.gx, truth.gx, C, "cross_entropy grad" + tag, 1e-3);
    }
}

/// N targets in [0, C), about one in five ignored (-100), row 0 never.
Tensor<int64_t> make_targets(int64_t N, int64_t C, Generator& gen) {
    std::vector<int64_t> t(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r) t[r] = (r > 0 && gen.uniform() < 0.2) ? -100 : gen.randint(0, C);
    if (N > 0) t[0] = 0;  // row 0 (the +1000 row) aims at a +1000 logit
    return Tensor<int64_t>::from_vector(t, Shape{N});
}

template <class T>
void check_cross_entropy_all() {
    Generator gen(21);
    for (int64_t C : kLengths)
        for (int64_t N : kRows)
            for (double sm : {0.0, 0.1}) {
                if (skip_case(N, C)) continue;
                INFO(dtype_name<T>() << " N=" << N << " C=" << C << " smoothing=" << sm);
                // -inf logits only without smoothing: with it the loss is +inf on both sides
                const Tensor<T> x = make_logits<T>(N, C, gen, sm == 0.0);
                Tensor<int64_t> t = make_targets(N, C, gen);
                if (N > 1 && C > 1) t.data()[1] = 0;  // a finite logit of the -inf row
                check_cross_entropy_case(x, t, sm, Reduction::Mean, "");
                if ((N == 129 && (C == 33 || C == 1025)) || (N == 3 && C == 5000)) {
                    check_cross_entropy_case(x, t, sm, Reduction::Sum, "");
                    check_cross_entropy_case(x, t, sm, Reduction::None, "");
                }
            }
}

TEST_CASE("device cross-entropy matches moekd::cross_entropy (ignore_index, smoothing, reductions)", "[cuda]") {
    check_cross_entropy_all<float>();
    check_cross_entropy_all<double>();
}

TEST_CASE("device cross-entropy edge cases: all ignored, -inf with smoothing, checked targets", "[cuda]") {
    Generator gen(23);
    const Tensor<double> x = make_logits<double>(3, 40, gen);
    const Tensor<int64_t> none = Tensor<int64_t>::full({3}, -100);
    check_cross_entropy_case(x, none, 0.1, Reduction::Mean, " all ignored");
    const RowsOut<double> f =
        run_cross_entropy(x, none, -100, 0.1, Reduction::Mean, Tensor<double>::scalar(1.0), Device::CUDA);
    CHECK(f.y.item() == 0.0);
    CHECK(bits(f.gx) == std::vector<double>(120, 0.0));
    // row 1 holds -inf logits: with smoothing its loss is +inf on both sides
    const Tensor<int64_t> t = Tensor<int64_t>::from_vector({0, 0, 5}, Shape{3});
    check_cross_entropy_case(x, t, 0.2, Reduction::None, " -inf smoothed");
    CHECK(std::isinf(cross_entropy(x.to(Device::CUDA), t.to(Device::CUDA), -100, 0.2, Reduction::None).to_vector()[1]));
    // a custom ignore_index
    const Tensor<int64_t> t7 = Tensor<int64_t>::from_vector({7, 3, 7}, Shape{3});
    check_cross_entropy_case(x, t7, 0.1, Reduction::Mean, " ignore_index 7", 7);
    // one row kept: the mean divides by 1
    CHECK(cross_entropy(x.to(Device::CUDA), t7.to(Device::CUDA), 7, 0.0).item() ==
          cross_entropy(x.to(Device::CUDA), t7.to(Device::CUDA), 7, 0.0, Reduction::Sum).item());
    // an out-of-range target on the device: the CPU op's message (checked on a host copy)
    const Tensor<int64_t> bad = Tensor<int64_t>::from_vector({0, 40, 1}, Shape{3});
    CHECK_THROWS_WITH(cross_entropy(x.to(Device::CUDA), bad.to(Device::CUDA)),
                      Catch::Contains("target 40 at position (1") && Catch::Contains("40 classes"));
}

// ---- layer norm ----------------------------------------------------------------------------------
template <class T>
struct LnOut {
    Tensor<T> y, gx, gw, gb;
};

/// moekd::layer_norm over the last dim and its autograd backward on `dev`; w, b may be undefined.
template <class T>
LnOut<T> run_layer_norm(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, const Tensor<T>& g, double eps,
                        Device dev = Device::CPU) {
    Tensor<T> xl = leaf(x.detach().clone().to(dev));
    Tensor<T> wl = w.defined() ? leaf(w.detach().clone().to(dev)) : Tensor<T>();
    Tensor<T> bl = b.defined() ? leaf(b.detach().clone().to(dev)) : Tensor<T>();
    const Tensor<T> y = layer_norm(xl, Shape{x.size(x.dim() - 1)}, wl, bl, eps);
    y.backward(g.to(dev));
    return {y.detach(), xl.grad(), w.defined() ? wl.grad() : Tensor<T>(), b.defined() ? bl.grad() : Tensor<T>()};
}

template <class T>
void check_layer_norm_case(int64_t M, int64_t N, bool with_w, bool with_b, Generator& gen) {
    INFO(dtype_name<T>() << " M=" << M << " N=" << N << " weight=" << with_w << " bias=" << with_b);
    Tensor<T> x = Tensor<T>::randn({M, N}, gen, 3.0, 2.0);
    if (M > 1)
        for (int64_t i = 0; i < N; ++i) x.data()[N + i] += T(1000);  // |mean| >> std
    if (M > 2)
        for (int64_t i = 0; i < N; ++i) x.data()[2 * N + i] = T(-1.5);  // var = 0
    const Tensor<T> w = with_w ? Tensor<T>::randn({N}, gen, 1.0, 0.5) : Tensor<T>();
    const Tensor<T> b = with_b ? Tensor<T>::randn({N}, gen) : Tensor<T>();
    const Tensor<T> g = Tensor<T>::randn({M, N}, gen);
    const double eps = 1e-5;
    const LnOut<T> cpu = run_layer_norm(x, w, b, g, eps);
    const LnOut<T> gr = run_layer_norm(x, w, b, g, eps, Device::CUDA);
    CHECK(gr.y.device() == Device::CUDA);
    CHECK(row_err(gr.y, cpu.y, N, "layer_norm forward") < tol<T>());
    CHECK(row_err(gr.gx, cpu.gx, N, "layer_norm grad x") < tol<T>());
    CHECK(gr.gw.defined() == with_w);
    CHECK(gr.gb.defined() == with_b);
    if (with_w) CHECK(row_err(gr.gw, cpu.gw, 0, "layer_norm grad weight") < tol<T>());
    if (with_b) CHECK(row_err(gr.gb, cpu.gb, 0, "layer_norm grad bias") < tol<T>());
    if constexpr (std::is_same_v<T, float>) {
        const LnOut<double> truth = run_layer_norm(as_double(x), as_double(w), as_double(b), as_double(g), eps);
        record_truth(gr.y, cpu.y, truth.y, N, "layer_norm forward");
        record_truth(gr.gx, cpu.gx, truth.gx, N, "layer_norm grad x");
        if (with_w) record_truth(gr.gw, cpu.gw, truth.gw, 0, "layer_norm grad weight");
    }
}

template <class T>
void check_layer_norm_all() {
    Generator gen(31);
    for (int64_t N : kLengths)
        for (int64_t M : kRows)
            if (!skip_case(M, N)) check_layer_norm_case<T>(M, N, true, true, gen);
    check_layer_norm_case<T>(129, 33, false, false, gen);
    check_layer_norm_case<T>(3, 5000, true, false, gen);
    check_layer_norm_case<T>(700, 64, false, true, gen);  // several row chunks in the parameter pass
}

TEST_CASE("device layer norm matches moekd::layer_norm, forward and backward (x, weight, bias)", "[cuda]") {
    check_layer_norm_all<float>();
    check_layer_norm_all<double>();
}

// ---- determinism ---------------------------------------------------------------------------------
TEST_CASE("device row kernels give the same bits when run twice", "[cuda]") {
    Generator gen(41);
    const Tensor<float> x = Tensor<float>::randn({1000, 777}, gen, 2.0, 3.0);
    const Tensor<float> w = Tensor<float>::randn({777}, gen);
    const Tensor<float> b = Tensor<float>::randn({777}, gen);
    const Tensor<float> g = Tensor<float>::randn({1000, 777}, gen);
    const LnOut<float> f1 = run_layer_norm(x, w, b, g, 1e-5, Device::CUDA);
    const LnOut<float> f2 = run_layer_norm(x, w, b, g, 1e-5, Device::CUDA);
    CHECK(same_bits(f1.y, f2.y));
    CHECK(same_bits(f1.gw, f2.gw));
    CHECK(same_bits(f1.gb, f2.gb));
    CHECK(same_bits(f1.gx, f2.gx));

    const Tensor<float> l = Tensor<float>::randn({9, 32768}, gen, 0.0, 3.0);
    const Tensor<int64_t> t = make_targets(9, 32768, gen);
    const Tensor<float> one = Tensor<float>::scalar(1.0f);
    const RowsOut<float> c1 = run_cross_entropy(l, t, -100, 0.1, Reduction::Mean, one, Device::CUDA);
    const RowsOut<float> c2 = run_cross_entropy(l, t, -100, 0.1, Reduction::Mean, one, Device::CUDA);
    CHECK(same_bits(c1.y, c2.y));
    CHECK(same_bits(c1.gx, c2.gx));
    const Tensor<float> ld = l.to(Device::CUDA);
    CHECK(same_bits(softmax(ld), softmax(ld)));
}

TEST_CASE("row ops on CUDA tensors: strided views, and the CPU's argument checks", "[cuda]") {
    Generator gen(43);
    const Tensor<float> x = Tensor<float>::randn(Shape{4, 6}, gen);
    const Tensor<float> xd = x.to(Device::CUDA);
    // a transposed device view is read through a contiguous copy on the device
    CHECK(row_err(softmax(xd.t()), softmax(x.t()), 4, "softmax of a view") < tol<float>());
    CHECK(row_err(layer_norm(xd.t(), Shape{4}), layer_norm(x.t(), Shape{4}), 4, "layer_norm of a view") <
          tol<float>());
    CHECK_THROWS_WITH(layer_norm(xd, Shape{6}, Tensor<float>::ones(Shape{5}, Device::CUDA)),
                      Catch::Contains("weight of shape (5"));
    CHECK_THROWS_WITH(layer_norm(xd, Shape{6}, Tensor<float>::ones(Shape{6})), Catch::Contains("different devices"));
    CHECK_THROWS_WITH(cross_entropy(xd, Tensor<int64_t>::zeros(Shape{4})),
                      Catch::Contains("targets") && Catch::Contains("different devices"));
    CHECK_THROWS_WITH(cross_entropy(xd, Tensor<int64_t>::zeros(Shape{5}, Device::CUDA)),
                      Catch::Contains("targets of shape (5") && Catch::Contains("(4, 6)"));
    CHECK_THROWS_WITH(softmax(xd, 2), Catch::Contains("softmax"));
}

// ---- without a GPU (rows_gpu_test --no-device) ---------------------------------------------------

TEST_CASE("no device: the row ops' device entries are installed, the CPU ops are unchanged", "[nodevice]") {
    const DeviceOps<float>& f = DeviceOps<float>::cuda();
    const DeviceOps<double>& d = DeviceOps<double>::cuda();
    CHECK((f.softmax && f.softmax_backward && f.cross_entropy && f.cross_entropy_backward));
    CHECK((f.layer_norm && f.layer_norm_backward && f.nll_rows && f.nll_backward));
    CHECK((d.softmax && d.softmax_backward && d.cross_entropy && d.cross_entropy_backward));
    CHECK((d.layer_norm && d.layer_norm_backward && d.nll_rows && d.nll_backward));
    Generator gen(3);
    const Tensor<double> x = Tensor<double>::randn(Shape{3, 7}, gen);
    CHECK(row_err(softmax(x), detail::softmax_reference(x, -1), 7, "cpu softmax") < 1e-12);
    CHECK(row_err(layer_norm(x, Shape{7}), detail::layer_norm_reference(x, Shape{7}), 7, "cpu layer_norm") < 1e-12);
}

}  // namespace

int main(int argc, char** argv) {
    return moekd::test::gpu_test_main(argc, argv, [] {
        if (worst().empty()) return;
        std::cout << "largest errors (relative to the row's largest |CPU value|):\n";
        for (const auto& [k, v] : worst()) std::cout << "  " << k << ": " << v << "\n";
    });
}
