// nccl.hpp — NcclComm, the NCCL backend of dist::Communicator: one rank per GPU, every buffer a
// device pointer (cudaMalloc'd or managed memory on this rank's GPU).
//
// The ranks meet through an ncclUniqueId that rank 0 makes and the others receive, either
//   NcclComm::from_mpi(mpi)                         broadcast over an MpiComm (mpirun jobs), or
//   NcclComm::from_file(path, rank, nranks)         a file on a shared filesystem (rank 0 writes it
//                                                   atomically, the others poll for it)
// The communicator is created non-blocking (ncclConfig_t::blocking = 0) and every collective runs
// on the communicator's stream; the host polls cudaStreamQuery / ncclCommGetAsyncError until the
// work is done or timeout() passes, then prints "moekd rank R/N: <collective> timed out ..." and
// aborts the communicator and the process (exit 124), so that mpirun / the scheduler ends the job.
// Collectives return when their result is in place (synchronous for the caller, like MpiComm).
//
// Compiled only with CUDA and NCCL (MOEKD_HAVE_NCCL, set by moekd::cuda when libnccl is found);
// tests/dist/nccl_comm_test.cpp is the translation unit that compiles it in the CUDA build.
// Only compiled here, never run: this machine has no GPU (see docs/distributed.md).
#pragma once

#if defined(MOEKD_HAVE_NCCL) && MOEKD_HAVE_NCCL

#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../io/atomic_file.hpp"
#include "communicator.hpp"

namespace moekd::dist {

class NcclComm final : public Communicator {
public:
    /// Joins the communicator `id` as `rank` of `nranks` on GPU `device` (-1: rank % device count).
    /// Collective over the nranks processes: each must call it with the same id and nranks.
    NcclComm(const ncclUniqueId& id, int rank, int nranks, int device = -1, double timeout_s = 300.0)
        : rank_(rank), size_(nranks) {
        MOEKD_CHECK(nranks >= 1 && rank >= 0 && rank < nranks, "NcclComm: rank ", rank, " of ", nranks,
                    " (need 0 <= rank < nranks)");
        timeout_s_ = timeout_s;
        int devices = 0;
        cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
        MOEKD_CHECK(devices > 0, "NcclComm: no CUDA device on this host");
        device_ = device >= 0 ? device : rank % devices;
        MOEKD_CHECK(device_ < devices, "NcclComm: device ", device_, " but this host has ", devices, " GPU(s)");
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        cuda_check(cudaMalloc(&scratch_, 16), "cudaMalloc (barrier scratch)");
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;  // init and collectives return at once; wait() polls with the timeout
        nccl_check(ncclCommInitRankConfig(&comm_, nranks, id, rank, &config), "ncclCommInitRankConfig");
        wait_comm("ncclCommInitRank (" + std::to_string(nranks) + " ranks)");
    }
    NcclComm(const NcclComm&) = delete;
    NcclComm& operator=(const NcclComm&) = delete;
    ~NcclComm() override {
        if (comm_) ncclCommDestroy(comm_);
        if (scratch_) cudaFree(scratch_);
        if (stream_) cudaStreamDestroy(stream_);
    }

    /// A fresh id (rank 0 makes it; the others must receive it).
    static ncclUniqueId make_id() {
        ncclUniqueId id;
        nccl_check_static(ncclGetUniqueId(&id), "ncclGetUniqueId");
        return id;
    }

    /// Rank r of `mpi` (an MpiComm, or any communicator of host buffers) becomes NCCL rank r;
    /// the id travels by its broadcast. Collective over mpi's ranks.
    static std::shared_ptr<NcclComm> from_mpi(Communicator& mpi, int device = -1) {
        ncclUniqueId id{};
        if (mpi.rank() == 0) id = make_id();
        mpi.broadcast(&id, sizeof(id), 0);
        return std::make_shared<NcclComm>(id, mpi.rank(), mpi.size(), device, mpi.timeout());
    }

