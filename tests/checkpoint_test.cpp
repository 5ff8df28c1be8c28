// checkpoint_test.cpp — full training checkpoints: everything round-trips bit for bit, a resumed
// run is bit-identical to an uninterrupted one, broken files are clear errors that load nothing,
// a failed write leaves the previous checkpoint intact, the metadata is covered by a checksum
// too, and latest_checkpoint() skips a corrupt newest file. (Resume across a real kill -9 is
// tests/resume/; the training loop used here is tests/resume/tiny_trainer.hpp.)
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <fstream>

#include "resume/tiny_trainer.hpp"

using namespace moekd;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {
/// A scratch folder per process, removed at exit.
struct Scratch {
    fs::path dir = fs::temp_directory_path() / ("moekd_ckpt_test_" + std::to_string(::getpid()));
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
} scratch;
std::string tmp(const std::string& name) {
    fs::create_directories(scratch.dir);
    return (scratch.dir / name).string();
}
std::vector<uint8_t> read_bytes(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& p, const std::vector<uint8_t>& b) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
template <class T>
std::vector<uint8_t> bytes_of(const Tensor<T>& t) {
    Tensor<T> c = moekd::detail::contiguous_data(t);
    const auto* p = reinterpret_cast<const uint8_t*>(c.data());
    return {p, p + size_t(c.numel()) * sizeof(T)};
}
/// Everything a run carries, as bytes: parameters, optimizer state, generator states, position.
std::map<std::string, std::vector<uint8_t>> snapshot(tiny::Trainer& t) {
    std::map<std::string, std::vector<uint8_t>> out;
    for (auto& [n, v] : t.model->state_dict()) out["model." + n] = bytes_of(v);
    for (auto& [n, v] : t.opt->state_dict()) out["optim." + n] = bytes_of(v);
    auto gen = [&](const std::string& n, const Generator& g) {
        auto s = g.state();
        std::vector<uint8_t> b(sizeof s.s + 9);
        std::memcpy(b.data(), s.s.data(), sizeof s.s);
        b[sizeof s.s] = s.has_spare;
        std::memcpy(b.data() + sizeof s.s + 1, &s.spare, 8);
        out["rng." + n] = b;
    };
    gen("dropout", t.drop_gen);
    gen("shuffle", t.shuffle_gen);
    out["pos"] = bytes_of(Tensor<int64_t>::from_vector({t.st.step, t.st.epoch, t.st.batch_index}));
    return out;
}
std::string replace_once(std::vector<uint8_t>& b, const std::string& from, const std::string& to) {
    REQUIRE(from.size() == to.size());
    std::string s(b.begin(), b.end());
    const size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    std::memcpy(b.data() + at, to.data(), to.size());
    return s;
}
/// Runs f with stderr going to a file; returns what was written there.
template <class F>
std::string capture_stderr(F&& f) {
    const std::string path = tmp("stderr.txt");
    std::fflush(stderr);
    const int saved = ::dup(2);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
    try {
        f();
    } catch (...) {
        std::fflush(stderr);
        ::dup2(saved, 2);
        ::close(saved);
        throw;
    }
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    const auto b = read_bytes(path);
    return std::string(b.begin(), b.end());
}
/// The checkpoint at `p` rewritten with its metadata changed by `edit` (tensors as they are).
void rewrite_metadata(const std::string& p, const std::function<void(std::map<std::string, std::string>&)>& edit) {
    const auto b = read_bytes(p);
    io::SafetensorsFile f = io::parse_safetensors(b.data(), b.size(), p);
    std::map<std::string, io::detail::RawView> views;
    for (auto& [n, r] : f.tensors) views[n] = {r.dtype, r.shape, r.bytes.data(), r.bytes.size()};
    edit(f.metadata);
    write_bytes(p, io::detail::serialize_raw(views, f.metadata));
}
}  // namespace

