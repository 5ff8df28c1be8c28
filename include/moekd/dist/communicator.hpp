// communicator.hpp — the collectives moekd's multi-process training is written against, and the
// single-process default that does nothing (so a trainer written for N ranks runs as it is on 1).
//
// Backends (each its own header, compiled only when its library is there):
//   SingleProcess  this file: rank 0 of 1; every collective is a copy or nothing
//   MpiComm        mpi.hpp: Open MPI, CPU processes started by `mpirun -np N`
//   NcclComm       nccl.hpp: one rank per GPU, buffers in device memory
// Buffers are raw pointers plus counts, as MPI and NCCL take them; the Tensor helpers at the
// bottom check shape and contiguity and name the tensor in their errors. Every rank must call
// every collective in the same order with matching counts (as in MPI); a collective that waits
// longer than timeout() ends the job with a message naming the collective, never hangs forever.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace moekd::dist {

enum class ReduceOp { Sum, Mean, Max };

inline const char* reduce_op_name(ReduceOp op) {
    switch (op) {
        case ReduceOp::Sum: return "sum";
        case ReduceOp::Mean: return "mean";
        case ReduceOp::Max: return "max";
    }
    return "?";
}

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    /// "single", "mpi" or "nccl".
    virtual std::string backend() const = 0;

    /// In place over n elements, the same n on every rank.
    virtual void all_reduce(float* data, int64_t n, ReduceOp op) = 0;
    virtual void all_reduce(double* data, int64_t n, ReduceOp op) = 0;
    virtual void all_reduce(int64_t* data, int64_t n, ReduceOp op) = 0;
    /// root's `bytes` bytes copied to every rank.
    virtual void broadcast(void* data, int64_t bytes, int root) = 0;
    /// Every rank gives bytes_per_rank bytes; recv (size() * bytes_per_rank) holds rank r's at
    /// offset r * bytes_per_rank.
    virtual void all_gather(const void* send, void* recv, int64_t bytes_per_rank) = 0;
    /// send holds, packed in rank order, send_bytes[r] bytes for rank r; recv gets, packed in rank
    /// order, recv_bytes[r] bytes from rank r. Both vectors have size() entries.
    virtual void all_to_all_v(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                              const std::vector<int64_t>& recv_bytes) = 0;
    virtual void barrier() = 0;

    /// Seconds a collective may wait for the other ranks before the job is ended (0: no limit).
    void set_timeout(double seconds) { timeout_s_ = seconds; }
    double timeout() const { return timeout_s_; }

    /// Ends the whole job with exit status `code`: every rank, not only this one, so the others
    /// do not wait for a rank that failed (MPI_Abort for MPI). The default ends this process.
    [[noreturn]] virtual void abort(int code) {
        std::fflush(nullptr);
        std::_Exit(code);
    }

protected:
    double timeout_s_ = 300.0;
};

/// Rank 0 of 1.
class SingleProcess final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::string backend() const override { return "single"; }
    void all_reduce(float*, int64_t, ReduceOp) override {}
    void all_reduce(double*, int64_t, ReduceOp) override {}
    void all_reduce(int64_t*, int64_t, ReduceOp) override {}
    void broadcast(void*, int64_t, int root) override {
        MOEKD_CHECK(root == 0, "broadcast: root ", root, " out of range for world size 1");
    }
    void all_gather(const void* send, void* recv, int64_t bytes_per_rank) override {
        if (bytes_per_rank > 0 && send != recv) std::memmove(recv, send, static_cast<size_t>(bytes_per_rank));
    }
    void all_to_all_v(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                      const std::vector<int64_t>& recv_bytes) override {
        MOEKD_CHECK(send_bytes.size() == 1 && recv_bytes.size() == 1 && send_bytes[0] == recv_bytes[0],
                    "all_to_all_v: world size 1 needs one count on each side and equal counts, got ",
                    send_bytes.size(), " send and ", recv_bytes.size(), " recv counts");
        if (send_bytes[0] > 0 && send != recv) std::memmove(recv, send, static_cast<size_t>(send_bytes[0]));
    }
    void barrier() override {}
};

// ---- typed and Tensor helpers ------------------------------------------------------------------
/// all_to_all_v in elements of T: send_counts[r] elements to rank r, recv_counts[r] from rank r.
template <class T>
void all_to_all_v(Communicator& comm, const T* send, const std::vector<int64_t>& send_counts, T* recv,
                  const std::vector<int64_t>& recv_counts) {
    std::vector<int64_t> sb(send_counts.size()), rb(recv_counts.size());
    for (size_t i = 0; i < sb.size(); ++i) sb[i] = send_counts[i] * static_cast<int64_t>(sizeof(T));
    for (size_t i = 0; i < rb.size(); ++i) rb[i] = recv_counts[i] * static_cast<int64_t>(sizeof(T));
    comm.all_to_all_v(send, sb, recv, rb);
}

/// In place on a contiguous CPU tensor. `name` names it in errors.
template <class T>
void all_reduce(Communicator& comm, Tensor<T>& t, ReduceOp op, const std::string& name = "tensor") {
    MOEKD_CHECK(t.defined() && t.is_contiguous(), "all_reduce: ", name, " ",
                t.defined() ? t.shape() : Shape{}, " must be a defined contiguous tensor");
    comm.all_reduce(t.data(), t.numel(), op);
}

template <class T>
void broadcast(Communicator& comm, Tensor<T>& t, int root, const std::string& name = "tensor") {
    MOEKD_CHECK(t.defined() && t.is_contiguous(), "broadcast: ", name, " ", t.defined() ? t.shape() : Shape{},
                " must be a defined contiguous tensor");
    comm.broadcast(t.data(), t.numel() * static_cast<int64_t>(sizeof(T)), root);
}

}  // namespace moekd::dist
