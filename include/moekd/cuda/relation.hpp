// cuda/relation.hpp — the cosine-relation loss of TCD (eq. 6-8) on the GPU, forward and backward:
// for G groups of N tokens, the mean over groups and token pairs of (cos(s_i, s_j) - cos(t_i, t_j))^2,
// student and teacher widths free. moekd::relation_loss and moekd::qk_relation_loss
// (losses/relation.hpp) run these kernels themselves, with autograd, when their operands are on
// CUDA (through the device table, filled from the raw launchers declared here); the functions
// below drive the same kernels without autograd. Rows normalised by kern::l2_normalize_row's math
// (a warp or a block per row), one cuBLAS GEMM per group for each Gram matrix, E = Gs - Gt and its
// squared row sums as kern::relation_diff_row, the loss reduced in a fixed order in double;
// backward: gy = 4 c g E y per group (GEMM), then kern::l2_normalize_backward_row's math.
//
//   auto f = cuda::relation_loss_forward(s, t);        // s: (G, N, Ds) or (N, Ds), t: (G, N, Dt) / (N, Dt)
//   auto g = cuda::relation_loss_backward(f, 1.f);     // g.dstudent like s (g.dteacher if asked)
//
// No autograd (use moekd::relation_loss on CUDA tensors for that). Launchers compiled for float
// and double in kernels/relation.cu.
#pragma once

#include <cstdint>

#include "../core/tensor.hpp"
#include "../ops/view.hpp"
#include "allocator.hpp"
#include "blas.hpp"
#include "elementwise.hpp"
#include "error.hpp"