TEST_CASE("a checkpoint round-trips model, optimizer, generators and position exactly", "[checkpoint]") {
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 7; ++i) a.step();
    a.drop_gen.normal();  // leaves a Box-Muller spare pending: it must survive too
    REQUIRE(a.drop_gen.state().has_spare);
    a.st.data_position = "shard-3:offset=12345";
    a.st.config = "{\"name\": \"tiny \\u00e9\",\n \"tab\":\t1}";  // quotes, newline, tab, escapes
    a.st.extra = {{"schedule", "inverse_sqrt warmup=4"}, {"best_loss", "0.125"}, {"empty", ""}};
    a.opt->groups()[1].lr = 0.1 + 0.2;  // not a short decimal: must come back bit-exact
    const std::string p = tmp("roundtrip.safetensors");
    a.save(p);

    auto ck = io::read_checkpoint<float>(p);
    CHECK(ck.state == a.st);
    CHECK(ck.model.size() == 4);
    CHECK(ck.generators.at("dropout") == a.drop_gen.state());
    CHECK(ck.groups.size() == 2);
    CHECK(ck.groups[1].lr == 0.1 + 0.2);
    CHECK(ck.groups[0].size == 2);  // two weight matrices decayed, two biases not

    tiny::Trainer b(tiny::Config{});
    b.load(p);
    b.drop_gen.set_state(a.drop_gen.state());  // (b.load re-drew the shuffle; compare the rest)
    auto sa = snapshot(a), sb = snapshot(b);
    CHECK(sa == sb);
    CHECK(b.st == a.st);
    CHECK(b.opt->groups()[1].lr == 0.1 + 0.2);
    CHECK(b.opt->steps() == 7);
    CHECK(b.drop_gen.normal() == a.drop_gen.normal());  // the spare itself
    // the file is a plain safetensors file other tools can read
    auto raw = io::read_safetensors(p);
    CHECK(raw.tensors.at("model.fc1_weight").dtype == "F32");
    CHECK(raw.tensors.at("rng.dropout").dtype == "U64");
    CHECK(raw.metadata.at("format") == "moekd.checkpoint");
}

TEST_CASE("resuming from a checkpoint is bit-identical to never stopping", "[checkpoint][resume]") {
    const int total = 13;  // 5 steps per epoch: crosses two epoch boundaries
    tiny::Trainer ref(tiny::Config{});
    std::vector<float> losses;
    for (int i = 0; i < total; ++i) ref.step(), losses.push_back(ref.last_loss);
    const auto want = snapshot(ref);

    for (int k : {1, 5, 7, 12}) {
        INFO("stopped after step " << k);
        const std::string p = tmp("resume_" + std::to_string(k) + ".safetensors");
        {
            tiny::Trainer first(tiny::Config{});
            for (int i = 0; i < k; ++i) first.step();
            first.save(p);
            for (int i = 0; i < 3; ++i) first.step();  // work after the save is lost, as in a crash
        }
        tiny::Trainer second(tiny::Config{});  // fresh objects: different init would show
        second.load(p);
        std::vector<float> got_losses;
        for (int i = k; i < total; ++i) second.step(), got_losses.push_back(second.last_loss);
        CHECK(snapshot(second) == want);
        CHECK(got_losses == std::vector<float>(losses.begin() + k, losses.end()));
    }
    // the comparison is sharp: forgetting one generator's state breaks it
    const std::string p = tmp("resume_broken.safetensors");
    tiny::Trainer first(tiny::Config{});
    for (int i = 0; i < 7; ++i) first.step();
    first.save(p);
    tiny::Trainer second(tiny::Config{});
    second.load(p, /*skip_dropout_rng=*/true);
    for (int i = 7; i < total; ++i) second.step();
    CHECK(snapshot(second) != want);
}

