// mpi.hpp — MpiComm, the Open MPI backend of dist::Communicator: CPU processes started by
// `mpirun -np N`, buffers in host memory.
//
// Every collective is the non-blocking MPI call (MPI_Iallreduce, MPI_Ibcast, MPI_Iallgather,
// MPI_Ialltoallv, MPI_Ibarrier) polled with MPI_Test until it completes or timeout() seconds
// pass. On a timeout the rank prints
//   moekd rank R/N: <collective> timed out after S s (a rank died or ranks disagree on ...)
// to stderr and calls MPI_Abort(comm, 124), which ends every rank of the job: a rank that hangs,
// dies or calls the collectives in another order ends the job with a message, never a hang.
//
// MPI counts are `int`: all_reduce and broadcast split larger buffers into chunks; all_gather and
// all_to_all_v reject a count or displacement above INT_MAX with a moekd::Error.
// Compiled only when the build has MPI (MOEKD_HAVE_MPI, set by the moekd::mpi CMake target);
// otherwise this header declares nothing (so every public header still parses everywhere).
#pragma once

#if defined(MOEKD_HAVE_MPI) && MOEKD_HAVE_MPI

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "communicator.hpp"

namespace moekd::dist {

class MpiComm final : public Communicator {
public:
    /// Wraps `comm` (MPI must be initialised; dist::init does it). Not owning: MPI_COMM_WORLD is
    /// never freed, other communicators stay the caller's.
    explicit MpiComm(MPI_Comm comm = MPI_COMM_WORLD, double timeout_s = 300.0) : comm_(comm) {
        int inited = 0;
        MPI_Initialized(&inited);
        MOEKD_CHECK(inited, "MpiComm: MPI is not initialised. HINT: call moekd::dist::init(argc, argv) first");
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
        // Errors come back as codes, so that we can say which collective failed.
        MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
        timeout_s_ = timeout_s;
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend() const override { return "mpi"; }
    MPI_Comm handle() const { return comm_; }
    /// How many collectives this communicator has run (named in timeout messages: the ranks that
    /// disagree on the order show different numbers).
    int64_t collectives_run() const { return seq_; }

    void all_reduce(float* data, int64_t n, ReduceOp op) override { reduce(data, n, op, MPI_FLOAT, "float"); }
    void all_reduce(double* data, int64_t n, ReduceOp op) override { reduce(data, n, op, MPI_DOUBLE, "double"); }
    void all_reduce(int64_t* data, int64_t n, ReduceOp op) override { reduce(data, n, op, MPI_INT64_T, "int64"); }

    void broadcast(void* data, int64_t bytes, int root) override {
        MOEKD_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " out of range for world size ", size_);
        MOEKD_CHECK(bytes >= 0, "broadcast: byte count ", bytes, " < 0");
        char* p = static_cast<char*>(data);
        do {  // at least one call, so that 0-byte broadcasts still line up across ranks
            const int c = static_cast<int>(std::min<int64_t>(bytes, INT_MAX));
            MPI_Request req;
            check(MPI_Ibcast(p, c, MPI_BYTE, root, comm_, &req), "broadcast");
            wait(req, "broadcast(" + std::to_string(bytes) + " bytes, root " + std::to_string(root) + ")");
            p += c;
            bytes -= c;
        } while (bytes > 0);
    }

    void all_gather(const void* send, void* recv, int64_t bytes_per_rank) override {
        MOEKD_CHECK(bytes_per_rank >= 0 && bytes_per_rank <= INT_MAX, "all_gather: ", bytes_per_rank,
                    " bytes per rank is outside MPI's int count range [0, ", INT_MAX, "]");
        char* r = static_cast<char*>(recv);
        const char* s = static_cast<const char*>(send);
        const void* sendbuf = send;
        std::vector<char> tmp;
        if (s == r + rank_ * bytes_per_rank) {
            sendbuf = MPI_IN_PLACE;
        } else if (s < r + size_ * bytes_per_rank && r < s + bytes_per_rank) {  // overlaps recv: copy first
            tmp.assign(s, s + bytes_per_rank);
            sendbuf = tmp.data();
        }
        const int c = static_cast<int>(bytes_per_rank);
        MPI_Request req;
        check(MPI_Iallgather(sendbuf, c, MPI_BYTE, recv, c, MPI_BYTE, comm_, &req), "all_gather");
        wait(req, "all_gather(" + std::to_string(bytes_per_rank) + " bytes per rank)");
    }

