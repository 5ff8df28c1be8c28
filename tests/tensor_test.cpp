// tensor_test.cpp — Tensor<T> storage, views, factories, printing, the caching allocator, the
// random generator and the dtype conversions.
#include <catch2/catch.hpp>
#include <sstream>

#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

TEST_CASE("factories fill and shape tensors", "[tensor]") {
    auto z = Tensor<float>::zeros({2, 3});
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.numel() == 6);
    CHECK(z.strides() == Shape{3, 1});
    for (float v : z.to_vector()) CHECK(v == 0.0f);
    CHECK(Tensor<double>::full({2}, 2.5).to_vector() == std::vector<double>{2.5, 2.5});
    CHECK(Tensor<int64_t>::arange(4).to_vector() == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(Tensor<double>::arange(1.0, 2.0, 0.25).to_vector() == std::vector<double>{1.0, 1.25, 1.5, 1.75});
    auto v = Tensor<float>::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(v.at({1, 2}) == 6.0f);
    CHECK(v.at({-1, 0}) == 4.0f);
    CHECK(Tensor<float>::scalar(3).dim() == 0);
    CHECK(Tensor<float>::scalar(3).item() == 3.0f);
    CHECK_THROWS_WITH(Tensor<float>::from_vector({1, 2, 3}, {2, 2}), Contains("3 values do not fill shape (2, 2)"));
    CHECK_THROWS_WITH(v.at({2, 0}), Contains("out of range"));
    CHECK_THROWS_WITH(v.item(), Contains("6 elements"));
    CHECK_THROWS_AS(Tensor<float>().shape(), Error);
}

TEST_CASE("random factories are reproducible from a seed", "[tensor][random]") {
    Generator a(42), b(42), c(43);
    auto x = Tensor<float>::randn({100}, a);
    auto y = Tensor<float>::randn({100}, b);
    auto z = Tensor<float>::randn({100}, c);
    CHECK(x.to_vector() == y.to_vector());
    CHECK(x.to_vector() != z.to_vector());
    // moments of 100k normal draws
    Generator g(7);
    auto n = Tensor<double>::randn({100000}, g);
    CHECK(mean(n).item() == Approx(0.0).margin(0.02));
    CHECK(var(n).item() == Approx(1.0).margin(0.02));
    auto u = Tensor<double>::rand({100000}, g, -1, 3);
    CHECK(min(u).item() >= -1.0);
    CHECK(max(u).item() < 3.0);
    CHECK(mean(u).item() == Approx(1.0).margin(0.03));
    auto r = Tensor<int64_t>::randint(2, 5, {1000}, g);
    for (int64_t v : r.to_vector()) CHECK((v >= 2 && v < 5));
    // the state round-trips exactly (checkpoints rely on this)
    Generator s(9);
    s.normal();
    auto st = s.state();
    double next = s.normal();
    Generator t(1);
    t.set_state(st);
    CHECK(t.normal() == next);
}

