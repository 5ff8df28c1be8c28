// knowledge_gathering.hpp — OneS "knowledge gathering" (Xue et al., "One Student Knows All
// Experts Know: From Sparse to Dense"): fold the E experts of an MoE FFN into one dense FFN.
//
// For each expert weight W_i (M, N), thin SVD W_i = U_i diag(S_i) V_i^T (linalg::svd), keep the
// top K_i singular values whose sum reaches lambda of the expert's total (eq. 12,
// linalg::truncation_rank), then
//   U_g = [U_1[:, :K_1], ..., U_E[:, :K_E]]                  (M, sum K_i)      (eq. 13)
//   S_g = blockdiag(w_1 S_1[:K_1], ..., w_E S_E[:K_E])       (sum K_i)         (eq. 13, w_i ours)
//   V_g = [V_1[:, :K_1], ..., V_E[:, :K_E]]                  (N, sum K_i)
//   W_g = U_g diag(S_g) V_g^T = sum_i w_i U_i[:, :K_i] diag(S_i[:K_i]) V_i[:, :K_i]^T  (eq. 14)
// The paper's eq. 13 writes V_g as the V_i stacked vertically, which does not type-check with
// eq. 14; V_g here concatenates their columns (equivalently, V_g^T stacks the V_i^T), the only
// reading under which W_g = U_g S_g V_g^T is defined. The paper also calls W_g "rank-K_g,
// K_g = sum K^i"; that holds only while sum K_i <= min(M, N).
// w_i = 1 is the paper's gathering (the truncated experts are summed); the weights are ours and
// give the averaging (w_i = 1/E) and data-aware (w_i from routing frequencies) variants. Biases are
// averaged over the experts (eq. 10), weighted by w_i / sum w when weights are given (ours).
// Experts on the CPU: linalg::svd (LAPACK gesdd). Experts on the GPU: the same calls, unchanged:
// linalg::svd of a CUDA tensor runs cuSOLVER (gesvdj, through the device table, the expensive
// part), the factors are copied back, the truncation and the product run on the CPU, and W_g (and
// average_biases' mean) are returned on the experts' device. Without the CUDA backend, device
// experts are linalg::svd's clear error.
//
//   auto g = linalg::gather_weights<float>({w0, w1, w2, w3}, 0.9);   // g.weight (M, N), g.ranks
//   Tensor<float> b = linalg::average_biases<float>({b0, b1, b2, b3});
#pragma once

#include <string>
#include <vector>

#include "../ops/matmul.hpp"
#include "svd.hpp"