    void all_to_all_v(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                      const std::vector<int64_t>& recv_bytes) override {
        MOEKD_CHECK(int64_t(send_bytes.size()) == size_ && int64_t(recv_bytes.size()) == size_, "all_to_all_v: ",
                    send_bytes.size(), " send and ", recv_bytes.size(), " recv counts for world size ", size_,
                    " (one count per rank on each side)");
        std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
        to_int_counts(send_bytes, sc, sd, "send");
        to_int_counts(recv_bytes, rc, rd, "recv");
        MPI_Request req;
        check(MPI_Ialltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_, &req),
              "all_to_all_v");
        int64_t total = 0;
        for (int64_t b : send_bytes) total += b;
        wait(req, "all_to_all_v(" + std::to_string(total) + " bytes sent)");
    }

    void barrier() override {
        MPI_Request req;
        check(MPI_Ibarrier(comm_, &req), "barrier");
        wait(req, "barrier");
    }

    [[noreturn]] void abort(int code) override {
        std::fflush(nullptr);
        MPI_Abort(comm_, code);
        std::_Exit(code);  // MPI_Abort does not return; keeps [[noreturn]] honest if it did
    }

private:
    template <class T>
    void reduce(T* data, int64_t n, ReduceOp op, MPI_Datatype type, const char* tname) {
        MOEKD_CHECK(n >= 0, "all_reduce: element count ", n, " < 0");
        const MPI_Op mop = op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
        const std::string what = std::string("all_reduce(") + tname + " x " + std::to_string(n) + ", " +
                                 reduce_op_name(op) + ")";
        int64_t done = 0;
        do {
            const int c = static_cast<int>(std::min<int64_t>(n - done, INT_MAX));
            MPI_Request req;
            check(MPI_Iallreduce(MPI_IN_PLACE, data + done, c, type, mop, comm_, &req), "all_reduce");
            wait(req, what);
            done += c;
        } while (done < n);
        if (op == ReduceOp::Mean) {
            if constexpr (std::is_integral_v<T>) {
                for (int64_t i = 0; i < n; ++i) data[i] /= size_;  // truncates, as integer division does
            } else {
                const T inv = T(1) / T(size_);
                for (int64_t i = 0; i < n; ++i) data[i] *= inv;
            }
        }
    }

    void to_int_counts(const std::vector<int64_t>& bytes, std::vector<int>& c, std::vector<int>& d, const char* side) {
        int64_t off = 0;
        for (int r = 0; r < size_; ++r) {
            MOEKD_CHECK(bytes[r] >= 0 && bytes[r] <= INT_MAX && off <= INT_MAX, "all_to_all_v: ", side, " count ",
                        bytes[r], " bytes for rank ", r, " at displacement ", off,
                        " is outside MPI's int range [0, ", INT_MAX, "]. HINT: exchange in several smaller calls");
            c[r] = static_cast<int>(bytes[r]);
            d[r] = static_cast<int>(off);
            off += bytes[r];
        }
    }

    void check(int err, const char* what) {
        if (err == MPI_SUCCESS) return;
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(err, msg, &len);
        throw Error("moekd rank " + std::to_string(rank_) + "/" + std::to_string(size_) + ": " + what +
                    " failed: " + std::string(msg, len));
    }

    /// Polls `req` until it completes or the timeout passes (then ends the job).
    void wait(MPI_Request& req, const std::string& what) {
        ++seq_;
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t spins = 0;; ++spins) {
            int done = 0;
            const int err = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
            if (err != MPI_SUCCESS) check(err, what.c_str());
            if (done) return;
            // Spin briefly (small collectives finish in microseconds), then yield the core: on an
            // oversubscribed machine the rank we wait for may need it.
            if (spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(spins > 20000 ? 200 : 20));
            if (timeout_s_ > 0 && (spins & 63) == 0) {
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                if (s > timeout_s_) {
                    std::fprintf(stderr,
                                 "moekd rank %d/%d: %s timed out after %g s (a rank died or ranks disagree on the "
                                 "collective order/world size); collective #%lld on this rank. Ending the job.\n",
                                 rank_, size_, what.c_str(), timeout_s_, static_cast<long long>(seq_));
                    std::fflush(stderr);
                    MPI_Abort(comm_, 124);
                    std::_Exit(124);
                }
            }
        }
    }

    MPI_Comm comm_;
    int rank_ = 0, size_ = 1;
    int64_t seq_ = 0;
};

}  // namespace moekd::dist

#endif  // MOEKD_HAVE_MPI
