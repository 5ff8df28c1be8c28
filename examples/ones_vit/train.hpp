// train.hpp — the training side of the OneS example: batches of Fashion-MNIST images with light
// augmentation, the training loop (cross-entropy, optionally + knowledge distillation from a
// frozen teacher: L = alpha * CE + (1 - alpha) * KD, OneS eq. 15-17), LAMB with linear warmup and
// decay, test accuracy, inference throughput, and routing frequencies of the teacher.
// Under mpirun (TrainOptions::comm with size N > 1) training is data parallel: each rank takes its
// --batch images of every global batch of N * batch (same shuffle everywhere, its own
// augmentation draws), gradients are averaged with dist::DataParallel before clipping and the
// LAMB step, and test accuracy is scored in shards and summed.
// On the GPU (--device cuda: the models were moved with .to(Device::CUDA)) batches are made on the
// CPU and moved to the model's device; logits come back to the host only where they are read
// (accuracy), losses with .item().
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/data/idx.hpp>
#include <moekd/dist/data_parallel.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>

#include "widenet.hpp"

namespace ones_vit {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Per-channel pixel mean and standard deviation of the [0, 1] training images: Fashion-MNIST
/// (1 channel) and CIFAR-10 (3 channels, the usual published values).
constexpr float kPixelMean = 0.2860f, kPixelStd = 0.3530f;
constexpr float kCifarMean[3] = {0.4914f, 0.4822f, 0.4465f}, kCifarStd[3] = {0.2470f, 0.2435f, 0.2616f};
inline float pixel_mean(int64_t C, int64_t c) { return C == 3 ? kCifarMean[c] : kPixelMean; }
inline float pixel_std(int64_t C, int64_t c) { return C == 3 ? kCifarStd[c] : kPixelStd; }

/// A crop box in pixels of an H x W image: rows [y0, y0 + h), columns [x0, x0 + w).
struct CropBox {
    int64_t y0 = 0, x0 = 0, h = 0, w = 0;
};

/// The Inception-style crop ("Inception-style pre-processing", OneS L. 214; torchvision's
/// RandomResizedCrop, scale (scale_min, 1), ratio (3/4, 4/3)): a box of a uniform fraction of the
/// area and a log-uniform aspect ratio at a uniform position, ten tries, else the whole image (the
/// fallback of a square image; torchvision's is a centre crop at the clamped ratio, the same here).
inline CropBox inception_box(int64_t H, int64_t W, double scale_min, Generator& gen) {
    const double lo = std::log(3.0 / 4.0), hi = std::log(4.0 / 3.0);
    for (int attempt = 0; attempt < 10; ++attempt) {
        const double area = double(H * W) * (scale_min + (1.0 - scale_min) * gen.uniform());
        const double ratio = std::exp(lo + (hi - lo) * gen.uniform());
        const int64_t w = std::llround(std::sqrt(area * ratio)), h = std::llround(std::sqrt(area / ratio));
        if (w > 0 && w <= W && h > 0 && h <= H) {
            const int64_t y0 = gen.randint(0, H - h + 1);
            return {y0, gen.randint(0, W - w + 1), h, w};
        }
    }
    return {0, 0, H, W};
}

/// Samples the box b of an H x W plane `src` back to H x W, bilinear with half-pixel centres
/// (align_corners false), edges clamped to the box (the crop, then the resize, as torchvision).
inline void resize_box(const float* src, int64_t H, int64_t W, const CropBox& b, float* dst) {
    for (int64_t y = 0; y < H; ++y) {
        const double fy = std::clamp((double(y) + 0.5) * double(b.h) / double(H) - 0.5, 0.0, double(b.h - 1));
        const int64_t y1 = int64_t(fy), y2 = std::min(y1 + 1, b.h - 1);
        const float ty = float(fy - double(y1));
        for (int64_t c = 0; c < W; ++c) {
            const double fx = std::clamp((double(c) + 0.5) * double(b.w) / double(W) - 0.5, 0.0, double(b.w - 1));
            const int64_t x1 = int64_t(fx), x2 = std::min(x1 + 1, b.w - 1);
            const float tx = float(fx - double(x1));
            auto at = [&](int64_t yy, int64_t xx) { return src[(b.y0 + yy) * W + b.x0 + xx]; };
            const float top = at(y1, x1) + tx * (at(y1, x2) - at(y1, x1));
            const float bot = at(y2, x1) + tx * (at(y2, x2) - at(y2, x1));
            dst[y * W + c] = top + ty * (bot - top);
        }
    }
}

/// Images idx[from .. from + n) as (n, C, H, W) (C = 1 for (N, H, W) sets), normalised per channel
/// by pixel_mean / pixel_std, and their labels. augment (gen not null): with crop_scale > 0 first
/// an Inception-style crop (inception_box, resized back), then a random shift of up to `shift`
/// pixels each way (background fill) and a random horizontal flip, drawn from gen (crop_scale 0
/// draws nothing for the crop, so the other augmentations draw what they drew before it existed).
inline Tensor<float> make_batch(const data::ImageSet& s, const std::vector<int64_t>& idx, size_t from, size_t n,
                                Tensor<int64_t>& labels, Generator* gen, int shift, double crop_scale = 0) {
    const bool planar = s.images.dim() == 4;
    const int64_t C = planar ? s.images.size(1) : 1, H = s.images.size(-2), W = s.images.size(-1);
    Tensor<float> x = Tensor<float>::empty({int64_t(n), C, H, W});
    labels = Tensor<int64_t>::empty({int64_t(n)});
    std::vector<float> cropped;  // one plane resized from its crop box (reused by every image)
    for (size_t i = 0; i < n; ++i) {
        const int64_t r = idx[from + i];
        labels.data()[i] = s.labels.data()[r];
        int64_t dy = 0, dx = 0;
        bool flip = false;
        CropBox box{0, 0, H, W};
        if (gen) {
            if (crop_scale > 0) box = inception_box(H, W, crop_scale, *gen);
            dy = gen->randint(-shift, shift + 1), dx = gen->randint(-shift, shift + 1);
            flip = gen->randint(0, 2) == 1;
        }
        for (int64_t ch = 0; ch < C; ++ch) {
            const float mean = pixel_mean(C, ch), sd = pixel_std(C, ch);
            const float* src = s.images.data() + (r * C + ch) * H * W;
            if (box.h != H || box.w != W) {  // the crop, resized back: then shifted and flipped as any image
                cropped.resize(size_t(H * W));
                resize_box(src, H, W, box, cropped.data());
                src = cropped.data();
            }
            float* dst = x.data() + (int64_t(i) * C + ch) * H * W;
            std::fill_n(dst, H * W, -mean / sd);  // background (shifted-in pixels)
            for (int64_t y = 0; y < H; ++y) {
                const int64_t sy = y - dy;
                if (sy < 0 || sy >= H) continue;
                for (int64_t c = 0; c < W; ++c) {
                    int64_t sx = c - dx;
                    if (sx < 0 || sx >= W) continue;
                    if (flip) sx = W - 1 - sx;
                    dst[y * W + c] = (src[sy * W + sx] - mean) / sd;
                }
            }
        }
    }
    return x;
}

/// Mixup of a batch with itself in reverse order (timm's batch mode): x = lam x + (1 - lam) x_rev,
/// lam ~ U(0, 1) (= Beta(1, 1): our choice, the paper gives only the probability, Table 6 L. 420).
/// Returns lam, and y_rev in `rev` (the CE is then lam CE(y) + (1 - lam) CE(y_rev)).
inline double mix_batch(Tensor<float>& x, const Tensor<int64_t>& y, Tensor<int64_t>& rev, Generator& gen) {
    const int64_t n = x.size(0), per = x.numel() / std::max<int64_t>(n, 1);
    const double lam = gen.uniform();
    Tensor<float> m = Tensor<float>::empty(x.shape());
    rev = Tensor<int64_t>::empty({n});
    for (int64_t i = 0; i < n; ++i) {
        const float* a = x.data() + i * per;
        const float* b = x.data() + (n - 1 - i) * per;
        float* d = m.data() + i * per;
        for (int64_t k = 0; k < per; ++k) d[k] = float(lam) * a[k] + float(1.0 - lam) * b[k];
        rev.data()[i] = y.data()[n - 1 - i];
    }
    x = m;
    return lam;
}

/// Test accuracy of a model on the first `limit` images (eval mode, no autograd). With a
/// communicator each rank scores its shard and the counts are summed (collective).
inline double accuracy(WideNetViT<float>& m, const data::ImageSet& s, int64_t limit, int64_t batch = 500,
                       dist::Communicator* comm = nullptr) {
    NoGrad ng;
    m.eval();
    const Device dev = m.device();
    const int64_t n = std::min<int64_t>(limit, s.size());
    const dist::Range mine = comm ? dist::shard_range(n, comm->rank(), comm->size()) : dist::Range{0, n};
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    int64_t correct = 0;
    for (int64_t from = mine.begin; from < mine.end; from += batch) {
        const size_t b = size_t(std::min(batch, mine.end - from));
        Tensor<int64_t> y;
        const Tensor<float> logits =
            m.forward(make_batch(s, idx, size_t(from), b, y, nullptr, 0).to(dev)).to(Device::CPU);
        const int64_t C = logits.size(1);
        for (size_t i = 0; i < b; ++i) {
            const float* row = logits.data() + int64_t(i) * C;
            correct += (std::max_element(row, row + C) - row) == y.data()[i];
        }
    }
    m.train();
    if (comm) comm->all_reduce(&correct, 1, dist::ReduceOp::Sum);
    return double(correct) / double(n);
}

/// Inference throughput in images/s: forward passes over `n` test images in batches of `batch`,
/// best of `reps` timed passes after one warm-up pass.
inline double throughput(WideNetViT<float>& m, const data::ImageSet& s, int64_t n, int64_t batch, int reps = 3) {
    NoGrad ng;
    m.eval();
    n = std::min<int64_t>(n, s.size());
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::vector<Tensor<float>> xs;
    for (int64_t from = 0; from < n; from += batch) {
        Tensor<int64_t> y;
        xs.push_back(make_batch(s, idx, size_t(from), size_t(std::min(batch, n - from)), y, nullptr, 0).to(m.device()));
    }
    double best = 0;
    for (int r = 0; r <= reps; ++r) {
        const auto t0 = Clock::now();
        Tensor<float> last;
        for (auto& x : xs) last = m.forward(x);
        if (last.defined()) (void)last.to(Device::CPU);  // waits for the device (a no-op on the CPU)
        const double ips = double(n) / seconds_since(t0);
        if (r > 0) best = std::max(best, ips);  // r = 0 warms up
    }
    m.train();
    return best;
}

/// Share of the teacher's expert assignments that went to each expert on the first `limit`
/// training images (eval routing, summed over depth): (E), sums to 1.
inline std::vector<double> routing_frequency(WideNetViT<float>& teacher, const data::ImageSet& s, int64_t limit) {
    NoGrad ng;
    teacher.eval();
    const int64_t n = std::min<int64_t>(limit, s.size());
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::vector<double> f(size_t(teacher.config().experts), 0.0);
    for (int64_t from = 0; from < n; from += 500) {
        Tensor<int64_t> y;
        const auto out = teacher.forward_with_aux(
            make_batch(s, idx, size_t(from), size_t(std::min<int64_t>(500, n - from)), y, nullptr, 0).to(teacher.device()));
        for (size_t e = 0; e < f.size(); ++e) f[e] += double(out.expert_counts[e]);
    }
    teacher.train();
    const double tot = std::accumulate(f.begin(), f.end(), 0.0);
    for (auto& v : f) v = tot > 0 ? v / tot : 1.0 / double(f.size());
    return f;
}

struct TrainOptions {
    int epochs = 3;
    int64_t batch = 128, train_limit = 60000, test_limit = 10000;
    // warmup_frac: the paper's 30 of 300 epochs (Table 6, L. 413-414); main.cpp sets it for every run
    double lr = 5e-3, weight_decay = 0.01, warmup_frac = 0.1, clip = 1.0;
    int shift = 0;                  // augmentation: max shift in pixels each way
    double crop_scale = 0;          // augmentation: Inception-style crop of area >= this fraction (0: none)
    bool augment = true;
    double alpha = 0.25;            // weight of CE when distilling (paper, soft KD: 0.25, L. 214; hard: 0.5, L. 180)
    bool hard_kd = false;           // hard_distill instead of soft_distill
    double temperature = 1.0;
    double label_smoothing = 0.0;   // of the CE term
    double mixup = 0.0;             // probability that a batch is mixed (see mix_batch)
    uint64_t data_seed = 1;         // shuffling and augmentation (same for every run: fair comparison)
    Precision precision = Precision::fp32;  // of the training step's products (the one that runs here)
    std::shared_ptr<dist::Communicator> comm;  // data parallel when size() > 1 (null: one process)
};

struct EpochRecord {
    int epoch = 0;
    double train_loss = 0, test_acc = 0, seconds = 0;
};

/// Trains `m` (teacher may be null: cross-entropy only; otherwise distillation from it, frozen).
/// Calls log(record) after every epoch. Returns the per-epoch records (epoch 0 = before training).
inline std::vector<EpochRecord> train_model(const std::string& name, WideNetViT<float>& m,
                                            WideNetViT<float>* teacher, const data::ImageSet& train,
                                            const data::ImageSet& test, const TrainOptions& o,
                                            const std::function<void(const EpochRecord&)>& log) {
    dist::Communicator* comm = o.comm && o.comm->size() > 1 ? o.comm.get() : nullptr;
    const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
    const Device dev = m.device();  // where the batches go (the model was moved before training)
    std::vector<EpochRecord> hist;
    hist.push_back({0, 0.0, accuracy(m, test, o.test_limit, 500, comm), 0.0});
    log(hist.back());
    if (o.epochs <= 0) return hist;
    const int64_t n = std::min<int64_t>(o.train_limit, train.size());
    const int64_t global_batch = o.batch * ranks;
    const int64_t steps_per_epoch = n / global_batch, total = steps_per_epoch * o.epochs;
    MOEKD_CHECK(steps_per_epoch > 0, name, ": --train-limit ", n, " is smaller than one batch of ", o.batch, " x ",
                ranks, " rank(s)");
    std::unique_ptr<dist::DataParallel<float>> dp;
    if (comm) {  // same model on every rank, starting from rank 0's weights
        std::vector<std::pair<std::string, Tensor<float>>> trainable;
        for (auto& [pn, p] : m.named_parameters())
            if (p.requires_grad()) trainable.emplace_back(pn, p);
        dist::check_same_config(*comm, trainable, name + " batch=" + std::to_string(o.batch) + " lr=" + std::to_string(o.lr));
        dp = std::make_unique<dist::DataParallel<float>>(o.comm, trainable);
    }
    Generator aug_gen(o.data_seed * 7919ULL + uint64_t(rank) + 1);  // per-rank augmentation (ranks > 1)
    optim::LAMB<float> opt(optim::decay_groups(m.parameters(), o.lr, o.weight_decay));  // after m.to(device)
    const int64_t warmup = int64_t(o.warmup_frac * double(total));
    Generator gen(o.data_seed);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    if (teacher) teacher->eval();
    const bool tty = isatty(fileno(stderr)) && rank == 0;
    int64_t step = 0;
    m.train();
    for (int epoch = 1; epoch <= o.epochs; ++epoch) {
        for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(gen.randint(0, i + 1))]);
        const auto t0 = Clock::now();
        double loss_sum = 0;
        for (int64_t s = 0; s < steps_per_epoch; ++s) {
            Tensor<int64_t> y, y_rev;
            Generator& draw = comm ? aug_gen : gen;  // augmentation and mixup (per rank under mpirun)
            Tensor<float> x = make_batch(train, order, size_t(s * global_batch + rank * o.batch), size_t(o.batch), y,
                                         o.augment ? &draw : nullptr, o.shift, o.crop_scale);
            double lam = 1.0;
            if (o.mixup > 0 && draw.uniform() < o.mixup) lam = mix_batch(x, y, y_rev, draw);
            x = x.to(dev);
            y = y.to(dev);
            Autocast autocast(o.precision, dev);  // this step's products (the teacher's too); AdamW stays fp32
            const auto fwd = m.forward_with_aux(x);
            const Tensor<float>& logits = fwd.logits;
            Tensor<float> loss = cross_entropy(logits, y, -100, o.label_smoothing);
            if (lam < 1.0)
                loss = loss * float(lam) + cross_entropy(logits, y_rev.to(dev), -100, o.label_smoothing) * float(1.0 - lam);
            if (teacher) {
                Tensor<float> tl;
                {
                    NoGrad ng;
                    tl = teacher->forward(x);
                }
                loss = ones::distill_objective(loss, logits, tl, o.alpha, o.temperature, o.hard_kd);
            }
            if (m.moe()) loss = loss + fwd.aux;
            const float l = loss.item();
            MOEKD_CHECK(std::isfinite(l), name, ": loss became ", l, " at epoch ", epoch, " step ", s,
                        ". HINT: lower --lr");
            opt.set_lr(optim::linear_warmup_decay_lr(++step, o.lr, warmup, total));
            opt.zero_grad();
            loss.backward();
            if (dp) dp->average_gradients();
            if (o.clip > 0) optim::clip_grad_norm(m.parameters(), o.clip);
            opt.step();
            loss_sum += l;
            if (tty && (s % 20 == 0 || s + 1 == steps_per_epoch)) {
                const int w = 30, done = int(w * (s + 1) / steps_per_epoch);
                std::fprintf(stderr, "\r  %-10s epoch %d/%d [%s%s] loss %.4f ", name.c_str(), epoch, o.epochs,
                             std::string(size_t(done), '#').c_str(), std::string(size_t(w - done), '.').c_str(),
                             loss_sum / double(s + 1));
            }
        }
        if (tty) std::fprintf(stderr, "\r%100s\r", "");
        if (comm) comm->all_reduce(&loss_sum, 1, dist::ReduceOp::Mean);
        EpochRecord r{epoch, loss_sum / double(steps_per_epoch), 0.0, seconds_since(t0)};
        r.test_acc = accuracy(m, test, o.test_limit, 500, comm);
        hist.push_back(r);
        log(r);
    }
    return hist;
}

}  // namespace ones_vit