TEST_CASE("views share storage and have the right geometry", "[tensor][view]") {
    auto x = Tensor<float>::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
    auto t = x.t();
    CHECK(t.shape() == Shape{3, 2});
    CHECK(t.strides() == Shape{1, 3});
    CHECK(!t.is_contiguous());
    CHECK(t.shares_storage(x));
    CHECK(t.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
    x.at({0, 1}) = 10;  // visible through the view
    CHECK(t.at({1, 0}) == 10);

    auto c = t.contiguous();
    CHECK(c.is_contiguous());
    CHECK(!c.shares_storage(x));
    CHECK(x.contiguous().is_same(x));  // already contiguous: the same tensor back

    auto r = x.reshape({3, 2});
    CHECK(r.shares_storage(x));
    auto rt = t.reshape({6});  // non-contiguous: copies
    CHECK(!rt.shares_storage(x));
    CHECK(rt.to_vector() == std::vector<float>{0, 3, 10, 4, 2, 5});
    CHECK(x.view({-1}).shape() == Shape{6});
    CHECK_THROWS_WITH(t.view({6}), Contains("not contiguous"));
    CHECK_THROWS_WITH(x.view({4, -1}), Contains("cannot view"));
    CHECK_THROWS_WITH(x.reshape({-1, -1}), Contains("more than one -1"));

    auto n = x.narrow(1, 1, 2);
    CHECK(n.shape() == Shape{2, 2});
    CHECK(n.to_vector() == std::vector<float>{10, 2, 4, 5});
    CHECK(x.select(0, 1).to_vector() == std::vector<float>{3, 4, 5});
    CHECK(x.slice(1, -2, 3).to_vector() == std::vector<float>{10, 2, 4, 5});
    CHECK_THROWS_WITH(x.narrow(1, 2, 2), Contains("narrow: [2, 4) out of range for dim 1 of shape (2, 3)"));

    auto e = Tensor<float>::from_vector({1, 2}, {2, 1}).expand({3, 2, 4});
    CHECK(e.shape() == Shape{3, 2, 4});
    CHECK(e.strides() == Shape{0, 1, 0});
    CHECK(e.at({2, 1, 3}) == 2);
    CHECK_THROWS_WITH(x.expand({4, 3}), Contains("cannot be expanded"));

    auto u = x.unsqueeze(0).unsqueeze(-1);
    CHECK(u.shape() == Shape{1, 2, 3, 1});
    CHECK(u.squeeze(0).squeeze(-1).shape() == Shape{2, 3});
    CHECK(x.squeeze(0).shape() == Shape{2, 3});  // not size 1: no-op, as PyTorch
    auto p = Tensor<float>::zeros({2, 3, 4}).permute({2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK_THROWS_WITH(x.permute({0, 0}), Contains("repeated"));
    CHECK_THROWS_WITH(x.transpose(0, 2), Contains("dim 2 out of range for a tensor of rank 2"));
    CHECK(Tensor<float>::zeros({2, 3, 4}).flatten(1).shape() == Shape{2, 12});
}

TEST_CASE("printing shows shape, dtype and values", "[tensor]") {
    std::ostringstream os;
    os << Tensor<float>::from_vector({1, 2, 3, 4}, {2, 2});
    CHECK(os.str() == "tensor(shape=(2, 2), dtype=float32, device=cpu)\n[[1, 2], [3, 4]]");
    std::ostringstream big;
    big << Tensor<int64_t>::arange(10);
    CHECK_THAT(big.str(), Contains("[0, 1, 2, ..., 7, 8, 9]"));
}

TEST_CASE("the caching allocator reuses freed blocks", "[allocator]") {
    auto& a = CpuAllocator::instance();
    if (!a.stats().allocations && false) {}
    { auto warm = Tensor<float>::empty({1000}); }
    const auto before = a.stats();
    for (int i = 0; i < 10; ++i) {
        auto t = Tensor<float>::empty({1000});
        t.data()[0] = 1;
    }
    const auto after = a.stats();
    CHECK(after.allocations - before.allocations == 10);
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(after.cache_hits - before.cache_hits == 10);
#endif
    CHECK(CpuAllocator::round_size(1) == 64);
    CHECK(CpuAllocator::round_size(4097) == 4096 + 1024);
    CHECK(reinterpret_cast<uintptr_t>(Tensor<float>::empty({3}).data()) % 64 == 0);
}

TEST_CASE("bf16 and half round-trip and round to nearest even", "[dtype]") {
    for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 1e-3f, 3.14159f}) {
        CHECK(static_cast<float>(bf16(f)) == Approx(f).epsilon(1.0 / 128));
        CHECK(static_cast<float>(half(f)) == Approx(f).epsilon(1.0 / 1024));
    }
    CHECK(static_cast<float>(half(1e6f)) == std::numeric_limits<float>::infinity());
    CHECK(static_cast<float>(half(5.96e-8f)) == Approx(5.96e-8f).epsilon(0.01));  // smallest subnormal
    CHECK(std::isnan(static_cast<float>(bf16(std::nanf("")))));
    CHECK(half(1.0f).bits == 0x3c00);
    CHECK(bf16(1.0f).bits == 0x3f80);
    CHECK(std::string(dtype_name<bf16>()) == "bfloat16");
}

TEST_CASE("cast converts element types", "[tensor]") {
    auto x = Tensor<float>::from_vector({1.5f, -2.0f});
    auto d = cast<double>(x);
    CHECK(d.to_vector() == std::vector<double>{1.5, -2.0});
    CHECK(cast<int64_t>(x.t().contiguous()).to_vector() == std::vector<int64_t>{1, -2});
}
