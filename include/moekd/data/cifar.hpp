// cifar.hpp — reader for the CIFAR-10 binary version (cifar-10-batches-bin), for users who have it.
//
// Each file is a sequence of 3073-byte records: one label byte (0-9), then 3072 pixel bytes, the
// 32x32 red plane, then green, then blue, each row-major. The training set is data_batch_1.bin ..
// data_batch_5.bin (10000 records each), the test set test_batch.bin. Files may be gzip'd (read
// through zlib like the IDX files). A size that is not a whole number of records, an empty file or
// a label above 9 is a clear error naming the file, never a wrong tensor.
#pragma once

#include <string>
#include <vector>

#include "idx.hpp"

namespace moekd::data {

inline constexpr int64_t kCifarSide = 32, kCifarChannels = 3, kCifarClasses = 10;
inline constexpr int64_t kCifarRecord = 1 + kCifarChannels * kCifarSide * kCifarSide;  // 3073 bytes

/// Reads CIFAR-10 binary files into one set: images (N, 3, 32, 32) scaled to [0, 1], labels (N).
inline ImageSet read_cifar10(const std::vector<std::string>& files) {
    MOEKD_CHECK(!files.empty(), "cifar10: no files given");
    std::vector<std::vector<uint8_t>> raw;
    int64_t n = 0;
    for (const auto& f : files) {
        raw.push_back(detail::read_maybe_gzip(f));
        const auto size = static_cast<int64_t>(raw.back().size());
        MOEKD_CHECK(size > 0 && size % kCifarRecord == 0, "cifar10: '", f, "' is ", size,
                    " bytes, not a whole number of ", kCifarRecord, "-byte records (truncated or not CIFAR-10 binary)");
        n += size / kCifarRecord;
    }
    ImageSet s;
    s.images = Tensor<float>::empty({n, kCifarChannels, kCifarSide, kCifarSide});
    s.labels = Tensor<int64_t>::empty({n});
    const int64_t px = kCifarRecord - 1;
    int64_t i = 0;
    for (size_t k = 0; k < raw.size(); ++k) {
        const auto& b = raw[k];
        for (size_t off = 0; off < b.size(); off += kCifarRecord, ++i) {
            const int64_t label = b[off];
            MOEKD_CHECK(label < kCifarClasses, "cifar10: '", files[k], "' record ", off / kCifarRecord, " has label ",
                        label, "; CIFAR-10 labels are 0-9");
            s.labels.data()[i] = label;
            float* dst = s.images.data() + i * px;
            for (int64_t j = 0; j < px; ++j) dst[j] = b[off + 1 + j] / 255.0f;
        }
    }
    return s;
}

/// The standard layout of cifar-10-batches-bin: data_batch_1..5.bin (train), test_batch.bin.
struct CifarSplits {
    ImageSet train, test;
};
inline CifarSplits read_cifar10_dir(const std::string& dir) {
    std::vector<std::string> train;
    for (int b = 1; b <= 5; ++b) train.push_back(dir + "/data_batch_" + std::to_string(b) + ".bin");
    return {read_cifar10(train), read_cifar10({dir + "/test_batch.bin"})};
}

}  // namespace moekd::data
