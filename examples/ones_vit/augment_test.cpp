// augment_test.cpp — the Inception-style crop of ones_vit's augmentation (train.hpp): the box
// stays inside the image with torchvision's scale and ratio ranges, the resize is bilinear with
// half-pixel centres (by-hand weights) and is the identity on the whole image, and a cropped batch
// holds only values between the image's own (bilinear weights are convex).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "train.hpp"

using namespace moekd;
using namespace ones_vit;

TEST_CASE("inception_box: inside the image, area fraction in [S, 1], aspect ratio in [3/4, 4/3]", "[ones_vit]") {
    Generator gen(3);
    const int64_t H = 224, W = 224;  // large enough that rounding moves area and ratio by < 2%
    int small = 0, large = 0;
    for (int i = 0; i < 4000; ++i) {
        const CropBox b = inception_box(H, W, 0.08, gen);
        REQUIRE(b.y0 >= 0);
        REQUIRE(b.x0 >= 0);
        REQUIRE(b.h > 0);
        REQUIRE(b.w > 0);
        REQUIRE(b.y0 + b.h <= H);
        REQUIRE(b.x0 + b.w <= W);
        const double area = double(b.h * b.w) / double(H * W), ratio = double(b.w) / double(b.h);
        CHECK(area >= 0.08 * 0.97);
        CHECK(area <= 1.0);
        CHECK(ratio >= 0.75 * 0.98);
        CHECK(ratio <= 4.0 / 3.0 * 1.02);
        small += area < 0.2, large += area > 0.9;
    }
    CHECK(small > 400);  // uniform in area: ~13% of the draws below 0.2 ...
    CHECK(large > 40);   // ... and some near the whole image (2-3%: most large boxes off ratio 1 do not fit)
    for (int i = 0; i < 100; ++i) {  // 28 x 28 (Fashion-MNIST): still inside
        const CropBox b = inception_box(28, 28, 0.08, gen);
        REQUIRE(b.y0 + b.h <= 28);
        REQUIRE(b.x0 + b.w <= 28);
    }
}

TEST_CASE("resize_box: bilinear with half-pixel centres, the identity on the whole image", "[ones_vit]") {
    const int64_t H = 4, W = 4;
    std::vector<float> img(H * W);
    for (int64_t i = 0; i < H * W; ++i) img[size_t(i)] = float(i * i % 7) + 0.25f * float(i);
    std::vector<float> out(H * W);
    resize_box(img.data(), H, W, {0, 0, H, W}, out.data());
    CHECK(out == img);  // exactly: every sample falls on a pixel centre
    // the 2 x 2 box at (1, 1) back to 4 x 4: per axis, source positions (c + 0.5) / 2 - 0.5 =
    // -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1), i.e. weights (1, 0), (.75, .25), (.25, .75), (0, 1)
    const double wt[4][2] = {{1, 0}, {0.75, 0.25}, {0.25, 0.75}, {0, 1}};
    resize_box(img.data(), H, W, {1, 1, 2, 2}, out.data());
    for (int64_t y = 0; y < 4; ++y)
        for (int64_t x = 0; x < 4; ++x) {
            double want = 0;
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 2; ++b) want += wt[y][a] * wt[x][b] * double(img[size_t((1 + a) * W + 1 + b)]);
            CHECK(double(out[size_t(y * W + x)]) == Approx(want).margin(1e-6));
        }
}

TEST_CASE("make_batch with the crop: values stay within the image's own range", "[ones_vit]") {
    const int64_t N = 6, H = 28, W = 28;
    data::ImageSet s;
    s.images = Tensor<float>::empty({N, H, W});
    s.labels = Tensor<int64_t>::zeros({N});
    for (int64_t i = 0; i < N * H * W; ++i) s.images.data()[i] = float((i * 37) % 256) / 255.0f;
    std::vector<int64_t> idx(N);
    for (int64_t i = 0; i < N; ++i) idx[size_t(i)] = i;
    const float lo = (0.0f - kPixelMean) / kPixelStd, hi = (1.0f - kPixelMean) / kPixelStd;
    Generator gen(5);
    Tensor<int64_t> y;
    bool changed = false;
    for (int rep = 0; rep < 20; ++rep) {
        const Tensor<float> x = make_batch(s, idx, 0, size_t(N), y, &gen, 0, 0.08);
        for (int64_t i = 0; i < x.numel(); ++i) {
            REQUIRE(x.data()[i] >= lo - 1e-5f);
            REQUIRE(x.data()[i] <= hi + 1e-5f);
        }
        Tensor<int64_t> y0;
        const Tensor<float> plain = make_batch(s, idx, 0, size_t(N), y0, nullptr, 0);
        changed = changed || !std::equal(x.data(), x.data() + x.numel(), plain.data());
    }
    CHECK(changed);
}
