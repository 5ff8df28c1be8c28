// nccl_comm_test.cpp — NcclComm on real GPUs: every collective on device buffers against values
// each rank computes alone, and the host-pointer check. Built in the CUDA build (this file is the
// translation unit that compiles include/moekd/dist/nccl.hpp with NCCL); run as one process it
// uses a 1-rank communicator, under `mpirun -np N` (one GPU per rank) the id travels over MPI.
// Exit 77 (skipped) without a GPU or without NCCL in the build.
#include <cstdio>
#include <numeric>
#include <vector>

#include <moekd/dist/init.hpp>
#include <moekd/dist/nccl.hpp>

#if defined(MOEKD_HAVE_NCCL) && MOEKD_HAVE_NCCL
namespace {
int failures = 0;
#define EXPECT(cond)                                                               \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "nccl_comm_test: FAILED %s (line %d)\n", #cond, __LINE__); \
            ++failures;                                                            \
        }                                                                          \
    } while (0)

template <class T>
T* to_device(const std::vector<T>& h) {
    T* d = nullptr;
    cudaMalloc(&d, h.size() * sizeof(T) + 1);
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
template <class T>
std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}
}  // namespace

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("nccl_comm_test: no CUDA device here; skipped\n");
        return 77;
    }
    try {
        auto host = moekd::dist::init(argc, argv);
        std::shared_ptr<moekd::dist::NcclComm> c = host->size() > 1
                                                       ? moekd::dist::NcclComm::from_mpi(*host)
                                                       : std::make_shared<moekd::dist::NcclComm>(
                                                             moekd::dist::NcclComm::make_id(), 0, 1);
        c->set_timeout(60);
        const int n = c->size(), r = c->rank();
        // all_reduce
        std::vector<float> f(1000);
        for (size_t k = 0; k < f.size(); ++k) f[k] = float(k) * float(r + 1);
        float* df = to_device(f);
        c->all_reduce(df, int64_t(f.size()), moekd::dist::ReduceOp::Sum);
        auto hf = to_host(df, f.size());
        EXPECT(hf[7] == 7.f * float(n * (n + 1) / 2));
        std::vector<double> d = {double(r), 1.0};
        double* dd = to_device(d);
        c->all_reduce(dd, 2, moekd::dist::ReduceOp::Mean);
        EXPECT(to_host(dd, 2)[0] == (n - 1) / 2.0);
        std::vector<int64_t> i = {int64_t(r)};
        int64_t* di = to_device(i);
        c->all_reduce(di, 1, moekd::dist::ReduceOp::Max);
        EXPECT(to_host(di, 1)[0] == n - 1);
        // broadcast, all_gather
        std::vector<int64_t> b = {r == 0 ? 42 : -1};
        int64_t* db = to_device(b);
        c->broadcast(db, sizeof(int64_t), 0);
        EXPECT(to_host(db, 1)[0] == 42);
        int64_t* dg = to_device(std::vector<int64_t>(size_t(n), -1));
        c->all_gather(di, dg, sizeof(int64_t));
        EXPECT(to_host(dg, size_t(n))[0] == n - 1);
        // all_to_all_v: one int32 (value 100 r + s) from every rank r to every rank s
        std::vector<int32_t> s(static_cast<size_t>(n));
        for (int k = 0; k < n; ++k) s[size_t(k)] = 100 * r + k;
        int32_t* ds = to_device(s);
        int32_t* dr = to_device(std::vector<int32_t>(size_t(n), -1));
        moekd::dist::all_to_all_v(*c, ds, std::vector<int64_t>(size_t(n), 1), dr, std::vector<int64_t>(size_t(n), 1));
        auto hr = to_host(dr, size_t(n));
        for (int k = 0; k < n; ++k) EXPECT(hr[size_t(k)] == 100 * k + r);
        c->barrier();
        // host pointers are an error, not a crash
        bool threw = false;
        try {
            c->all_reduce(f.data(), int64_t(f.size()), moekd::dist::ReduceOp::Sum);
        } catch (const moekd::Error& e) {
            threw = std::string(e.what()).find("not device memory") != std::string::npos;
        }
        EXPECT(threw);
        for (void* p : {(void*)df, (void*)dd, (void*)di, (void*)db, (void*)dg, (void*)ds, (void*)dr}) cudaFree(p);
        std::printf("nccl_comm_test rank %d/%d: %s\n", r, n, failures ? "FAILED" : "all checks passed");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nccl_comm_test: error: %s\n", e.what());
        return 1;
    }
    return failures ? 1 : 0;
}
#else
int main() {
    std::printf("nccl_comm_test: built without NCCL (MOEKD_HAVE_NCCL); skipped\n");
    return 77;
}
#endif
