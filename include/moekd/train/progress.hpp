// progress.hpp — the one-line progress display of a training loop on a terminal: redrawn in
// place with '\r' on stderr, only where stderr is a terminal and only on the rank that reports
// (so logs and pipes stay clean), erased or ended with a newline when the loop is done.
//
//   train::Progress p("teacher", rank == 0);
//   p.bar(epoch, epochs, s + 1, steps_per_epoch, msg("loss ", loss));    // [#####.....]
//   p.steps(step, max_steps, seconds, first_step, msg("ce ", ce));      // step 12/800 ... ETA 35s
//   p.clear();                                                           // or p.newline()
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

namespace moekd::train {

class Progress {
public:
    /// `show`: this process reports (rank 0); the line is drawn only if stderr is a terminal too
    /// (force: draw it anyway, e.g. when asked for explicitly).
    Progress(std::string name, bool show, bool force = false)
        : name_(std::move(name)), on_(show && (force || isatty(fileno(stderr)))) {}
    bool enabled() const { return on_; }

    /// "  <name> epoch e/E [####......] <tail>": done of total steps of this epoch.
    void bar(int epoch, int epochs, int64_t done, int64_t total, const std::string& tail) {
        if (!on_) return;
        const int w = 30, d = int(int64_t(w) * std::clamp<int64_t>(done, 0, total) / std::max<int64_t>(total, 1));
        draw(std::string("  ") + pad(name_, 10) + " epoch " + std::to_string(epoch) + "/" + std::to_string(epochs) +
             " [" + std::string(size_t(d), '#') + std::string(size_t(w - d), '.') + "] " + tail);
    }
    /// "  [<name>] step s/N  <tail>  ETA <t>s": the remaining time from the rate since first_step.
    void steps(int64_t step, int64_t total, double seconds, int64_t first_step, const std::string& tail) {
        if (!on_) return;
        const double rate = double(step - first_step) / std::max(seconds, 1e-9);
        char eta[32];
        std::snprintf(eta, sizeof eta, "ETA %.0fs", double(total - step) / std::max(rate, 1e-9));
        draw("  [" + name_ + "] step " + std::to_string(step) + "/" + std::to_string(total) + "  " + tail + "  " + eta);
    }
    /// Erases the line (the loop prints its own summary after it).
    void clear() {
        if (on_ && width_ > 0) std::fprintf(stderr, "\r%*s\r", int(width_), "");
        width_ = 0;
    }
    /// Leaves the last line standing and moves to the next.
    void newline() {
        if (on_ && width_ > 0) std::fprintf(stderr, "\n");
        width_ = 0;
    }

private:
    static std::string pad(const std::string& s, size_t n) { return s.size() >= n ? s : s + std::string(n - s.size(), ' '); }
    void draw(const std::string& line) {
        // pad over what the previous, longer line left on the terminal
        std::fprintf(stderr, "\r%s%*s", line.c_str(), int(width_ > line.size() ? width_ - line.size() : 0), "");
        width_ = std::max(width_, line.size());
    }
    std::string name_;
    bool on_;
    size_t width_ = 0;
};

}  // namespace moekd::train
