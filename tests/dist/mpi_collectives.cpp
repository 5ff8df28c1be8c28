// mpi_collectives.cpp — every Communicator collective of MpiComm under `mpirun -np N` (N >= 2),
// against values each rank can compute alone; plus the argument checks, which throw a
// moekd::Error on the calling rank before any communication.
#include "mpi_main.hpp"

#include <climits>
#include <numeric>

#include <moekd/dist/communicator.hpp>
#include <moekd/dist/mpi.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using moekd_test::world;

TEST_CASE("launched as an MPI job of at least 2 ranks") {
    REQUIRE(world()->backend() == "mpi");
    REQUIRE(world()->size() >= 2);
    REQUIRE(world()->rank() < world()->size());
    REQUIRE(dist::launcher_world_size() == world()->size());
}

TEST_CASE("all_reduce sum / mean / max for float, double, int64") {
    auto& c = *world();
    const int n = c.size(), r = c.rank();
    std::vector<float> f(1000);
    std::vector<double> d(7);
    std::vector<int64_t> i(3);
    for (size_t k = 0; k < f.size(); ++k) f[k] = float(k) * (r + 1);
    for (size_t k = 0; k < d.size(); ++k) d[k] = 0.5 * double(k) + r;
    for (size_t k = 0; k < i.size(); ++k) i[k] = int64_t(k) - 10 * r;
    c.all_reduce(f.data(), int64_t(f.size()), dist::ReduceOp::Sum);
    c.all_reduce(d.data(), int64_t(d.size()), dist::ReduceOp::Mean);
    c.all_reduce(i.data(), int64_t(i.size()), dist::ReduceOp::Max);
    const double rsum = n * (n + 1) / 2.0;  // sum over ranks of (r + 1)
    for (size_t k = 0; k < f.size(); ++k) CHECK(f[k] == Approx(double(k) * rsum));
    for (size_t k = 0; k < d.size(); ++k) CHECK(d[k] == Approx(0.5 * double(k) + (n - 1) / 2.0));
    for (size_t k = 0; k < i.size(); ++k) CHECK(i[k] == int64_t(k));  // rank 0 holds the max

    // zero elements: still a collective every rank takes part in, and nothing changes
    c.all_reduce(f.data(), 0, dist::ReduceOp::Sum);
    CHECK(f[1] == Approx(rsum));

    // Tensor helper
    Tensor<float> t = Tensor<float>::full({2, 3}, float(r));
    dist::all_reduce(c, t, dist::ReduceOp::Max, "t");
    CHECK(t.at({1, 2}) == float(n - 1));
}

TEST_CASE("broadcast from every root, including 0 bytes") {
    auto& c = *world();
    for (int root = 0; root < c.size(); ++root) {
        std::vector<int32_t> v(5, c.rank() == root ? 100 + root : -1);
        c.broadcast(v.data(), int64_t(v.size() * sizeof(int32_t)), root);
        for (int32_t x : v) CHECK(x == 100 + root);
        c.broadcast(nullptr, 0, root);
    }
    Tensor<double> t = Tensor<double>::full({4}, c.rank() == 1 ? 3.5 : 0.0);
    dist::broadcast(c, t, 1, "t");
    CHECK(t.at({3}) == 3.5);
}

TEST_CASE("all_gather: separate buffers and in place") {
    auto& c = *world();
    const int n = c.size(), r = c.rank();
    int64_t mine[2] = {r, 10 * r};
    std::vector<int64_t> all(2 * n, -1);
    c.all_gather(mine, all.data(), sizeof(mine));
    for (int k = 0; k < n; ++k) {
        CHECK(all[2 * k] == k);
        CHECK(all[2 * k + 1] == 10 * k);
    }
    std::vector<int64_t> inplace(2 * n, -1);
    inplace[2 * r] = 7 * r;
    inplace[2 * r + 1] = 7 * r + 1;
    c.all_gather(inplace.data() + 2 * r, inplace.data(), 2 * sizeof(int64_t));
    for (int k = 0; k < n; ++k) CHECK(inplace[2 * k + 1] == 7 * k + 1);
}

TEST_CASE("all_to_all_v with uneven and zero counts") {
    auto& c = *world();
    const int n = c.size(), r = c.rank();
    // rank r sends (r + s) % 3 values to rank s, each value 1000 r + s.
    auto count = [](int from, int to) { return int64_t((from + to) % 3); };
    std::vector<int64_t> sc(n), rc(n);
    std::vector<float> send;
    for (int s = 0; s < n; ++s) {
        sc[s] = count(r, s);
        rc[s] = count(s, r);
        for (int64_t k = 0; k < sc[s]; ++k) send.push_back(float(1000 * r + s));
    }
    std::vector<float> recv(std::accumulate(rc.begin(), rc.end(), int64_t(0)), -1.f);
    dist::all_to_all_v(c, send.data(), sc, recv.data(), rc);
    size_t at = 0;
    for (int s = 0; s < n; ++s)
        for (int64_t k = 0; k < rc[s]; ++k) CHECK(recv[at++] == float(1000 * s + r));
    CHECK(at == recv.size());
}

TEST_CASE("barrier and many small collectives in a row") {
    auto& c = *world();
    int64_t acc = 0;
    for (int k = 0; k < 200; ++k) {
        int64_t v = c.rank() + k;
        c.all_reduce(&v, 1, dist::ReduceOp::Sum);
        acc += v;
        if (k % 50 == 0) c.barrier();
    }
    const int64_t n = c.size();
    CHECK(acc == 200 * n * (n - 1) / 2 + n * 199 * 200 / 2);
}

TEST_CASE("bad arguments throw a moekd::Error on the calling rank, before any communication") {
    auto& c = *world();
    std::vector<int64_t> one(1, 0);
    CHECK_THROWS_WITH(c.all_to_all_v(nullptr, one, nullptr, one),
                      Catch::Contains("all_to_all_v") && Catch::Contains("world size " + std::to_string(c.size())));
    std::vector<int64_t> huge(c.size(), 0);
    huge[0] = int64_t(INT_MAX) + 1;
    CHECK_THROWS_WITH(c.all_to_all_v(nullptr, huge, nullptr, std::vector<int64_t>(c.size(), 0)),
                      Catch::Contains("outside MPI's int range"));
    CHECK_THROWS_WITH(c.all_gather(nullptr, nullptr, int64_t(INT_MAX) + 1), Catch::Contains("int count range"));
    CHECK_THROWS_WITH(c.broadcast(nullptr, 0, c.size()), Catch::Contains("root " + std::to_string(c.size())));
    CHECK_THROWS_WITH(c.all_reduce(static_cast<float*>(nullptr), -1, dist::ReduceOp::Sum), Catch::Contains("< 0"));
    Tensor<float> t = Tensor<float>::zeros({3, 4}).transpose(0, 1);
    CHECK_THROWS_WITH(dist::all_reduce(c, t, dist::ReduceOp::Sum, "grad of fc1.weight"),
                      Catch::Contains("grad of fc1.weight") && Catch::Contains("contiguous"));
    c.barrier();  // the ranks are still in step afterwards
}