TEST_CASE("corrupt, truncated and mismatched checkpoints are clear errors that load nothing", "[checkpoint][errors]") {
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 3; ++i) a.step();
    const std::string p = tmp("good.safetensors");
    a.save(p);
    const auto good = read_bytes(p);
    const std::string bad = tmp("bad.safetensors");
    tiny::Trainer b(tiny::Config{});
    const auto before = snapshot(b);
    auto load_b = [&] { b.load(bad); };

    SECTION("truncated") {
        write_bytes(bad, std::vector<uint8_t>(good.begin(), good.end() - 100));
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("truncated"));
        write_bytes(bad, std::vector<uint8_t>(good.begin(), good.begin() + 5));
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("too short"));
    }
    SECTION("a flipped bit in the data") {
        auto c = good;
        c[c.size() - 60] ^= 0x10;
        write_bytes(bad, c);
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("checksum mismatch") && Contains("the file is corrupt"));
    }
    SECTION("damaged metadata") {
        auto c = good;
        replace_once(c, "\"step\":\"3\"", "\"step\":\"x\"");
        write_bytes(bad, c);
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("entry 'step'") && Contains("not an integer"));
        c = good;
        replace_once(c, "\"format\":\"moekd.checkpoint\"", "\"format\":\"moekd.checkpoinT\"");
        write_bytes(bad, c);
        CHECK_THROWS_WITH(load_b(), Contains("entry 'format'"));
        c = good;
        replace_once(c, "\"crc32.model.fc1_bias\"", "\"crc32.model.fc1_bia_\"");
        write_bytes(bad, c);
        CHECK_THROWS_WITH(load_b(), Contains("entry 'model.fc1_bias': no checksum"));
    }
    SECTION("not a checkpoint at all") {
        io::write_safetensors(bad, std::map<std::string, Tensor<float>>{{"w", Tensor<float>::ones({2})}});
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("entry 'format'") && Contains("missing"));
    }
    SECTION("a different model") {
        tiny::Config c;
        c.hidden = 12;
        tiny::Trainer other(c);
        other.save(bad);
        CHECK_THROWS_WITH(load_b(), Contains(bad) && Contains("does not fit") &&
                                        Contains("model.fc1_weight: module (16, 8) vs file (12, 8)"));
    }
    SECTION("a different dtype") {
        CHECK_THROWS_WITH(io::read_checkpoint<double>(p), Contains("F32 tensors but is being loaded as F64"));
    }
    SECTION("a different optimizer or generators") {
        optim::SGD<float> sgd(optim::decay_groups(b.model->parameters(), 0.1, 0.0), 0.9);
        CHECK_THROWS_WITH(io::load_checkpoint<float>(p, *b.model, &sgd, {{"dropout", &b.drop_gen}, {"shuffle", &b.shuffle_gen}}),
                          Contains("entry 'optim.type'"));
        CHECK_THROWS_WITH(io::load_checkpoint<float>(p, *b.model, b.opt.get(), {{"dropout", &b.drop_gen}}),
                          Contains("entry 'rng.shuffle': no generator of that name"));
        Generator extra;
        CHECK_THROWS_WITH(io::load_checkpoint<float>(p, *b.model, b.opt.get(),
                                                     {{"dropout", &b.drop_gen}, {"shuffle", &b.shuffle_gen}, {"x", &extra}}),
                          Contains("entry 'rng.x' is missing"));
        CHECK_THROWS_WITH(io::load_checkpoint<float>(p, *b.model, nullptr, {{"dropout", &b.drop_gen}, {"shuffle", &b.shuffle_gen}}),
                          Contains("holds optimizer state but no optimizer"));
    }
    SECTION("an optimizer slot that fits no parameter is caught before the model is touched") {
        auto ck = io::read_checkpoint<float>(p);
        ck.optimizer["state.0.exp_avg"] = Tensor<float>::zeros({3});
        CHECK_THROWS_WITH(io::apply_checkpoint<float>(ck, p, *b.model, b.opt.get(),
                                                      {{"dropout", &b.drop_gen}, {"shuffle", &b.shuffle_gen}}),
                          Contains("entry 'optim.state.0.exp_avg' has shape (3,) but parameter 0 has shape (16, 8)"));
    }
    // whatever failed, b is exactly as it was
    CHECK(snapshot(b) == before);
}

