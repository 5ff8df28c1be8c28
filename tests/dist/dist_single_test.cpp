// dist_single_test.cpp — moekd/dist without MPI: SingleProcess collectives, dist::init outside a
// launcher, the config hash (FNV-1a, describe_model), shard_range, and DataParallel on one rank
// (a no-op that must leave training exactly as it is).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <numeric>

#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/init.hpp>
#include <moekd/dist/sharded_checkpoint.hpp>
#include <moekd/nn/layers.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;

TEST_CASE("SingleProcess: rank 0 of 1, collectives copy or do nothing") {
    dist::SingleProcess c;
    CHECK(c.rank() == 0);
    CHECK(c.size() == 1);
    CHECK(c.backend() == "single");
    std::vector<float> f = {1, 2, 3};
    c.all_reduce(f.data(), 3, dist::ReduceOp::Mean);
    CHECK(f == std::vector<float>{1, 2, 3});
    int64_t x = 5, y = 0;
    c.all_gather(&x, &y, sizeof(x));
    CHECK(y == 5);
    std::vector<int32_t> s = {7, 8}, r(2);
    dist::all_to_all_v(c, s.data(), {2}, r.data(), {2});
    CHECK(r == s);
    c.barrier();
    c.broadcast(&x, sizeof(x), 0);
    CHECK_THROWS_WITH(c.broadcast(&x, sizeof(x), 1), Catch::Contains("root 1 out of range"));
    CHECK_THROWS_WITH(dist::all_to_all_v(c, s.data(), {1}, r.data(), {2}), Catch::Contains("equal counts"));
    Tensor<float> t = Tensor<float>::zeros({2, 3}).transpose(0, 1);
    CHECK_THROWS_WITH(dist::all_reduce(c, t, dist::ReduceOp::Sum, "grad of w"),
                      Catch::Contains("grad of w") && Catch::Contains("contiguous"));
}

TEST_CASE("dist::init outside mpirun gives SingleProcess with the env timeout") {
    if (dist::launcher_world_size() != 0) return;  // this test is meant to run without a launcher
    ::setenv("MOEKD_DIST_TIMEOUT", "12.5", 1);
    auto c = dist::init();
    CHECK(c->backend() == "single");
    CHECK(c->timeout() == 12.5);
    ::setenv("MOEKD_DIST_TIMEOUT", "soon", 1);
    CHECK_THROWS_WITH(dist::init(), Catch::Contains("MOEKD_DIST_TIMEOUT='soon'"));
    ::unsetenv("MOEKD_DIST_TIMEOUT");
    ::setenv("MOEKD_WORLD_SIZE", "2", 1);  // expects 2 ranks, started alone
    CHECK_THROWS_WITH(dist::init(), Catch::Contains("world size mismatch: rank 0 expects 2"));
    ::unsetenv("MOEKD_WORLD_SIZE");
}

TEST_CASE("fnv1a: the published 64-bit test vectors") {
    CHECK(dist::fnv1a("") == 0xcbf29ce484222325ull);
    CHECK(dist::fnv1a("a") == 0xaf63dc4c8601ec8cull);
    CHECK(dist::fnv1a("foobar") == 0x85944171f73967e8ull);
}

TEST_CASE("config hash: names, shapes and the config string count, values do not") {
    Generator g1(1), g2(2);
    nn::Linear<float> a(8, 16, g1), b(8, 16, g2), wide(8, 17, g1);
    dist::SingleProcess c;
    const uint64_t ha = dist::check_same_config(c, a, "x"), hb = dist::check_same_config(c, b, "x");
    CHECK(ha == hb);
    CHECK(dist::check_same_config(c, wide, "x") != ha);
    CHECK(dist::check_same_config(c, a, "y") != ha);
    const std::string d = dist::describe_model(a.named_parameters(), "lr=1");
    CHECK_THAT(d, Catch::Contains("config lr=1\n") && Catch::Contains("param weight (16, 8)\n") &&
                      Catch::Contains("param bias (16,)\n"));
}

TEST_CASE("shard_range covers 0..n once, sizes differ by at most one") {
    for (int64_t n : {0, 1, 7, 100, 101})
        for (int size : {1, 2, 3, 8}) {
            int64_t next = 0, lo = n, hi = 0;
            for (int r = 0; r < size; ++r) {
                dist::Range s = dist::shard_range(n, r, size);
                CHECK(s.begin == next);
                next = s.end;
                lo = std::min(lo, s.size());
                hi = std::max(hi, s.size());
            }
            CHECK(next == n);
            CHECK(hi - lo <= 1);
        }
    CHECK(dist::owns(5, 1, 2));
    CHECK_FALSE(dist::owns(5, 0, 2));
    CHECK_THROWS_WITH(dist::shard_range(10, 2, 2), Catch::Contains("rank 2, size 2"));
}

TEST_CASE("DataParallel on one rank changes nothing, buckets follow bucket_mb") {
    Generator g(3);
    nn::Linear<float> fc(64, 64, g);  // weight 16 KiB, bias 256 B
    auto before = fc.weight.clone();
    dist::DataParallelOptions o;
    o.bucket_mb = 0.01;  // ~10 KiB: the weight alone, then the bias
    dist::DataParallel<float> dp(std::make_shared<dist::SingleProcess>(), fc, o);
    CHECK(dp.buckets().size() == 2);
    dist::DataParallel<float> one(std::make_shared<dist::SingleProcess>(), fc);
    CHECK(one.buckets().size() == 1);
    sum(fc.forward(Tensor<float>::ones({2, 64}))).backward();
    auto grad = fc.weight.grad().clone();
    dp.average_gradients();
    for (int64_t i = 0; i < grad.numel(); ++i) REQUIRE(fc.weight.grad().data()[i] == grad.data()[i]);
    for (int64_t i = 0; i < before.numel(); ++i) REQUIRE(fc.weight.data()[i] == before.data()[i]);
    o.bucket_mb = 0;
    CHECK_THROWS_WITH(dist::DataParallel<float>(std::make_shared<dist::SingleProcess>(), fc, o),
                      Catch::Contains("bucket_mb"));
}

TEST_CASE("fnv1a64: one helper, continued hashing, and the two legacy starts", "[data][hash]") {
    CHECK(moekd::fnv1a64("foobar") == 0x85944171f73967e8ULL);  // published FNV-1a 64 vector
    CHECK(moekd::fnv1a64("bar", moekd::fnv1a64("foo")) == moekd::fnv1a64("foobar"));
    const unsigned char raw[3] = {'f', 'o', 'o'};
    CHECK(moekd::fnv1a64_bytes(raw, 3) == moekd::fnv1a64("foo"));
    CHECK(dist::fnv1a("foobar") == moekd::fnv1a64("foobar"));
    // the shard hash keeps its first start value (a digit short of the offset basis), so that
    // indexes written before the helper was shared still verify: the loop it replaced
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : raw) h = (h ^ c) * 1099511628211ull;
    CHECK(dist::detail::fnv1a64(raw, 3) == h);
}
