// io_test.cpp — the JSON reader, safetensors round trips, and every kind of broken file.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include <moekd/io/safetensors.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

namespace {
std::string tmp(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("moekd_io_" + name)).string();
}
std::vector<uint8_t> with_header(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) b[i] = uint8_t(n >> (8 * i));
    std::memcpy(b.data() + 8, header.data(), header.size());
    return b;
}
io::SafetensorsFile parse(const std::vector<uint8_t>& b) { return io::parse_safetensors(b.data(), b.size(), "test.st"); }
}  // namespace

TEST_CASE("json parses and writes strictly", "[io][json]") {
    auto v = json::parse(R"({"a": [1, -2, 3.5e2, true, null], "b": {"c": "x\u00e9\ud83d\ude00\n"}})");
    CHECK(v.at("a").as_array()[1].as_int() == -2);
    CHECK(v.at("a").as_array()[2].as_double() == 350.0);
    CHECK(v.at("b").at("c").as_string() == "x\xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK(json::dump(json::parse(json::dump(v))) == json::dump(v));
    CHECK(json::parse("9223372036854775807").as_int() == INT64_MAX);
    for (const char* bad : {"{", "[1,]", "{\"a\":1,}", "01", "1.", "\"\\x\"", "tru", "[1] 2", "{\"a\":1,\"a\":2}",
                            "\"\xff\"", "\"\xc0\xaf\"", "\"\\ud800\"", "99999999999999999999", "\"a\nb\""}) {
        INFO(bad);
        CHECK_THROWS_AS(json::parse(bad), Error);
    }
    CHECK_THROWS_WITH(json::parse(std::string(100, '[') + std::string(100, ']')), Contains("nesting"));
}

TEST_CASE("safetensors round-trips tensors and metadata", "[io][safetensors]") {
    Generator g(1);
    std::map<std::string, Tensor<float>> m{{"w", Tensor<float>::randn({3, 4}, g)},
                                           {"b", Tensor<float>::randn({4}, g)},
                                           {"empty", Tensor<float>::zeros({0, 3})},
                                           {"s", Tensor<float>::scalar(2.5f)}};
    m["wt"] = m["w"].t();  // non-contiguous: written contiguous
    io::write_safetensors(tmp("rt.safetensors"), m, {{"step", "7"}});
    std::map<std::string, std::string> meta;
    auto back = io::load_safetensors<float>(tmp("rt.safetensors"), &meta);
    CHECK(meta.at("step") == "7");
    REQUIRE(back.size() == m.size());
    for (auto& [k, t] : m) {
        CHECK(back.at(k).shape() == t.shape());
        CHECK(back.at(k).to_vector() == t.to_vector());
    }
    // float file read as double converts exactly; int64 round trip
    auto asd = io::load_safetensors<double>(tmp("rt.safetensors"));
    CHECK(asd.at("s").item() == 2.5);
    io::write_safetensors(tmp("ids.safetensors"), std::map<std::string, Tensor<int64_t>>{{"ids", Tensor<int64_t>::arange(5)}});
    CHECK(io::load_safetensors<int64_t>(tmp("ids.safetensors")).at("ids").to_vector() == std::vector<int64_t>{0, 1, 2, 3, 4});
    CHECK_THROWS_WITH(io::load_safetensors<float>(tmp("ids.safetensors")), Contains("'ids' is stored as I64"));
}

TEST_CASE("broken safetensors files are clear errors", "[io][safetensors][errors]") {
    const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    CHECK(parse(with_header(ok, 8)).tensors.at("a").shape == Shape{2});
    CHECK_THROWS_WITH(parse({1, 2, 3}), Contains("too short"));
    CHECK_THROWS_WITH(parse(with_header(ok, 4)), Contains("run past the data buffer"));  // truncated data
    auto huge = with_header(ok, 8);
    huge[5] = 0x7f;  // header length ~ 2^47
    CHECK_THROWS_WITH(parse(huge), Contains("100 MB"));
    auto longer = with_header(ok, 8);
    longer[0] = uint8_t(longer[0] + 40);  // header length past the end of the file
    CHECK_THROWS_WITH(parse(std::vector<uint8_t>(longer.begin(), longer.begin() + 60)), Contains("truncated"));
    CHECK_THROWS_WITH(parse(with_header("{not json", 0)), Contains("not valid JSON"));
    CHECK_THROWS_WITH(parse(with_header("[1,2]", 0)), Contains("not a JSON object"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8)),
                      Contains("unknown dtype 'F33'"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
                      Contains("needs 12 bytes but data_offsets span 8"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
                      Contains("non-negative"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
                      Contains("overlaps"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
                      Contains("hole of 4 bytes"));
    CHECK_THROWS_WITH(parse(with_header(ok, 12)), Contains("belong to no tensor"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)),
                      Contains("begin <= end"));
    CHECK_THROWS_WITH(parse(with_header(R"({"__metadata__":{"k":1}})", 0)), Contains("metadata 'k' is not a string"));
    CHECK_THROWS_WITH(io::read_safetensors("/nonexistent.safetensors"), Contains("cannot open"));
}

TEST_CASE("an atomic write never leaves a half file behind", "[io]") {
    const std::string p = tmp("atomic.safetensors");
    io::write_safetensors(p, std::map<std::string, Tensor<float>>{{"x", Tensor<float>::ones({4})}});
    // a write into a folder that does not exist fails and leaves the old file as it was
    CHECK_THROWS_WITH(io::write_safetensors("/nonexistent/dir/x.safetensors",
                                            std::map<std::string, Tensor<float>>{{"x", Tensor<float>::ones({4})}}),
                      Contains("cannot create"));
    CHECK(io::load_safetensors<float>(p).at("x").numel() == 4);
    for (auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path()))
        CHECK(e.path().string().find("moekd_io_atomic.safetensors.tmp") == std::string::npos);
}
