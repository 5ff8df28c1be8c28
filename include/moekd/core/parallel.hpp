// parallel.hpp — moekd's one CPU thread pool, and the two ways the CPU code uses it.
//
// GEMMs are threaded by OpenBLAS; everything else (softmax, layer norm, activations, Adam, the
// KD losses' rows, the MoE layer's routing and expert tasks) runs on this pool. Workers sleep on a
// C++20 atomic wait between jobs, so an idle pool costs nothing.
//
//   parallel_for(n, grain, f)   f(begin, end): [0, n) in one contiguous chunk per thread (the
//                               caller runs chunk 0) when n >= 2 * grain, else inline. For loops
//                               whose chunks write disjoint outputs.
//   run_tasks(ntasks, blas, f)  f(task, worker) for every task, handed out in order as workers
//                               free up (a worker slowed by other load on its core takes fewer):
//                               for uneven tasks (an expert's rows). Exceptions are rethrown.
//   parallel_chunks(n, c, f)    f(lo, hi) over [0, n) in fixed chunks of c items, as tasks: the
//                               chunks (and so any per-chunk partial sum) depend on c only.
//
// Threads: num_threads() = $MOEKD_NUM_THREADS, else $OPENBLAS_NUM_THREADS, else the hardware's;
// set_num_threads(n) changes it at run time (at most the pool's size, fixed at its start; tasks
// that size their work by num_threads() still see n).
//
// Rules that keep it safe and deterministic: chunks and tasks are fixed by the sizes and the
// thread setting (never by timing), and no result depends on which worker ran what; f of
// parallel_for must not throw (the ops using it only do arithmetic); a parallel region inside a
// chunk or task, or one started while another thread holds the pool, runs inline on its caller.
// A job's chunks and tasks run in their caller's precision (core/precision.hpp).
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "error.hpp"
#include "precision.hpp"

#if defined(MOEKD_BLAS)
// OpenBLAS's own thread control (declared as in its cblas.h), to run it single-threaded inside
// tasks that are themselves the parallelism.
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);
#endif

namespace moekd::detail {

/// The default thread count: $MOEKD_NUM_THREADS, else $OPENBLAS_NUM_THREADS, else the hardware's.
inline int default_threads() {
    int t = 0;
    for (const char* v : {"MOEKD_NUM_THREADS", "OPENBLAS_NUM_THREADS"})
        if (!t && std::getenv(v)) t = std::atoi(std::getenv(v));
    if (t <= 0) t = int(std::thread::hardware_concurrency());
    return t > 0 ? t : 1;
}
inline int& thread_setting() {
    static int n = default_threads();
    return n;
}

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
    /// The threads a job runs on: the setting, at most the pool's size.
    int threads() const { return std::clamp(thread_setting(), 1, int(workers_) + 1); }

    /// false (nothing run) when another thread is using the pool
    bool run(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
        std::unique_lock<std::mutex> lk(busy_, std::try_to_lock);
        if (!lk.owns_lock()) return false;
        const int64_t t = threads();
        job_ = &f;
        n_ = n;
        t_ = t;
        pending_.store(int(workers_), std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_release);
        gen_.notify_all();
        f(0, n / t);  // chunk 0 on the caller
        while (pending_.load(std::memory_order_acquire) != 0) sched_yield();
        return true;
    }

private:
    ThreadPool() {
        const int t = default_threads();
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
            const int64_t t = t_, n = n_;
            if (id < t) (*job_)(n * id / t, n * (id + 1) / t);  // threads past the setting idle
            pending_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }
    std::mutex busy_;
    size_t workers_ = 0;
    std::atomic<uint64_t> gen_{0};
    std::atomic<int> pending_{0};
    const std::function<void(int64_t, int64_t)>* job_ = nullptr;
    int64_t n_ = 0, t_ = 1;
};

/// f(begin, end) over [0, n), split across the pool when n >= 2 * grain (else inline).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
    ThreadPool& p = ThreadPool::instance();
    if (tl_in_parallel || p.threads() == 1 || n < 2 * grain) {
        if (n > 0) f(int64_t(0), n);
        return;
    }
    const PrecisionState prec = tl_precision;  // the workers compute as their caller does
    const std::function<void(int64_t, int64_t)> fn = [&](int64_t b, int64_t e) {
        PrecisionGuard pg(prec);
        tl_in_parallel = true;
        if (e > b) f(b, e);
        tl_in_parallel = false;
    };
    if (!p.run(n, fn) && n > 0) f(int64_t(0), n);
}

/// Runs fn(task, worker) for task = 0 .. ntasks-1 on up to num_threads() workers of the pool, the
/// calling thread being worker 0 (worker < num_threads() always). Tasks are handed out in order as
/// workers free up. Which worker runs a task never changes a result: tasks write disjoint
/// outputs, and any sum over tasks is done afterwards in task order. With `blas_inside`, OpenBLAS
/// runs single-threaded while the tasks run (they are the parallelism); its thread count is
/// restored after. The first exception a task throws is rethrown here (later tasks are skipped).
template <class F>
void run_tasks(int64_t ntasks, bool blas_inside, F&& fn) {
    const int64_t workers = std::min<int64_t>(ThreadPool::instance().threads(), ntasks);
    if (workers <= 1 || tl_in_parallel) {
        for (int64_t t = 0; t < ntasks; ++t) fn(t, 0);
        return;
    }
#if defined(MOEKD_BLAS)
    const int blas_threads = blas_inside ? openblas_get_num_threads() : 1;
    if (blas_inside && blas_threads != 1) openblas_set_num_threads(1);
#else
    (void)blas_inside;
#endif
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex m;
    const PrecisionState prec = tl_precision;  // the workers compute as their caller does
    const std::function<void(int64_t, int64_t)> job = [&](int64_t w0, int64_t w1) {
        PrecisionGuard pg(prec);
        tl_in_parallel = true;
        for (int64_t w = w0; w < w1; ++w)
            for (int64_t t; (t = next.fetch_add(1)) < ntasks;) {
                if (failed.load()) continue;
                try {
                    fn(t, static_cast<int>(w));
                } catch (...) {
                    std::lock_guard<std::mutex> lk(m);
                    if (!error) error = std::current_exception();
                    failed = true;
                }
            }
        tl_in_parallel = false;
    };
    if (!ThreadPool::instance().run(workers, job)) job(0, 1);  // pool busy: the caller does it all
#if defined(MOEKD_BLAS)
    if (blas_inside && blas_threads != 1) openblas_set_num_threads(blas_threads);
#endif
    if (error) std::rethrow_exception(error);
}

/// fn(lo, hi) over [0, n) in chunks of `chunk` items (the last one shorter), run as tasks.
template <class F>
void parallel_chunks(int64_t n, int64_t chunk, F&& fn, bool blas_inside = false) {
    chunk = std::max<int64_t>(chunk, 1);
    run_tasks((n + chunk - 1) / chunk, blas_inside,
              [&](int64_t t, int) { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
}

}  // namespace moekd::detail

namespace moekd {
/// Threads moekd's CPU code uses (the pool, the MoE layer's tasks, the KD losses' rows).
inline int num_threads() { return detail::thread_setting(); }
/// Changes num_threads() (at most the pool's size runs at once; work sized by num_threads() sees n).
inline void set_num_threads(int n) {
    MOEKD_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got ", n);
    detail::thread_setting() = n;
}
}  // namespace moekd
