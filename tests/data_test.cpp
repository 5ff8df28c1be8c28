// data_test.cpp — the IDX reader: real Fashion-MNIST files, and every kind of bad file.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <moekd/data/idx.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

namespace {
std::string tmp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("moekd_idx_" + name)).string();
}
void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}
void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
}
std::vector<uint8_t> idx_bytes(std::vector<uint32_t> dims, size_t payload) {
    std::vector<uint8_t> b{0, 0, 8, static_cast<uint8_t>(dims.size())};
    for (uint32_t d : dims)
        for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
    for (size_t i = 0; i < payload; ++i) b.push_back(static_cast<uint8_t>(i * 7));
    return b;
}
}  // namespace

TEST_CASE("IDX files round-trip, plain and gzip", "[data]") {
    auto bytes = idx_bytes({2, 3, 2}, 12);
    write_raw(tmp_path("plain"), bytes);
    write_gz(tmp_path("gz"), bytes);
    for (auto name : {"plain", "gz"}) {
        auto t = data::read_idx(tmp_path(name), 3);
        CHECK(t.shape() == Shape{2, 3, 2});
        CHECK(t.at({1, 2, 1}) == static_cast<uint8_t>(11 * 7));
    }
}

TEST_CASE("bad IDX files are clear errors naming the file", "[data][errors]") {
    CHECK_THROWS_WITH(data::read_idx("/nonexistent/x.idx"), Contains("cannot open '/nonexistent/x.idx'"));
    write_raw(tmp_path("magic"), {1, 2, 8, 1, 0, 0, 0, 1, 5});
    CHECK_THROWS_WITH(data::read_idx(tmp_path("magic")), Contains("bad magic"));
    auto trunc = idx_bytes({4, 4}, 10);
    write_gz(tmp_path("trunc"), trunc);
    CHECK_THROWS_WITH(data::read_idx(tmp_path("trunc")), Contains("(truncated)"));
    write_raw(tmp_path("short"), {0, 0});
    CHECK_THROWS_WITH(data::read_idx(tmp_path("short")), Contains("too short"));
    write_raw(tmp_path("rank"), idx_bytes({4}, 4));
    CHECK_THROWS_WITH(data::read_idx(tmp_path("rank"), 3), Contains("has rank 1, expected 3"));
    // a gzip stream cut in the middle
    write_gz(tmp_path("cutgz"), idx_bytes({100, 100}, 10000));
    std::filesystem::resize_file(tmp_path("cutgz"), 40);
    CHECK_THROWS_AS(data::read_idx(tmp_path("cutgz")), Error);
    // images and labels that disagree
    write_raw(tmp_path("img"), idx_bytes({3, 2, 2}, 12));
    write_raw(tmp_path("lab"), idx_bytes({2}, 2));
    CHECK_THROWS_WITH(data::read_idx_pair(tmp_path("img"), tmp_path("lab")), Contains("holds 3 images but"));
}

TEST_CASE("the real Fashion-MNIST from Debian reads whole", "[data]") {
    const std::string dir = "/usr/share/datasets/fashion-mnist/";
    auto train = data::read_idx_pair(dir + "train-images-idx3-ubyte.gz", dir + "train-labels-idx1-ubyte.gz");
    CHECK(train.images.shape() == Shape{60000, 28, 28});
    std::vector<int64_t> per_class(10, 0);
    for (int64_t y : train.labels.to_vector()) {
        REQUIRE((y >= 0 && y < 10));
        ++per_class[y];
    }
    for (int64_t c : per_class) CHECK(c == 6000);  // Fashion-MNIST is balanced
    CHECK(max(train.images).item() == 1.0f);
    CHECK(min(train.images).item() == 0.0f);
}
