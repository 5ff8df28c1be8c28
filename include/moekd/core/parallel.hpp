// parallel.hpp — a tiny fork-join pool for the CPU ops' elementwise / per-row loops.
//
// GEMMs are threaded by OpenBLAS; everything else (softmax, layer norm, activations, Adam ...) ran
// on one core. parallel_for(n, grain, f) splits [0, n) into one contiguous chunk per thread (the
// caller runs chunk 0) when n >= 2 * grain. Workers sleep on a C++20 atomic wait between jobs, so
// an idle pool costs nothing. Threads: MOEKD_NUM_THREADS, else OPENBLAS_NUM_THREADS, else
// hardware_concurrency.
//
// Rules that keep it safe and deterministic: chunks are fixed by n and the thread count (never by
// timing), so loops whose chunks write disjoint outputs give the same bits as a serial loop; f
// must not throw (the ops using it only do arithmetic); a parallel_for inside a chunk, or one
// called while another thread holds the pool, runs inline on its caller.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moekd::detail {

#ifndef MOEKD_POOL_SPINS
#define MOEKD_POOL_SPINS 0
#endif
inline constexpr int kSpins = MOEKD_POOL_SPINS;
inline thread_local bool tl_in_parallel = false;  // inside a parallel_for chunk: no nesting

class ThreadPool {
public:
    static ThreadPool& instance() {
        static ThreadPool* p = new ThreadPool();  // never destroyed (workers are detached)
        return *p;
    }
    int threads() const { return int(workers_) + 1; }

    /// false (nothing run) when another thread is using the pool
    bool run(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
        std::unique_lock<std::mutex> lk(busy_, std::try_to_lock);
        if (!lk.owns_lock()) return false;
        const int64_t t = threads();
        job_ = &f;
        n_ = n;
        pending_.store(int(workers_), std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_release);
        gen_.notify_all();
        f(0, n / t);  // chunk 0 on the caller
        while (pending_.load(std::memory_order_acquire) != 0) sched_yield();
        return true;
    }

private:
    ThreadPool() {
        int t = 0;
        for (const char* v : {"MOEKD_NUM_THREADS", "OPENBLAS_NUM_THREADS"})
            if (!t && std::getenv(v)) t = std::atoi(std::getenv(v));
        if (t <= 0) t = int(std::thread::hardware_concurrency());
        workers_ = size_t(t > 1 ? t - 1 : 0);
        for (size_t i = 0; i < workers_; ++i) std::thread([this, i] { loop(int64_t(i) + 1); }).detach();
    }
    void loop(int64_t id) {
        uint64_t seen = 0;  // the generation at construction: a job posted before this thread ran is still seen
        for (;;) {
            uint64_t g;
            int spins = 0;
            while ((g = gen_.load(std::memory_order_acquire)) == seen) {
                if (++spins < kSpins) sched_yield();
                else gen_.wait(seen, std::memory_order_acquire);
            }
            seen = g;
            const int64_t t = threads(), n = n_;
            (*job_)(n * id / t, n * (id + 1) / t);
            pending_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }
    std::mutex busy_;
    size_t workers_ = 0;
    std::atomic<uint64_t> gen_{0};
    std::atomic<int> pending_{0};
    const std::function<void(int64_t, int64_t)>* job_ = nullptr;
    int64_t n_ = 0;
};

/// f(begin, end) over [0, n), split across the pool when n >= 2 * grain (else inline).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
    ThreadPool& p = ThreadPool::instance();
    if (tl_in_parallel || p.threads() == 1 || n < 2 * grain) {
        if (n > 0) f(int64_t(0), n);
        return;
    }
    const std::function<void(int64_t, int64_t)> fn = [&](int64_t b, int64_t e) {
        tl_in_parallel = true;
        if (e > b) f(b, e);
        tl_in_parallel = false;
    };
    if (!p.run(n, fn) && n > 0) f(int64_t(0), n);
}

}  // namespace moekd::detail
