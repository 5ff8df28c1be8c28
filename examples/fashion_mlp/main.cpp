// fashion_mlp — the smallest end-to-end program (the first default job): a 2-layer MLP trained
// with moekd's autograd engine on real Fashion-MNIST (Debian's dataset-fashion-mnist).
//
//   fashion_mlp                     10 epochs on 60k images, test accuracy at the end
//   fashion_mlp --epochs 1 --train-limit 6000 --min-acc 0.7    quick run that must learn
//   mpirun -np 2 fashion_mlp --batch 64    data parallel: each rank takes 64 of every 128 images
//                                          (same steps as one process with --batch 128)
//   fashion_mlp --device cuda       the same run with the model and batches on the GPU: the same
//                                   ops, autograd and optimizer through moekd's CUDA backend
//                                   (built when MOEKD_CUDA is on; fashion_mlp_emu is the same
//                                   program on the emulated device, for CI). Without a GPU: a
//                                   one-line error naming the reason, exit 1.
//
// Model: x (B, 784) -> linear (784, H) -> relu -> linear (H, 10) -> cross-entropy.
// Optimiser: optim::SGD with momentum (v = mu v + g; p -= lr v), one fused update per tensor on
// the GPU.
// Under mpirun (built with moekd::mpi) every rank holds the model, shuffles with the same seed and
// takes its slice of each global batch of N * --batch images; gradients are averaged with
// dist::DataParallel; rank 0 alone prints and writes --save (through io::write_safetensors: a
// symlink is followed, a FIFO / device node / directory is refused, checked before training).
// Every numeric flag is range-checked (an error names the flag); every label must be in 0-9.
#include <CLI/CLI.hpp>

#include "../common/cli_checks.hpp"

#include <chrono>
#include <map>
#include <cstdio>
#include <numeric>

#include <moekd/data/idx.hpp>
#include <moekd/dist/data_parallel.hpp>
#include <moekd/dist/collective.hpp>
#include <moekd/dist/init.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/ops/loss.hpp>
#include <moekd/ops/matmul.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/tensor.hpp>
#if defined(MOEKD_CUDA) && MOEKD_CUDA
#include <moekd/cuda.hpp>  // the CUDA backend (or its emulation): fills the ops' device table
#endif

using namespace moekd;

namespace {

struct Mlp {
    Tensor<float> w1, b1, w2, b2;
    Mlp(int64_t in, int64_t hidden, int64_t out, Generator& gen) {
        // Kaiming-uniform-like init as torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        const double a1 = 1.0 / std::sqrt(double(in)), a2 = 1.0 / std::sqrt(double(hidden));
        w1 = Tensor<float>::rand({hidden, in}, gen, -a1, a1).requires_grad_();
        b1 = Tensor<float>::rand({hidden}, gen, -a1, a1).requires_grad_();
        w2 = Tensor<float>::rand({out, hidden}, gen, -a2, a2).requires_grad_();
        b2 = Tensor<float>::rand({out}, gen, -a2, a2).requires_grad_();
    }
    /// The weights on `dev` (drawn on the CPU, so a seed gives the same model on every device).
    void to(Device dev) {
        for (auto* p : params())
            if (p->device() != dev) *p = p->detach().to(dev).requires_grad_();
    }
    Tensor<float> forward(const Tensor<float>& x) const {  // x: (B, 784) -> logits (B, 10)
        return linear(relu(linear(x, w1, b1)), w2, b2);
    }
    std::vector<Tensor<float>*> params() { return {&w1, &b1, &w2, &b2}; }
    std::vector<std::pair<std::string, Tensor<float>>> named() const { return {{"w1", w1}, {"b1", b1}, {"w2", w2}, {"b2", b2}}; }
};

/// Rows `idx` of a (N, 28, 28) image tensor, flattened to (B, 784).
Tensor<float> gather_rows(const data::ImageSet& s, const std::vector<int64_t>& idx, size_t from, size_t n,
                          Tensor<int64_t>& labels) {
    const int64_t d = s.images.numel() / s.size();
    Tensor<float> x = Tensor<float>::empty({int64_t(n), d});
    labels = Tensor<int64_t>::empty({int64_t(n)});
    for (size_t i = 0; i < n; ++i) {
        const int64_t r = idx[from + i];
        std::copy_n(s.images.data() + r * d, d, x.data() + i * d);
        labels.data()[i] = s.labels.data()[r];
    }
    return x;
}

/// Test accuracy on the first `limit` images; each rank scores its shard, the counts are summed.
double accuracy(const Mlp& m, const data::ImageSet& s, int64_t limit, dist::Communicator& comm, Device dev) {
    NoGrad ng;
    const int64_t n = std::min<int64_t>(limit, s.size());
    const dist::Range mine = dist::shard_range(n, comm.rank(), comm.size());
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    int64_t correct = 0;
    for (int64_t from = mine.begin; from < mine.end; from += 1000) {
        const size_t b = std::min<int64_t>(1000, mine.end - from);
        Tensor<int64_t> y;
        Tensor<float> logits = m.forward(gather_rows(s, idx, from, b, y).to(dev)).to(Device::CPU);
        for (size_t i = 0; i < b; ++i) {
            const float* row = logits.data() + i * 10;
            correct += (std::max_element(row, row + 10) - row) == y.data()[i];
        }
    }
    comm.all_reduce(&correct, 1, dist::ReduceOp::Sum);
    return double(correct) / double(n);
}

}  // namespace

