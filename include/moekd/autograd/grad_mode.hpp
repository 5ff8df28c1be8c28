// grad_mode.hpp — whether ops record history. `NoGrad` switches it off for a scope
// (evaluation, optimizer updates, and the engine itself while it runs backward closures).
#pragma once

namespace moekd {

struct GradMode {
    static bool& enabled() {
        thread_local bool on = true;
        return on;
    }
};

/// RAII: no op records autograd history while one of these is alive.
class NoGrad {
public:
    NoGrad() : prev_(GradMode::enabled()) { GradMode::enabled() = false; }
    ~NoGrad() { GradMode::enabled() = prev_; }
    NoGrad(const NoGrad&) = delete;
    NoGrad& operator=(const NoGrad&) = delete;

private:
    bool prev_;
};

}  // namespace moekd