TEST_CASE("a failed write leaves the previous checkpoint intact", "[checkpoint][atomic]") {
    tiny::Trainer a(tiny::Config{});
    a.step();
    const std::string p = tmp("survive.safetensors");
    a.save(p);
    const auto old = read_bytes(p);
    for (int i = 0; i < 3; ++i) a.step();

    SECTION("the temp file cannot be created") {
        const std::string blocker = p + ".tmp." + std::to_string(::getpid());
        fs::create_directories(blocker);  // open(O_CREAT) of a directory fails
        CHECK_THROWS_WITH(a.save(p), Contains("cannot create"));
        fs::remove(blocker);
    }
    SECTION("the disk fills up half-way through the write") {
        // RLIMIT_FSIZE makes write() fail with EFBIG after 1000 bytes (SIGXFSZ ignored).
        auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit saved{};
        ::getrlimit(RLIMIT_FSIZE, &saved);
        rlimit lim = saved;
        lim.rlim_cur = 1000;
        ::setrlimit(RLIMIT_FSIZE, &lim);
        std::string err;
        try {
            a.save(p);
        } catch (const Error& e) {
            err = e.what();
        }
        ::setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, old_handler);
        CHECK_THAT(err, Contains("failed") && Contains("untouched"));
        CHECK(!fs::exists(p + ".tmp." + std::to_string(::getpid())));
    }
    SECTION("the writer is killed: a partial temp file is ignored, and cleaned by the next rotation") {
        const std::string dir = tmp("rot_killed");
        fs::remove_all(dir);
        a.save_rotating(dir, 3);
        const std::string newest = io::latest_checkpoint(dir);
        // a dead process's half-written temp file
        const pid_t child = ::fork();
        if (child == 0) ::_exit(0);
        ::waitpid(child, nullptr, 0);
        const std::string partial = io::checkpoint_path(dir, 99) + ".tmp." + std::to_string(child);
        write_bytes(partial, std::vector<uint8_t>(old.begin(), old.begin() + 50));
        CHECK(io::latest_checkpoint(dir) == newest);
        tiny::Trainer b(tiny::Config{});
        b.load(io::latest_checkpoint(dir));
        CHECK(b.st.step == 4);
        a.step();
        a.save_rotating(dir, 3);
        CHECK(!fs::exists(partial));
    }
    SECTION("a bad argument fails before anything is written") {
        CHECK_THROWS_WITH(io::save_checkpoint<float>(p, *a.model, a.opt.get(), {{"g", nullptr}}, a.st),
                          Contains("generator 'g' is null"));
    }
    CHECK(read_bytes(p) == old);
    tiny::Trainer b(tiny::Config{});
    b.load(p);
    CHECK(b.st.step == 1);
}

TEST_CASE("a flipped character in the metadata is caught, naming the file", "[checkpoint][errors]") {
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 3; ++i) a.step();
    a.st.extra["stage.phase"] = "joint";
    const std::string p = tmp("meta.safetensors");
    a.save(p);
    const auto good = read_bytes(p);
    const std::string bad = tmp("meta_bad.safetensors");
    tiny::Trainer b(tiny::Config{});
    const auto before = snapshot(b);
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"\"step\":\"3\"", "\"step\":\"4\""},                     // resumes from the wrong step
             {"\"epoch\":\"0\"", "\"epoch\":\"1\""},                   // or the wrong data position
             {"\"extra.stage.phase\":\"joint\"", "\"extra.stage.phase\":\"jOint\""},  // wrong stage
             {"\"format_version\":\"2\"", "\"format_version\":\"1\""},  // a v2 file posing as v1
             {"\"shape\":[16,8]", "\"shape\":[8,16]"}}) {               // a transposed tensor
        INFO(from << " -> " << to);
        auto c = good;
        replace_once(c, from, to);
        write_bytes(bad, c);
        CHECK_THROWS_WITH(b.load(bad), Contains("checkpoint '" + bad + "'") && Contains("header_crc32") &&
                                           Contains("checksum mismatch") && Contains("step, epoch"));
        CHECK_THAT(io::checkpoint_problem(bad), Contains("checksum mismatch"));
    }
    auto c = good;
    replace_once(c, "\"header_crc32\"", "\"header_crc33\"");  // the checksum itself removed
    write_bytes(bad, c);
    CHECK_THROWS_WITH(b.load(bad), Contains(bad) && Contains("entry 'header_crc32': missing"));
    CHECK(snapshot(b) == before);  // nothing was loaded
    CHECK(io::checkpoint_problem(p).empty());
    b.load(p);
    CHECK(b.st.step == 3);
    CHECK(b.st.extra.at("stage.phase") == "joint");
}