    /// The id through a file every rank can read (a shared filesystem): rank 0 writes `path`
    /// (write + rename, so no rank reads half a file); the others wait up to timeout_s for it.
    /// Remove the file before starting a new job with the same path.
    static std::shared_ptr<NcclComm> from_file(const std::string& path, int rank, int nranks, int device = -1,
                                               double timeout_s = 300.0) {
        ncclUniqueId id{};
        if (rank == 0) {
            id = make_id();
            // temp + fsync + rename, every write checked: no rank reads half an id
            io::write_file_atomic(path, id.internal, sizeof(id.internal));
        } else {
            const auto t0 = std::chrono::steady_clock::now();
            for (;;) {
                std::ifstream f(path, std::ios::binary);
                if (f && f.read(id.internal, sizeof(id.internal)) && f.gcount() == sizeof(id.internal)) break;
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                MOEKD_CHECK(timeout_s <= 0 || s < timeout_s, "NcclComm::from_file: rank ", rank, " of ", nranks,
                            " found no complete id in '", path, "' after ", timeout_s,
                            " s. HINT: is rank 0 running, and is the path on a filesystem every rank sees?");
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
        return std::make_shared<NcclComm>(id, rank, nranks, device, timeout_s);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend() const override { return "nccl"; }
    int device() const { return device_; }
    cudaStream_t stream() const { return stream_; }
    ncclComm_t handle() const { return comm_; }

    void all_reduce(float* data, int64_t n, ReduceOp op) override { reduce(data, n, op, ncclFloat32, "float"); }
    void all_reduce(double* data, int64_t n, ReduceOp op) override { reduce(data, n, op, ncclFloat64, "double"); }
    void all_reduce(int64_t* data, int64_t n, ReduceOp op) override { reduce(data, n, op, ncclInt64, "int64"); }

    void broadcast(void* data, int64_t bytes, int root) override {
        MOEKD_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " out of range for world size ", size_);
        MOEKD_CHECK(bytes >= 0, "broadcast: byte count ", bytes, " < 0");
        check_device(data, bytes, "broadcast", "data");
        nccl_check(ncclBroadcast(data, data, size_t(bytes), ncclChar, root, comm_, stream_), "broadcast");
        wait("broadcast(" + std::to_string(bytes) + " bytes, root " + std::to_string(root) + ")");
    }

    void all_gather(const void* send, void* recv, int64_t bytes_per_rank) override {
        MOEKD_CHECK(bytes_per_rank >= 0, "all_gather: ", bytes_per_rank, " bytes per rank < 0");
        check_device(send, bytes_per_rank, "all_gather", "send");
        check_device(recv, bytes_per_rank * size_, "all_gather", "recv");
        nccl_check(ncclAllGather(send, recv, size_t(bytes_per_rank), ncclChar, comm_, stream_), "all_gather");
        wait("all_gather(" + std::to_string(bytes_per_rank) + " bytes per rank)");
    }

    /// Grouped ncclSend / ncclRecv, one pair per peer (NCCL has no all-to-all-v of its own).
    void all_to_all_v(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                      const std::vector<int64_t>& recv_bytes) override {
        MOEKD_CHECK(int64_t(send_bytes.size()) == size_ && int64_t(recv_bytes.size()) == size_, "all_to_all_v: ",
                    send_bytes.size(), " send and ", recv_bytes.size(), " recv counts for world size ", size_,
                    " (one count per rank on each side)");
        int64_t st = 0, rt = 0;
        for (int r = 0; r < size_; ++r) {
            MOEKD_CHECK(send_bytes[r] >= 0 && recv_bytes[r] >= 0, "all_to_all_v: negative count for rank ", r);
            st += send_bytes[r];
            rt += recv_bytes[r];
        }
        check_device(send, st, "all_to_all_v", "send");
        check_device(recv, rt, "all_to_all_v", "recv");
        const char* s = static_cast<const char*>(send);
        char* d = static_cast<char*>(recv);
        nccl_check(ncclGroupStart(), "all_to_all_v (group start)");
        for (int r = 0; r < size_; ++r) {
            if (send_bytes[r] > 0) nccl_check(ncclSend(s, size_t(send_bytes[r]), ncclChar, r, comm_, stream_), "all_to_all_v (send)");
            if (recv_bytes[r] > 0) nccl_check(ncclRecv(d, size_t(recv_bytes[r]), ncclChar, r, comm_, stream_), "all_to_all_v (recv)");
            s += send_bytes[r];
            d += recv_bytes[r];
        }
        nccl_check(ncclGroupEnd(), "all_to_all_v (group end)");
        wait("all_to_all_v(" + std::to_string(st) + " bytes sent)");
    }

    /// An all-reduce of one int on device scratch memory.
    void barrier() override {
        nccl_check(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_), "barrier");
        wait("barrier");
    }

    [[noreturn]] void abort(int code) override {
        std::fflush(nullptr);
        if (comm_) ncclCommAbort(comm_);
        std::_Exit(code);
    }

private:
    template <class T>
    void reduce(T* data, int64_t n, ReduceOp op, ncclDataType_t type, const char* tname) {
        MOEKD_CHECK(n >= 0, "all_reduce: element count ", n, " < 0");
        check_device(data, n * int64_t(sizeof(T)), "all_reduce", "data");
        ncclRedOp_t nop = ncclSum;
        if (op == ReduceOp::Max) nop = ncclMax;
        if (op == ReduceOp::Mean) nop = ncclAvg;  // NCCL >= 2.10; integer average truncates, as MpiComm's
        nccl_check(ncclAllReduce(data, data, size_t(n), type, nop, comm_, stream_), "all_reduce");
        wait(std::string("all_reduce(") + tname + " x " + std::to_string(n) + ", " + reduce_op_name(op) + ")");
    }

    /// Buffers must be device (or managed) memory: a host pointer is a moekd::Error, not a crash.
    void check_device(const void* p, int64_t bytes, const char* op, const char* which) const {
        if (bytes <= 0) return;
        cudaPointerAttributes a{};
        const cudaError_t e = cudaPointerGetAttributes(&a, p);
        MOEKD_CHECK(e == cudaSuccess && (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged), op,
                    ": the ", which, " buffer (", bytes, " bytes) is not device memory; NcclComm takes device "
                    "pointers. HINT: use MpiComm for host buffers");
    }

    void cuda_check(cudaError_t e, const char* what) const {
        MOEKD_CHECK(e == cudaSuccess, "NcclComm rank ", rank_, "/", size_, ": ", what, ": ", cudaGetErrorString(e));
    }
    void nccl_check(ncclResult_t r, const char* what) const {
        MOEKD_CHECK(r == ncclSuccess || r == ncclInProgress, "moekd rank ", rank_, "/", size_, ": ", what,
                    " failed: ", ncclGetErrorString(r), " (", ncclGetLastError(comm_), ")");
    }
    static void nccl_check_static(ncclResult_t r, const char* what) {
        MOEKD_CHECK(r == ncclSuccess, "NcclComm: ", what, " failed: ", ncclGetErrorString(r));
    }

    [[noreturn]] void timed_out(const std::string& what) {
        std::fprintf(stderr,
                     "moekd rank %d/%d: %s timed out after %g s (a rank died or ranks disagree on the collective "
                     "order/world size). Ending the job.\n",
                     rank_, size_, what.c_str(), timeout_s_);
        abort(124);
    }
    double since(std::chrono::steady_clock::time_point t0) const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

    /// Until the communicator has left ncclInProgress (non-blocking init).
    void wait_comm(const std::string& what) {
        const auto t0 = std::chrono::steady_clock::now();
        for (;;) {
            ncclResult_t st = ncclSuccess;
            nccl_check(ncclCommGetAsyncError(comm_, &st), "ncclCommGetAsyncError");
            if (st == ncclSuccess) return;
            nccl_check(st, what.c_str());
            if (timeout_s_ > 0 && since(t0) > timeout_s_) timed_out(what);
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }

    /// Until the stream has run the collective (or the timeout passes, or NCCL reports an error).
    void wait(const std::string& what) {
        wait_comm(what);  // the enqueue itself may still be in progress in non-blocking mode
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t spins = 0;; ++spins) {
            const cudaError_t e = cudaStreamQuery(stream_);
            if (e == cudaSuccess) return;
            if (e != cudaErrorNotReady) cuda_check(e, what.c_str());
            ncclResult_t st = ncclSuccess;
            ncclCommGetAsyncError(comm_, &st);
            if (st != ncclSuccess && st != ncclInProgress) nccl_check(st, what.c_str());
            if (timeout_s_ > 0 && since(t0) > timeout_s_) timed_out(what);
            if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    }

    ncclComm_t comm_ = nullptr;
    cudaStream_t stream_ = nullptr;
    void* scratch_ = nullptr;
    int rank_ = 0, size_ = 1, device_ = 0;
};

}  // namespace moekd::dist

#endif  // MOEKD_HAVE_NCCL