int main(int argc, char** argv) {
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);  // MpiComm under mpirun, else one process
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fashion_mlp: error: %s\n", e.what());
        return 1;
    }
    const bool main_rank = comm->rank() == 0;
    CLI::App app{"fashion_mlp: a 2-layer MLP on Fashion-MNIST, trained by moekd's autograd"};
    std::string dir = "/usr/share/datasets/fashion-mnist";
    int epochs = 10, batch = 128;
    int64_t hidden = 256, train_limit = 60000, test_limit = 10000;
    double lr = 0.05, momentum = 0.9, min_acc = 0.0;
    uint64_t seed = 1;
    app.add_option("--data", dir, "folder with the four Fashion-MNIST IDX files (.gz)")->capture_default_str();
    app.add_option("--epochs", epochs, "passes over the training set")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--batch", batch, "images per step (per rank under mpirun)")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--hidden", hidden, "hidden width")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--lr", lr, "SGD learning rate")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--momentum", momentum, "SGD momentum")->capture_default_str()->check(cli_checks::in(0.0, 0.999));
    app.add_option("--seed", seed, "random seed (init and shuffling)")->capture_default_str()->check(cli_checks::seed());
    app.add_option("--train-limit", train_limit, "use the first N training images")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--test-limit", test_limit, "evaluate on the first N test images")->capture_default_str()->check(cli_checks::positive());
    app.add_option("--min-acc", min_acc, "exit with status 2 if the final test accuracy is lower")->capture_default_str()->check(cli_checks::in(0.0, 1.0));
    std::string device_name = "cpu";
    app.add_option("--device", device_name, "where the model trains: cpu, or cuda (the GPU)")
        ->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda"}));
    std::string save;
    app.add_option("--save", save, "write the trained weights (w1, b1, w2, b2) to this .safetensors file (rank 0)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }

    const Device dev = device_name == "cuda" ? Device::CUDA : Device::CPU;
    if (dev == Device::CUDA) {  // refused before any data is read: say why in one line
#if defined(MOEKD_CUDA) && MOEKD_CUDA
        if (cuda::device_count() == 0) {
            if (main_rank) std::fprintf(stderr, "fashion_mlp: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
            return 1;
        }
        if (comm->size() > 1) {
            if (main_rank) std::fprintf(stderr, "fashion_mlp: error: --device cuda runs as one process (data parallel over NCCL is not wired into fashion_mlp yet)\n");
            return 1;
        }
#else
        if (main_rank) std::fprintf(stderr, "fashion_mlp: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
        return 1;
#endif
    }
    try {
        const auto t0 = std::chrono::steady_clock::now();
        if (main_rank && !save.empty()) (void)io::resolve_write_target(save);  // refused now, not after training
        data::ImageSet train = data::read_idx_pair(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz", 10);
        data::ImageSet test = data::read_idx_pair(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz", 10);
        const int64_t n_train = std::min<int64_t>(train_limit, train.size());
        const int ranks = comm->size();
        const int64_t global_batch = int64_t(batch) * ranks;
        if (main_rank)
            std::printf("fashion_mlp: %lld train / %lld test images from %s, hidden %lld, batch %d x %d rank(s), lr %g, on %s\n",
                        (long long)n_train, (long long)std::min<int64_t>(test_limit, test.size()), dir.c_str(),
                        (long long)hidden, batch, ranks, lr, device_name.c_str());

        Generator gen(seed);
        Mlp model(784, hidden, 10, gen);
        // Same model and options on every rank? Then start from rank 0's weights.
        dist::check_same_config(*comm, model.named(),
                                "fashion_mlp hidden=" + std::to_string(hidden) + " batch=" + std::to_string(batch) +
                                    " lr=" + std::to_string(lr) + " momentum=" + std::to_string(momentum) +
                                    " epochs=" + std::to_string(epochs) + " seed=" + std::to_string(seed) +
                                    " train=" + std::to_string(n_train));
        dist::DataParallel<float> dp(comm, model.named());  // one process on the GPU (checked above)
        model.to(dev);
        std::vector<Tensor<float>> weights;
        for (auto* p : model.params()) weights.push_back(*p);
        optim::SGD<float> opt({optim::ParamGroup<float>{weights, lr}}, momentum);
        std::vector<int64_t> order(n_train);
        std::iota(order.begin(), order.end(), 0);

        for (int epoch = 1; epoch <= epochs; ++epoch) {
            for (int64_t i = n_train - 1; i > 0; --i) std::swap(order[i], order[gen.randint(0, i + 1)]);
            double loss_sum = 0;
            int64_t steps = 0;
            const auto te = std::chrono::steady_clock::now();
            // every rank walks the same shuffled order; it takes rows [rank B, (rank + 1) B) of each
            // global batch of N B images
            for (int64_t from = 0; from + global_batch <= n_train; from += global_batch) {
                Tensor<int64_t> y;
                Tensor<float> x = gather_rows(train, order, from + int64_t(comm->rank()) * batch, batch, y);
                Tensor<float> loss = cross_entropy(model.forward(x.to(dev)), y.to(dev));
                const float l = loss.item();
                MOEKD_CHECK(std::isfinite(l), "fashion_mlp: loss became ", l, " at epoch ", epoch, " step ", steps,
                            ". HINT: lower --lr");
                opt.zero_grad();
                loss.backward();
                dp.average_gradients();
                opt.step();  // v = mu v + g;  p -= lr v
                loss_sum += l;
                ++steps;
            }
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - te).count();
            comm->all_reduce(&loss_sum, 1, dist::ReduceOp::Mean);  // mean over ranks of the shard losses
            const double acc = accuracy(model, test, test_limit, *comm, dev);
            if (main_rank)
                std::printf("epoch %d  train loss %.4f  test acc %.4f  (%.0f images/s)\n", epoch, loss_sum / steps, acc,
                            steps * global_batch / secs);
            std::fflush(stdout);
        }
        const double acc = accuracy(model, test, test_limit, *comm, dev);
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (main_rank) {
            std::printf("final test accuracy %.4f after %d epoch(s), %.1f s\n", acc, epochs, total);
            if (!save.empty()) {
                std::map<std::string, Tensor<float>> w;
                for (auto& [n, t] : model.named()) w[n] = t;
                io::write_safetensors(save, w);
                std::printf("wrote %s\n", save.c_str());
            }
        }
        if (acc < min_acc) {  // the same acc on every rank: every rank exits 2
            if (main_rank) std::fprintf(stderr, "fashion_mlp: test accuracy %.4f is below --min-acc %.4f\n", acc, min_acc);
            return 2;
        }
    } catch (const std::exception& e) {
        return dist::report_error(*comm, "fashion_mlp", e);
    }
    return 0;
}