TEST_CASE("a checkpoint from before metadata checksums (version 1) loads with a warning", "[checkpoint]") {
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 2; ++i) a.step();
    const std::string p = tmp("v1.safetensors");
    a.save(p);
    rewrite_metadata(p, [](auto& m) {
        m.erase("header_crc32");
        m["format_version"] = "1";
    });
    tiny::Trainer b(tiny::Config{});
    const std::string err = capture_stderr([&] { b.load(p); });
    CHECK(b.st.step == 2);
    CHECK_THAT(err, Contains("warning: checkpoint '" + p + "' has format_version 1") && Contains("cannot be verified"));
    CHECK(io::checkpoint_problem(p).empty());
    rewrite_metadata(p, [](auto& m) { m["format_version"] = "3"; });
    CHECK_THROWS_WITH(b.load(p), Contains("entry 'format_version'") && Contains("not supported"));
}

TEST_CASE("latest_checkpoint skips a corrupt newest checkpoint and says which it takes", "[checkpoint][resume]") {
    const std::string dir = tmp("rot_corrupt");
    fs::remove_all(dir);
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 3; ++i) {
        a.step();
        a.save_rotating(dir, 3);
    }
    const std::string newest = io::checkpoint_path(dir, 3), previous = io::checkpoint_path(dir, 2);
    REQUIRE(io::latest_checkpoint(dir) == newest);
    auto c = read_bytes(newest);
    replace_once(c, "\"step\":\"3\"", "\"step\":\"9\"");
    write_bytes(newest, c);
    std::string got;
    const std::string err = capture_stderr([&] { got = io::latest_checkpoint(dir); });
    CHECK(got == previous);
    CHECK_THAT(err, Contains("'" + newest + "' is corrupt") && Contains("header_crc32") &&
                        Contains("using the previous intact checkpoint '" + previous + "' (step 2)"));
    tiny::Trainer b(tiny::Config{});
    b.load(got);
    CHECK(b.st.step == 2);
    // a truncated one is skipped the same way; none intact at all is an error naming the folder
    write_bytes(previous, std::vector<uint8_t>(c.begin(), c.begin() + 100));
    CHECK(capture_stderr([&] { got = io::latest_checkpoint(dir); }).find("'" + previous + "' is corrupt") != std::string::npos);
    CHECK(got == io::checkpoint_path(dir, 1));
    write_bytes(got, std::vector<uint8_t>(c.begin(), c.begin() + 7));
    std::string what;
    capture_stderr([&] {
        try {
            io::latest_checkpoint(dir);
        } catch (const Error& e) {
            what = e.what();
        }
    });
    CHECK_THAT(what, Contains("no intact checkpoint in '" + dir + "'") && Contains("3 found"));
}

TEST_CASE("rotation keeps the newest N checkpoints", "[checkpoint]") {
    const std::string dir = tmp("rot");
    fs::remove_all(dir);
    CHECK(io::latest_checkpoint(dir).empty());
    tiny::Trainer a(tiny::Config{});
    for (int i = 0; i < 6; ++i) {
        a.step();
        CHECK(a.save_rotating(dir, 2) == io::checkpoint_path(dir, a.st.step));
    }
    auto all = io::list_checkpoints(dir);
    REQUIRE(all.size() == 2);
    CHECK(all[0].first == 5);
    CHECK(all[1].first == 6);
    CHECK(io::latest_checkpoint(dir) == io::checkpoint_path(dir, 6));
    CHECK(fs::path(io::checkpoint_path(dir, 6)).filename() == "ckpt-0000000006.safetensors");
}
