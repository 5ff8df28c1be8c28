// mpi_main.hpp — Catch2's main for the tests that run under `mpirun -np N`: every rank runs every
// test case in the same order (so their collectives line up); MPI is set up before the first
// test and finalised at exit by dist::init. Include from exactly one file per test program.
#pragma once
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <moekd/dist/init.hpp>

namespace moekd_test {
inline std::shared_ptr<moekd::dist::Communicator>& world() {
    static std::shared_ptr<moekd::dist::Communicator> c;
    return c;
}
}  // namespace moekd_test

int main(int argc, char** argv) {
    moekd_test::world() = moekd::dist::init(argc, argv);
    moekd_test::world()->set_timeout(20.0);  // a test that hangs ends within seconds, with a message
    const int failed = Catch::Session().run(argc, argv);
    // Every rank exits non-zero when any rank failed (so mpirun's status is honest).
    int64_t f = failed;
    moekd_test::world()->all_reduce(&f, 1, moekd::dist::ReduceOp::Max);
    return f > 0 ? 1 : 0;
}
