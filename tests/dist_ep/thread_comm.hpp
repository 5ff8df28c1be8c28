// thread_comm.hpp — a fake multi-rank Communicator for single-process tests: P ranks are P threads
// of one process sharing memory. Every collective is a rendezvous: each rank posts its buffers,
// waits for all (with the communicator's timeout, then a moekd::Error naming the collective),
// copies what it needs straight from the other ranks' buffers, and waits again so no buffer is
// released while another rank still reads it. Reductions add in rank order, so every rank gets the
// same bits. run_ranks(P, fn) runs fn(comm) on P threads and rethrows the first exception.
// Catch2 assertions are not thread-safe: compute inside fn, CHECK after run_ranks returns.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "moekd/dist/communicator.hpp"

namespace moekd::testing {

class ThreadWorld {
public:
    explicit ThreadWorld(int size) : size_(size), posts_(size) {}
    int size() const { return size_; }

    struct Post {
        const void* send = nullptr;
        void* recv = nullptr;
        const std::vector<int64_t>* send_bytes = nullptr;
        int64_t bytes = 0;
        int tag = 0;
    };
    Post& post(int r) { return posts_[r]; }

    /// All ranks arrive, or an Error after timeout_s (0: no limit) naming `what`.
    void arrive(const char* what, double timeout_s) {
        std::unique_lock<std::mutex> lk(m_);
        const uint64_t gen = gen_;
        if (++count_ == size_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
            return;
        }
        auto done = [&] { return gen_ != gen || broken_; };
        if (timeout_s > 0) {
            if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), done)) {
                broken_ = true;
                cv_.notify_all();
                throw Error(msg("ThreadComm: ", what, " timed out after ", timeout_s, " s waiting for the other ranks"));
            }
        } else {
            cv_.wait(lk, done);
        }
        MOEKD_CHECK(!broken_ || gen_ != gen, "ThreadComm: ", what, ": another rank gave up (timeout)");
    }

private:
    int size_;
    std::vector<Post> posts_;
    std::mutex m_;
    std::condition_variable cv_;
    int count_ = 0;
    uint64_t gen_ = 0;
    bool broken_ = false;
};

class ThreadComm final : public dist::Communicator {
public:
    ThreadComm(std::shared_ptr<ThreadWorld> w, int rank) : w_(std::move(w)), rank_(rank) { set_timeout(30); }
    int rank() const override { return rank_; }
    int size() const override { return w_->size(); }
    std::string backend() const override { return "threads"; }

    void all_reduce(float* d, int64_t n, dist::ReduceOp op) override { reduce(d, n, op); }
    void all_reduce(double* d, int64_t n, dist::ReduceOp op) override { reduce(d, n, op); }
    void all_reduce(int64_t* d, int64_t n, dist::ReduceOp op) override { reduce(d, n, op); }

    void broadcast(void* data, int64_t bytes, int root) override {
        MOEKD_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " out of range for world size ", size());
        auto& p = w_->post(rank_);
        p.recv = data;
        p.bytes = bytes;
        w_->arrive("broadcast", timeout());
        const auto& rp = w_->post(root);
        MOEKD_CHECK(rp.bytes == bytes, "broadcast: rank ", rank_, " expects ", bytes, " bytes, root sends ", rp.bytes);
        if (rank_ != root && bytes > 0) std::memcpy(data, rp.recv, static_cast<size_t>(bytes));
        w_->arrive("broadcast", timeout());
    }
    void all_gather(const void* send, void* recv, int64_t b) override {
        auto& p = w_->post(rank_);
        p.send = send;
        p.bytes = b;
        w_->arrive("all_gather", timeout());
        for (int r = 0; r < size(); ++r) {
            MOEKD_CHECK(w_->post(r).bytes == b, "all_gather: rank ", r, " gives ", w_->post(r).bytes, " bytes, rank ",
                        rank_, " expects ", b);
            if (b > 0) std::memcpy(static_cast<char*>(recv) + r * b, w_->post(r).send, static_cast<size_t>(b));
        }
        w_->arrive("all_gather", timeout());
    }
    void all_to_all_v(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                      const std::vector<int64_t>& recv_bytes) override {
        const int P = size();
        MOEKD_CHECK(static_cast<int>(send_bytes.size()) == P && static_cast<int>(recv_bytes.size()) == P,
                    "all_to_all_v: need ", P, " counts on each side");
        auto& p = w_->post(rank_);
        p.send = send;
        p.send_bytes = &send_bytes;
        w_->arrive("all_to_all_v", timeout());
        int64_t at = 0;
        for (int s = 0; s < P; ++s) {
            const auto& sp = w_->post(s);
            int64_t off = 0;
            for (int q = 0; q < rank_; ++q) off += (*sp.send_bytes)[q];
            const int64_t n = (*sp.send_bytes)[rank_];
            MOEKD_CHECK(n == recv_bytes[s], "all_to_all_v: rank ", s, " sends ", n, " bytes to rank ", rank_,
                        ", which expects ", recv_bytes[s]);
            if (n > 0) std::memcpy(static_cast<char*>(recv) + at, static_cast<const char*>(sp.send) + off, size_t(n));
            at += n;
        }
        w_->arrive("all_to_all_v", timeout());
    }
    void barrier() override { w_->arrive("barrier", timeout()); }

private:
    template <class T>
    void reduce(T* d, int64_t n, dist::ReduceOp op) {
        auto& p = w_->post(rank_);
        p.send = d;
        p.bytes = n;
        w_->arrive("all_reduce", timeout());
        std::vector<T> out(static_cast<size_t>(n));
        for (int r = 0; r < size(); ++r) {
            MOEKD_CHECK(w_->post(r).bytes == n, "all_reduce: rank ", r, " gives ", w_->post(r).bytes,
                        " elements, rank ", rank_, " ", n);
            const T* q = static_cast<const T*>(w_->post(r).send);
            for (int64_t i = 0; i < n; ++i)
                out[i] = r == 0 ? q[i] : op == dist::ReduceOp::Max ? std::max(out[i], q[i]) : out[i] + q[i];
        }
        if (op == dist::ReduceOp::Mean)
            for (auto& v : out) v = static_cast<T>(v / static_cast<T>(size()));
        w_->arrive("all_reduce", timeout());
        std::copy(out.begin(), out.end(), d);
    }
    std::shared_ptr<ThreadWorld> w_;
    int rank_;
};

/// Runs fn(comm) for ranks 0..P-1 on P threads; rethrows the first exception after all end.
inline void run_ranks(int P, const std::function<void(std::shared_ptr<dist::Communicator>)>& fn) {
    auto world = std::make_shared<ThreadWorld>(P);
    std::vector<std::exception_ptr> errs(P);
    std::vector<std::thread> th;
    for (int r = 0; r < P; ++r)
        th.emplace_back([&, r] {
            try {
                fn(std::make_shared<ThreadComm>(world, r));
            } catch (...) {
                errs[r] = std::current_exception();
            }
        });
    for (auto& t : th) t.join();
    for (auto& e : errs)
        if (e) std::rethrow_exception(e);
}

}  // namespace moekd::testing
