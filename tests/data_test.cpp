// data_test.cpp — the IDX reader (real Fashion-MNIST files, every kind of bad file) and the
// CIFAR-10 binary reader (synthetic records; the real set is not in Debian).
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <moekd/data/cifar.hpp>
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

TEST_CASE("IDX: a directory where a file is expected, and labels outside the classes, name the file", "[data][errors]") {
    // issue 16: a directory gave "corrupt or truncated (zlib: ...)" without saying why
    const std::string dir = tmp_path("a_directory.gz");
    std::filesystem::create_directories(dir);
    CHECK_THROWS_WITH(data::read_idx(dir), Contains("cannot open '" + dir + "': is a directory"));
    CHECK_THROWS_WITH(data::read_cifar10({dir}), Contains("'" + dir + "': is a directory"));
    CHECK_THROWS_WITH(data::read_idx("/nonexistent/x.idx"), Contains("'/nonexistent/x.idx': missing file"));
    // issue 16: a label 12 of a 10-class set scored as "accuracy 0" with exit 0
    write_raw(tmp_path("img3"), idx_bytes({3, 2, 2}, 12));
    std::vector<uint8_t> lab{0, 0, 8, 1, 0, 0, 0, 3, 9, 12, 0};  // labels 9, 12, 0
    write_gz(tmp_path("lab3.gz"), lab);
    CHECK_THROWS_WITH(data::read_idx_pair(tmp_path("img3"), tmp_path("lab3.gz"), 10),
                      Contains(tmp_path("lab3.gz") + "': label 12 at index 1 is outside [0, 10)"));
    CHECK(data::read_idx_pair(tmp_path("img3"), tmp_path("lab3.gz")).size() == 3);  // no class count: not checked
    lab[9] = 1;
    write_gz(tmp_path("lab3.gz"), lab);
    const auto ok = data::read_idx_pair(tmp_path("img3"), tmp_path("lab3.gz"), 10);
    CHECK(ok.labels.data()[1] == 1);
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

TEST_CASE("CIFAR-10 binary records: label byte, then the R, G, B planes", "[data]") {
    // two records: labels 3 and 9; record r's pixel j (plane-major) is (j * 7 + r) % 256
    std::vector<uint8_t> bytes;
    for (int r = 0; r < 2; ++r) {
        bytes.push_back(r == 0 ? 3 : 9);
        for (int j = 0; j < 3072; ++j) bytes.push_back(uint8_t((j * 7 + r) % 256));
    }
    const std::string a = tmp_path("cifar_a.bin"), b = tmp_path("cifar_b.bin.gz");
    write_raw(a, bytes);
    write_gz(b, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 3073));  // the first record again, gzip'd
    const data::ImageSet s = data::read_cifar10({a, b});
    REQUIRE(s.images.shape() == Shape{3, 3, 32, 32});
    CHECK(s.labels.to_vector() == std::vector<int64_t>{3, 9, 3});
    // record 1, green plane (c = 1), row 2, column 5 -> byte j = 1024 + 2 * 32 + 5
    const int j = 1024 + 2 * 32 + 5;
    CHECK(s.images.at({1, 1, 2, 5}) == Approx(((j * 7 + 1) % 256) / 255.0f));
    CHECK(s.images.at({2, 0, 0, 0}) == Approx(0.0f));
    CHECK(s.images.at({0, 2, 31, 31}) == Approx(((3071 * 7) % 256) / 255.0f));

    write_raw(a, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 5000));  // 1.6 records
    CHECK_THROWS_WITH(data::read_cifar10({a}), Contains("cifar_a.bin") && Contains("5000 bytes") && Contains("3073"));
    write_raw(a, {});
    CHECK_THROWS_WITH(data::read_cifar10({a}), Contains("0 bytes"));
    bytes[3073] = 10;  // second record's label
    write_raw(a, bytes);
    CHECK_THROWS_WITH(data::read_cifar10({a}), Contains("record 1 has label 10"));
    CHECK_THROWS_WITH(data::read_cifar10_dir("/nonexistent"), Contains("/nonexistent/data_batch_1.bin"));
    std::remove(a.c_str());
    std::remove(b.c_str());
}
