// idx.hpp — reader for the IDX format of MNIST / Fashion-MNIST, plain or gzip-compressed.
//
// IDX: 2 zero bytes, a type byte (0x08 = unsigned byte), a rank byte, rank big-endian uint32
// sizes, then the data. Every header field and the data length are checked, so a truncated,
// corrupt or mislabelled file is a clear error naming the file, never a wrong tensor; a missing
// file or a directory in its place is named as such, and read_idx_pair checks every label
// against the number of classes (a label 12 of a 10-class set is an error naming file and index).
// Needs zlib (link ZLIB::ZLIB; the moekd target does).
#pragma once

#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "../io/read_file.hpp"

namespace moekd::data {

namespace detail {
/// Reads a whole file through zlib (which reads uncompressed files unchanged).
inline std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
    const std::string unreadable = io::unreadable_reason(path);  // "missing file", "is a directory, ..."
    MOEKD_CHECK(unreadable.empty(), "idx: cannot open '", path, "': ", unreadable);
    errno = 0;
    gzFile f = gzopen(path.c_str(), "rb");
    MOEKD_CHECK(f, "idx: cannot open '", path, "': ", errno ? std::strerror(errno) : "zlib could not open it");
    std::vector<uint8_t> out;
    uint8_t buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
    int err = 0;
    const char* what = gzerror(f, &err);
    const bool bad = n < 0 || (err != Z_OK && err != Z_STREAM_END);
    const std::string why = bad ? std::string(what ? what : "unknown zlib error") : "";
    gzclose(f);
    MOEKD_CHECK(!bad, "idx: '", path, "' is corrupt or truncated (zlib: ", why, ")");
    return out;
}
}  // namespace detail

/// Reads an unsigned-byte IDX file into a Tensor<uint8_t> of its stored shape.
/// `expect_rank` (1 for labels, 3 for images) is checked when non-zero.
inline Tensor<uint8_t> read_idx(const std::string& path, int expect_rank = 0) {
    const std::vector<uint8_t> b = detail::read_maybe_gzip(path);
    MOEKD_CHECK(b.size() >= 4, "idx: '", path, "' is too short for an IDX header (", b.size(), " bytes)");
    MOEKD_CHECK(b[0] == 0 && b[1] == 0, "idx: '", path, "' has a bad magic number (not an IDX file)");
    MOEKD_CHECK(b[2] == 0x08, "idx: '", path, "' holds element type 0x", std::hex, int(b[2]),
                " but only unsigned bytes (0x08) are supported");
    const int rank = b[3];
    MOEKD_CHECK(rank >= 1 && rank <= 4, "idx: '", path, "' has rank ", rank, " (expected 1 to 4)");
    MOEKD_CHECK(expect_rank == 0 || rank == expect_rank, "idx: '", path, "' has rank ", rank, ", expected ",
                expect_rank, expect_rank == 1 ? " (a label file)" : " (an image file)");
    MOEKD_CHECK(b.size() >= 4 + 4 * size_t(rank), "idx: '", path, "' is truncated inside its header");
    Shape shape;
    for (int i = 0; i < rank; ++i) {
        const uint8_t* p = b.data() + 4 + 4 * i;
        shape.push_back((int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | int64_t(p[3]));
    }
    const size_t header = 4 + 4 * size_t(rank);
    const int64_t n = moekd::numel(shape);
    MOEKD_CHECK(b.size() - header == size_t(n), "idx: '", path, "' declares shape ", shape, " (", n,
                " bytes of data) but holds ", b.size() - header, " bytes",
                b.size() - header < size_t(n) ? " (truncated)" : " (trailing data)");
    Tensor<uint8_t> t = Tensor<uint8_t>::empty(shape);
    std::copy(b.begin() + header, b.end(), t.data());
    return t;
}

/// A labelled image set: images (N, H, W) (IDX) or (N, C, H, W) (CIFAR) scaled to [0, 1], labels (N).
struct ImageSet {
    Tensor<float> images;
    Tensor<int64_t> labels;
    int64_t size() const { return labels.numel(); }
};

/// Reads an images + labels pair and checks they agree. num_classes > 0: every label must be in
/// [0, num_classes) (else an error naming the label file, the index and the label).
inline ImageSet read_idx_pair(const std::string& images_path, const std::string& labels_path,
                              int64_t num_classes = 0) {
    Tensor<uint8_t> img = read_idx(images_path, 3);
    Tensor<uint8_t> lab = read_idx(labels_path, 1);
    MOEKD_CHECK(img.shape()[0] == lab.shape()[0], "idx: '", images_path, "' holds ", img.shape()[0],
                " images but '", labels_path, "' holds ", lab.shape()[0], " labels");
    if (num_classes > 0)
        for (int64_t i = 0; i < lab.numel(); ++i)
            MOEKD_CHECK(int64_t(lab.data()[i]) < num_classes, "idx: '", labels_path, "': label ", int(lab.data()[i]),
                        " at index ", i, " is outside [0, ", num_classes, ") (", num_classes, " classes)");
    ImageSet s;
    s.images = Tensor<float>::empty(img.shape());
    for (int64_t i = 0; i < img.numel(); ++i) s.images.data()[i] = img.data()[i] / 255.0f;
    s.labels = cast<int64_t>(lab);
    return s;
}

}  // namespace moekd::data
