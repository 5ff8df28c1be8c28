// schedule.hpp — learning-rate schedules as plain functions of the step (1-based).
#pragma once

#include <cmath>
#include <cstdint>

#include "../core/error.hpp"

namespace moekd::optim {

/// fairseq's inverse_sqrt: linear warmup from warmup_init_lr to lr over `warmup` steps, then
/// lr * sqrt(warmup / step).
inline double inverse_sqrt_lr(int64_t step, double lr, int64_t warmup, double warmup_init_lr = 0.0) {
    MOEKD_CHECK(warmup > 0, "inverse_sqrt_lr: warmup ", warmup, " must be > 0");
    if (step < warmup) return warmup_init_lr + (lr - warmup_init_lr) * double(step) / double(warmup);
    return lr * std::sqrt(double(warmup) / double(step));
}

/// Linear warmup to lr over `warmup` steps, then linear decay to 0 at `total` (BERT's schedule;
/// OneS states warmup epochs and a linear decay, not the warmup's shape).
inline double linear_warmup_decay_lr(int64_t step, double lr, int64_t warmup, int64_t total) {
    MOEKD_CHECK(total > 0 && warmup >= 0 && warmup <= total, "linear_warmup_decay_lr: warmup ", warmup,
                " and total ", total, " must satisfy 0 <= warmup <= total, total > 0");
    if (step < warmup) return lr * double(step) / double(warmup);
    return lr * std::max(0.0, double(total - step) / double(std::max<int64_t>(1, total - warmup)));
}

/// Linear warmup, then half a cosine from lr down to min_lr at `total`.
inline double cosine_lr(int64_t step, double lr, int64_t warmup, int64_t total, double min_lr = 0.0) {
    MOEKD_CHECK(total > 0 && warmup >= 0 && warmup <= total, "cosine_lr: warmup ", warmup, " and total ", total,
                " must satisfy 0 <= warmup <= total, total > 0");
    if (step < warmup) return lr * double(step) / double(warmup);
    const double progress = std::min(1.0, double(step - warmup) / double(std::max<int64_t>(1, total - warmup)));
    return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * progress));
}

}  // namespace moekd::optim
