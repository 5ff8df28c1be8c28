// init.hpp — dist::init: the one call a training program makes to find out whether it runs alone
// or as one rank of an `mpirun -np N` job, and the communicator to use either way.
//
//   auto comm = moekd::dist::init(argc, argv);   // MpiComm under mpirun, SingleProcess otherwise
//   if (comm->rank() == 0) std::printf(...);      // rank 0 alone prints, logs, checkpoints
//
// MPI is initialised only when the build has it (MOEKD_HAVE_MPI) *and* the process was started
// by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment); it is
// finalised when the program exits. A program built without MPI but started as one of N > 1
// ranks refuses to run (it would train N unrelated copies). Environment knobs:
//   MOEKD_DIST_TIMEOUT=S   seconds a collective may wait before the job is ended (default 300)
//   MOEKD_WORLD_SIZE=N     the world size this rank expects; every rank checks every rank's
//                          value against the real size at start and names the ones that differ
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "communicator.hpp"
#include "mpi.hpp"

namespace moekd::dist {

/// World size reported by the MPI launcher's environment: N under mpirun/srun/mpiexec, -1 when a
/// launcher is seen but does not say the size, 0 when there is no launcher.
inline int launcher_world_size() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
        if (const char* v = std::getenv(var)) return std::atoi(v);
    if (std::getenv("PMIX_RANK")) return -1;
    return 0;
}

namespace detail {
inline double env_double(const char* name, double fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    MOEKD_CHECK(end && *end == '\0' && d >= 0, "dist::init: ", name, "='", v, "' is not a number of seconds >= 0");
    return d;
}

/// Every rank gives the world size it expects (MOEKD_WORLD_SIZE; 0 = no expectation); every rank
/// throws the same error if any of them differs from the real size.
inline void check_expected_world_size(Communicator& comm) {
    int64_t mine = 0;
    if (const char* v = std::getenv("MOEKD_WORLD_SIZE")) mine = std::atoll(v);
    std::vector<int64_t> all(comm.size());
    comm.all_gather(&mine, all.data(), sizeof(int64_t));
    for (int r = 0; r < comm.size(); ++r)
        MOEKD_CHECK(all[r] == 0 || all[r] == comm.size(), "dist::init: world size mismatch: rank ", r,
                    " expects ", all[r], " ranks (MOEKD_WORLD_SIZE) but the job has ", comm.size(),
                    ". HINT: start every rank with the same -np / MOEKD_WORLD_SIZE");
}

#if defined(MOEKD_HAVE_MPI) && MOEKD_HAVE_MPI
inline void finalize_mpi_at_exit() {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}
#endif
}  // namespace detail

namespace detail {
inline std::shared_ptr<Communicator> init_impl(int* argc, char*** argv) {
    const double timeout = env_double("MOEKD_DIST_TIMEOUT", 300.0);
    const int launched = launcher_world_size();
    std::shared_ptr<Communicator> comm;
#if defined(MOEKD_HAVE_MPI) && MOEKD_HAVE_MPI
    if (launched != 0) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            int provided = 0;
            MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
            std::atexit(finalize_mpi_at_exit);
        }
        comm = std::make_shared<MpiComm>(MPI_COMM_WORLD, timeout);
    }
#else
    (void)argc;
    (void)argv;
    MOEKD_CHECK(launched <= 1, "dist::init: started as one of ", launched,
                " ranks, but this program was built without MPI (MOEKD_HAVE_MPI), so every rank would train "
                "alone. HINT: install libopenmpi-dev and rebuild, or run without mpirun");
#endif
    if (!comm) comm = std::make_shared<SingleProcess>();
    comm->set_timeout(timeout);
    check_expected_world_size(*comm);
    return comm;
}
}  // namespace detail

/// The communicator of this process (see the top of the file). Call once, early in main: MPI may
/// remove its own arguments from argc/argv.
inline std::shared_ptr<Communicator> init(int& argc, char**& argv) { return detail::init_impl(&argc, &argv); }

/// init() for code without argc/argv at hand (tests).
inline std::shared_ptr<Communicator> init() { return detail::init_impl(nullptr, nullptr); }

}  // namespace moekd::dist
