// mpi_faults.cpp — the failure modes a multi-process job must survive with a message, not a hang.
// Run under `mpirun -np 2` by expect_failure.sh, which checks the exit status and the message:
//
//   mpi_faults die        rank 1 exits with status 3 before an all_reduce rank 0 waits in
//   mpi_faults kill       rank 1 is killed (SIGKILL, as by the OOM killer) before the all_reduce
//   mpi_faults hang       rank 1 sleeps instead of joining the all_reduce: rank 0 times out
//   mpi_faults order      rank 1 calls barrier() while rank 0 calls broadcast(): collective order
//   mpi_faults config     rank 1 builds a wider model: check_same_config fails on every rank
//   mpi_faults ok         control: every rank does the same thing; exits 0
// (a world-size mismatch is mpi_faults ok with a different MOEKD_WORLD_SIZE per rank: see CMake)
// The collective timeout is MOEKD_DIST_TIMEOUT (the tests set 2 s).
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/init.hpp>
#include <moekd/nn/layers.hpp>

using namespace moekd;

int main(int argc, char** argv) {
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mpi_faults: error: %s\n", e.what());
        return 1;
    }
    const std::string mode = argc > 1 ? argv[1] : "ok";
    const int r = comm->rank();
    float v[4] = {1, 2, 3, 4};
    try {
        if (mode == "die") {
            if (r == 1) std::exit(3);
            comm->all_reduce(v, 4, dist::ReduceOp::Sum);
        } else if (mode == "kill") {
            if (r == 1) std::raise(SIGKILL);
            comm->all_reduce(v, 4, dist::ReduceOp::Sum);
        } else if (mode == "hang") {
            if (r == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
            comm->all_reduce(v, 4, dist::ReduceOp::Sum);
        } else if (mode == "order") {
            if (r == 1) comm->barrier();
            else comm->broadcast(v, sizeof(v), 0);
            comm->all_reduce(v, 4, dist::ReduceOp::Sum);
        } else if (mode == "config") {
            Generator g(1);
            nn::Linear<float> fc(8, r == 1 ? 32 : 16, g);
            dist::check_same_config(*comm, fc, "fc 8->16");
        } else if (mode == "ok") {
            comm->all_reduce(v, 4, dist::ReduceOp::Sum);
            if (v[0] != float(comm->size())) return 4;
        } else {
            std::fprintf(stderr, "mpi_faults: unknown mode '%s'\n", mode.c_str());
            return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mpi_faults rank %d: error: %s\n", r, e.what());
        return 1;
    }
    if (r == 0) std::printf("mpi_faults %s: done on %d rank(s)\n", mode.c_str(), comm->size());
    return 0;
}
