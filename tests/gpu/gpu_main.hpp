// gpu_main.hpp — the main() the tests/gpu programs share. Without arguments the [cuda] cases run
// on a device (exit 77, ctest's "skipped", where there is none); with --no-device first, the
// [nodevice] cases run where there is no device (77 where there is one). A test-name filter
// given on the command line replaces the tag. `after` runs once the session ends (a program's
// error summary); the session's time is printed last.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <moekd/cuda.hpp>

namespace moekd::test {

template <class After>
int gpu_test_main(int argc, char** argv, After after) {
    const bool no_device_mode = argc > 1 && std::strcmp(argv[1], "--no-device") == 0;
    const int n = cuda::device_count();
    std::vector<char*> args{argv[0]};
    std::string tags;
    if (no_device_mode) {
        if (n > 0) {
            std::cout << "SKIPPED: a CUDA device is present; the no-device checks only apply without one\n";
            return 77;
        }
        tags = "[nodevice]";
        for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    } else {
        if (n == 0) {
            std::cout << "SKIPPED: no CUDA device: " << cuda::no_device_reason() << "\n";
            return 77;
        }
        std::cout << cuda::build_info() << "\n";
        tags = "[cuda]";
        for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
    }
    const bool has_filter = std::any_of(args.begin() + 1, args.end(), [](const char* s) { return s[0] != '-'; });
    if (!has_filter) args.push_back(tags.data());
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = Catch::Session().run(static_cast<int>(args.size()), args.data());
    after();
    std::cout << "time: " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
    return rc;
}

inline int gpu_test_main(int argc, char** argv) {
    return gpu_test_main(argc, argv, [] {});
}

}  // namespace moekd::test
