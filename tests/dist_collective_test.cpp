// dist_collective_test.cpp — dist/collective.hpp on ranks as threads (tests/dist_ep/thread_comm.hpp):
// every rank's strings gathered in rank order (uneven and empty lists), and a failure on any rank
// stopping every rank with the same error naming the lowest failed rank.
#include <catch2/catch.hpp>

#include <moekd/dist/collective.hpp>

#include "dist_ep/thread_comm.hpp"

using namespace moekd;

TEST_CASE("collective: strings gathered in rank order, a failure on any rank stops every rank", "[dist]") {
    const std::vector<std::vector<std::string>> given = {{"a", "bc"}, {}, {"", "d\xc3\xa9" "f", "x y"}};
    std::vector<std::vector<std::string>> got(3);
    std::vector<std::string> err_none(3, "-"), err_some(3, "-");
    testing::run_ranks(3, [&](std::shared_ptr<dist::Communicator> comm) {
        const int r = comm->rank();
        got[size_t(r)] = dist::all_gather_strings(*comm, given[size_t(r)]);
        try {
            dist::stop_together(*comm, "");
        } catch (const dist::CollectiveError& e) {
            err_none[size_t(r)] = e.what();
        }
        try {
            dist::stop_together(*comm, r == 0 ? "" : "boom on " + std::to_string(r));
        } catch (const dist::CollectiveError& e) {
            err_some[size_t(r)] = e.what();
        }
    });
    const std::vector<std::string> want = {"a", "bc", "", "d\xc3\xa9" "f", "x y"};
    for (int r = 0; r < 3; ++r) {
        CHECK(got[size_t(r)] == want);
        CHECK(err_none[size_t(r)] == "-");
        CHECK(err_some[size_t(r)] == "rank 1 of 3: boom on 1");  // the lowest failed rank, on every rank
    }
    dist::SingleProcess one;
    CHECK(dist::all_gather_strings(one, {"p", "q"}) == std::vector<std::string>{"p", "q"});
}