namespace moekd::cuda {

/// What relation_loss_forward returns and the backward needs (all on the GPU but the sizes).
template <class T>
struct RelationForward {
    Tensor<T> loss;        // () the loss
    Tensor<T> ys, yt;      // (G * N, Ds), (G * N, Dt) the normalised rows
    Tensor<T> ns, nt;      // (G * N) each row's divisor max(||x||, eps)
    Tensor<T> E;           // (G, N, N) Gs - Gt
    int64_t G = 0, N = 0;
    Shape student_shape, teacher_shape;
};

template <class T>
struct RelationGrads {
    Tensor<T> dstudent, dteacher;  // like the inputs; undefined when not asked for
};

namespace detail {

// Raw launchers (kernels/relation.cu); they throw moekd::Error if a launch fails.
template <class T>
void l2_normalize_raw(const T* x, T* y, T* nrm, int64_t rows, int64_t n, T eps);
/// gx from the gradient g of y, times scale[0] first when scale (a device pointer) is not null.
template <class T>
void l2_normalize_backward_raw(const T* y, const T* g, const T* scale, const T* nrm, T* gx, int64_t rows, int64_t n,
                               T eps);
/// e (rows, n) holds gs, becomes gs - gt; loss[0] = scale * sum of all squares (rows in order, double).
template <class T>
void relation_diff_raw(T* e, const T* gt, T* sq, T* loss, int64_t rows, int64_t n, double scale);

/// The eps of the cosine, as losses/relation.hpp's relation_eps.
template <class T>
constexpr T device_relation_eps() {
    return static_cast<T>(1e-8);
}

}  // namespace detail

/// Forward of the relation loss. student: (N, Ds) or (G, N, Ds); teacher: (N, Dt) or (G, N, Dt),
/// same rank, same G and N; contiguous, on the GPU.
template <class T>
RelationForward<T> relation_loss_forward(const Tensor<T>& student, const Tensor<T>& teacher) {
    const char* op = "cuda::relation_loss_forward";
    MOEKD_CHECK(student.defined() && teacher.defined(), op, ": student and teacher must be defined tensors");
    MOEKD_CHECK((student.dim() == 2 || student.dim() == 3) && teacher.dim() == student.dim(), op,
                ": student of shape ", student.shape(), " and teacher of shape ", teacher.shape(),
                " must both be (N, D) tokens or both (G, N, D) groups of tokens");
    MOEKD_CHECK(student.size(-2) == teacher.size(-2) && (student.dim() == 2 || student.size(0) == teacher.size(0)),
                op, ": student of shape ", student.shape(), " and teacher of shape ", teacher.shape(),
                " have different token counts; HINT: both sides must describe the same tokens (widths may differ)");
    const int64_t N = student.size(-2), Ds = student.size(-1), Dt = teacher.size(-1);
    const int64_t G = student.dim() == 3 ? student.size(0) : 1;
    MOEKD_CHECK(N > 0 && Ds > 0 && Dt > 0 && G > 0, op, ": empty input (student ", student.shape(), ", teacher ",
                teacher.shape(), ")");
    detail::require_device_contiguous(student, op, "student");
    detail::require_device_contiguous(teacher, op, "teacher");
    const T eps = detail::device_relation_eps<T>();
    RelationForward<T> f;
    f.G = G;
    f.N = N;
    f.student_shape = student.shape();
    f.teacher_shape = teacher.shape();
    f.ys = Tensor<T>::empty({G * N, Ds}, Device::CUDA);
    f.yt = Tensor<T>::empty({G * N, Dt}, Device::CUDA);
    f.ns = Tensor<T>::empty({G * N}, Device::CUDA);
    f.nt = Tensor<T>::empty({G * N}, Device::CUDA);
    detail::l2_normalize_raw(student.data(), f.ys.data(), f.ns.data(), G * N, Ds, eps);
    detail::l2_normalize_raw(teacher.data(), f.yt.data(), f.nt.data(), G * N, Dt, eps);
    f.E = Tensor<T>::empty({G, N, N}, Device::CUDA);
    Tensor<T> gt = Tensor<T>::empty({G, N, N}, Device::CUDA);
    for (int64_t g = 0; g < G; ++g) {  // Gram matrices, one GEMM per group and side
        const Tensor<T> s = f.ys.narrow(0, g * N, N), t = f.yt.narrow(0, g * N, N);
        Tensor<T> es = f.E.select(0, g), et = gt.select(0, g);
        gemm(s, s, es, false, true);  // (N, Ds) @ (Ds, N)
        gemm(t, t, et, false, true);
    }
    f.loss = Tensor<T>::empty(Shape{}, Device::CUDA);
    Tensor<T> sq = Tensor<T>::empty({G * N}, Device::CUDA);
    detail::relation_diff_raw(f.E.data(), gt.data(), sq.data(), f.loss.data(), G * N, N, 1.0 / double(G * N * N));
    return f;
}

/// Backward of the relation loss: the gradients of grad * loss wrt student (need_student) and
/// teacher (need_teacher; off by default, the teacher being detached in TCD).
template <class T>
RelationGrads<T> relation_loss_backward(const RelationForward<T>& f, T grad = T(1), bool need_student = true,
                                        bool need_teacher = false) {
    const char* op = "cuda::relation_loss_backward";
    MOEKD_CHECK(f.E.defined() && f.ys.defined() && f.yt.defined(), op, ": the forward state is empty");
    const int64_t G = f.G, N = f.N, Ds = f.ys.size(1), Dt = f.yt.size(1);
    detail::require_shape(f.E, Shape{G, N, N}, op, "forward E");
    detail::require_device_contiguous(f.E, op, "forward E");
    // d loss / d Gs = 2c g E; E is symmetric, so d/d y_s = (dGs + dGs^T) y_s = 4c g E y_s.
    const T alpha = static_cast<T>(4.0 / double(G * N * N) * double(grad));
    const T eps = detail::device_relation_eps<T>();
    auto side = [&](const Tensor<T>& y, const Tensor<T>& nrm, int64_t D, T a, const Shape& shape) {
        Tensor<T> gy = Tensor<T>::empty({G * N, D}, Device::CUDA);
        for (int64_t g = 0; g < G; ++g) {
            const Tensor<T> e = f.E.select(0, g), yg = y.narrow(0, g * N, N);
            Tensor<T> out = gy.narrow(0, g * N, N);
            gemm(e, yg, out, false, false, a, T(0));  // (N, N) @ (N, D)
        }
        Tensor<T> gx = Tensor<T>::empty(shape, Device::CUDA);  // contiguous (G * N, D) in the input's shape
        detail::l2_normalize_backward_raw(y.data(), gy.data(), static_cast<const T*>(nullptr), nrm.data(), gx.data(),
                                          G * N, D, eps);
        return gx;
    };
    RelationGrads<T> r;
    if (need_student) r.dstudent = side(f.ys, f.ns, Ds, alpha, f.student_shape);
    if (need_teacher) r.dteacher = side(f.yt, f.nt, Dt, static_cast<T>(-alpha), f.teacher_shape);
    return r;
}

}  // namespace moekd::cuda