namespace moekd::linalg {

/// The gathered matrix and what it was built from.
template <class T>
struct GatheredWeight {
    Tensor<T> weight;             // W_g: (M, N)
    std::vector<int64_t> ranks;   // K_i per expert (eq. 12)
    std::vector<int64_t> full;    // min(M, N) per expert, for reporting K_i / full
    Tensor<T> U, S, Vt;           // U_g (M, sum K), S_g (sum K) including the weights, V_g^T (sum K, N)
};

namespace detail {
inline void check_gather_weights(const std::vector<double>& w, size_t E, const char* op) {
    if (w.empty()) return;
    MOEKD_CHECK(w.size() == E, op, ": ", w.size(), " expert weights given for ", E, " experts");
    double sum = 0;
    for (size_t i = 0; i < w.size(); ++i) {
        MOEKD_CHECK(std::isfinite(w[i]) && w[i] >= 0, op, ": expert weight ", i, " is ", w[i],
                    " (weights must be finite and >= 0)");
        sum += w[i];
    }
    MOEKD_CHECK(sum > 0, op, ": the expert weights sum to 0; at least one expert must count");
}

/// Thin SVD of one expert on its own device (linalg::svd); the factors come back on the CPU.
template <class T>
SVD<T> expert_svd(const Tensor<T>& w, size_t i, const char* op) {
    if (w.device() == Device::CPU) return svd(w);
    try {
        const SVD<T> d = svd(w);
        return {d.U.to(Device::CPU), d.S.to(Device::CPU), d.Vt.to(Device::CPU)};
    } catch (const Error& e) {
        MOEKD_CHECK(false, op, ": expert ", i, " weight ", w.shape(), " on ", w.device(), ": ", e.what());
    }
    return {};
}
}  // namespace detail

/// SVD knowledge gathering (eq. 12-14) of E same-shaped expert matrices.
/// experts: E tensors (M, N), all on the CPU or all on the GPU; lambda in (0, 1]; weights: empty (all 1, the paper) or E values
/// >= 0 scaling each expert's singular values. No autograd history on the result.
template <class T>
GatheredWeight<T> gather_weights(const std::vector<Tensor<T>>& experts, double lambda,
                                 const std::vector<double>& weights = {}) {
    const char* op = "gather_weights";
    MOEKD_CHECK(lambda > 0.0 && lambda <= 1.0, op, ": lambda = ", lambda,
                " is outside (0, 1]; it is the fraction of each expert's singular value sum to keep (eq. 12)");
    MOEKD_CHECK(!experts.empty(), op, ": no experts given (need at least one weight matrix)");
    detail::check_gather_weights(weights, experts.size(), op);
    for (size_t i = 0; i < experts.size(); ++i) {
        MOEKD_CHECK(experts[i].defined() && experts[i].dim() == 2, op, ": expert ", i, " weight ",
                    experts[i].defined() ? experts[i].shape() : Shape{}, " must be a matrix (M, N)");
        MOEKD_CHECK(experts[i].shape() == experts[0].shape(), op, ": expert ", i, " weight ", experts[i].shape(),
                    " does not match expert 0 weight ", experts[0].shape(), " (all experts must have one shape)");
    }
    NoGrad ng;
    const int64_t M = experts[0].size(0), N = experts[0].size(1);
    GatheredWeight<T> g;
    std::vector<SVD<T>> dec;
    int64_t total = 0;
    for (size_t i = 0; i < experts.size(); ++i) {
        MOEKD_CHECK(experts[i].device() == experts[0].device(), op, ": expert ", i, " is on ", experts[i].device(),
                    ", expert 0 on ", experts[0].device(), " (all experts must be on one device)");
        dec.push_back(detail::expert_svd(experts[i].detach(), i, op));
        g.ranks.push_back(truncation_rank(dec.back().S, lambda));
        g.full.push_back(dec.back().S.numel());
        total += g.ranks.back();
    }
    // eq. 13: concatenate U's, block-diagonal S (a vector), V^T's stacked (= V's side by side, see top)
    g.U = Tensor<T>::zeros({M, total});
    g.S = Tensor<T>::zeros({total});
    g.Vt = Tensor<T>::zeros({total, N});
    int64_t at = 0;
    for (size_t i = 0; i < experts.size(); ++i) {
        const int64_t K = g.ranks[i], Kf = g.full[i];
        const T wi = weights.empty() ? T(1) : static_cast<T>(weights[i]);
        const T *u = dec[i].U.data(), *s = dec[i].S.data(), *vt = dec[i].Vt.data();
        for (int64_t r = 0; r < M; ++r)
            for (int64_t k = 0; k < K; ++k) g.U.data()[r * total + at + k] = u[r * Kf + k];
        for (int64_t k = 0; k < K; ++k) g.S.data()[at + k] = wi * s[k];
        for (int64_t k = 0; k < K; ++k)
            for (int64_t c = 0; c < N; ++c) g.Vt.data()[(at + k) * N + c] = vt[k * N + c];
        at += K;
    }
    // eq. 14: W_g = U_g diag(S_g) V_g^T
    g.weight = matmul(g.U * g.S, g.Vt).contiguous();
    g.weight = g.weight.to(experts[0].device());  // U, S, Vt stay on the CPU
    return g;
}

/// eq. 10: the (weighted) mean of E same-shaped bias vectors. weights: empty (plain mean) or E
/// values >= 0 (normalised by their sum). Device biases: summed on a host copy, returned on their device.
template <class T>
Tensor<T> average_biases(const std::vector<Tensor<T>>& biases, const std::vector<double>& weights = {}) {
    const char* op = "average_biases";
    MOEKD_CHECK(!biases.empty(), op, ": no expert biases given");
    detail::check_gather_weights(weights, biases.size(), op);
    double wsum = 0;
    for (size_t i = 0; i < biases.size(); ++i) {
        MOEKD_CHECK(biases[i].defined() && biases[i].shape() == biases[0].shape(), op, ": expert ", i, " bias ",
                    biases[i].defined() ? biases[i].shape() : Shape{}, " does not match expert 0 bias ",
                    biases[0].shape());
        wsum += weights.empty() ? 1.0 : weights[i];
    }
    NoGrad ng;
    Tensor<T> out = Tensor<T>::zeros(biases[0].shape());
    for (size_t i = 0; i < biases.size(); ++i) {
        const Tensor<T> b = moekd::detail::contiguous_data(biases[i]).to(Device::CPU);
        const double wi = (weights.empty() ? 1.0 : weights[i]) / wsum;
        for (int64_t j = 0; j < out.numel(); ++j) out.data()[j] += static_cast<T>(wi * double(b.data()[j]));
    }
    return out.to(biases[0].device());  // summed on the CPU (small), returned where the biases are
}

}  // namespace moekd::linalg
