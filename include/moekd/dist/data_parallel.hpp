// data_parallel.hpp — data-parallel training over a Communicator: every rank holds the whole
// model, reads its own shard of each batch, and gradients are averaged before the optimizer step,
// so N ranks with batch B each take the same steps as 1 rank with batch N*B (PyTorch DDP's idea,
// without the overlap of communication and backward).
//
//   auto comm = dist::init(argc, argv);
//   dist::check_same_config(*comm, model, config_string);  // same model on every rank?
//   dist::DataParallel<float> dp(comm, model);             // broadcasts rank 0's parameters
//   ... forward on this rank's shard; loss.backward();
//   dp.average_gradients();                                 // bucketed all-reduce (mean)
//   opt.step();
//
// Also here: shard_range (a contiguous share of N items) and fnv1a (the config hash, core/hash.hpp).
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/hash.hpp"
#include "../nn/module.hpp"
#include "communicator.hpp"

namespace moekd::dist {

// ---- sharding ----------------------------------------------------------------------------------
struct Range {
    int64_t begin = 0, end = 0;
    int64_t size() const { return end - begin; }
};

/// Rank `rank`'s contiguous share of n items: the first n % size ranks get one more.
inline Range shard_range(int64_t n, int rank, int size) {
    MOEKD_CHECK(n >= 0 && size >= 1 && rank >= 0 && rank < size, "shard_range: n ", n, ", rank ", rank, ", size ",
                size, " (need n >= 0 and 0 <= rank < size)");
    const int64_t base = n / size, extra = n % size;
    const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
    return {begin, begin + base + (rank < extra ? 1 : 0)};
}

/// Every size-th item starting at rank: does this rank own item i?
inline bool owns(int64_t i, int rank, int size) { return i % size == rank; }

// ---- config hash -------------------------------------------------------------------------------
/// 64-bit FNV-1a of a byte string (core/hash.hpp).
inline uint64_t fnv1a(std::string_view s, uint64_t h = kFnv1aOffset) { return fnv1a64(s, h); }

/// The text the config hash is taken of: the caller's config string, then one line per parameter,
/// "param <name> <shape>".
template <class T>
std::string describe_model(const std::vector<std::pair<std::string, Tensor<T>>>& params, const std::string& config) {
    std::ostringstream os;
    os << "config " << config << "\n";
    for (const auto& [name, t] : params) os << "param " << name << " " << t.shape() << "\n";
    return os.str();
}

namespace detail {
inline std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> out;
    std::string line;
    std::istringstream is(s);
    while (std::getline(is, line)) out.push_back(line);
    return out;
}
}  // namespace detail

/// Checks that every rank describes the same model: hash of `config` and of every parameter's name
/// and shape, compared with all_gather. Returns the hash when they agree; otherwise every rank
/// throws the same moekd::Error naming the first rank that differs from rank 0 and the first
/// line of the description where they differ. Collective: every rank must call it.
template <class T>
uint64_t check_same_config(Communicator& comm, const std::vector<std::pair<std::string, Tensor<T>>>& params,
                           const std::string& config = "") {
    const std::string desc = describe_model(params, config);
    const uint64_t h = fnv1a(desc);
    if (comm.size() == 1) return h;
    std::vector<uint64_t> all(comm.size());
    comm.all_gather(&h, all.data(), sizeof(uint64_t));
    int bad = -1;
    for (int r = 1; r < comm.size() && bad < 0; ++r)
        if (all[r] != all[0]) bad = r;
    if (bad < 0) return h;

    // Mismatch (every rank saw it): gather the descriptions to say what differs.
    int64_t len = int64_t(desc.size()), max_len = len;
    comm.all_reduce(&max_len, 1, ReduceOp::Max);
    std::string mine = desc;
    mine.resize(size_t(max_len), '\0');
    std::vector<char> buf(size_t(max_len) * comm.size());
    comm.all_gather(mine.data(), buf.data(), max_len);
    auto text = [&](int r) {
        std::string s(buf.data() + r * max_len, size_t(max_len));
        return s.substr(0, s.find('\0'));
    };
    const auto a = detail::split_lines(text(0)), b = detail::split_lines(text(bad));
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    const std::string la = i < a.size() ? "'" + a[i] + "'" : "nothing (" + std::to_string(a.size() - 1) + " parameters)";
    const std::string lb = i < b.size() ? "'" + b[i] + "'" : "nothing (" + std::to_string(b.size() - 1) + " parameters)";
    throw Error("check_same_config: rank " + std::to_string(bad) + " of " + std::to_string(comm.size()) +
                " has a different model/config than rank 0 (hash " + std::to_string(all[bad]) + " vs " +
                std::to_string(all[0]) + "); first difference at line " + std::to_string(i + 1) +
                " of the description: rank 0 has " + la + ", rank " + std::to_string(bad) + " has " + lb +
                ". HINT: start every rank with the same options and model code");
}

template <class T>
uint64_t check_same_config(Communicator& comm, const nn::Module<T>& model, const std::string& config = "") {
    return check_same_config(comm, model.named_parameters(), config);
}

// ---- data parallel -----------------------------------------------------------------------------
struct DataParallelOptions {
    double bucket_mb = 25.0;  // gradients are all-reduced in buckets of about this many MiB (DDP: 25)
    int root = 0;             // whose parameters every rank starts from
    bool broadcast = true;    // broadcast the root's parameters in the constructor
    bool check = true;        // check_same_config over the parameter names and shapes first
};

template <class T = float>
class DataParallel {
public:
    /// `params`: the parameters to keep in sync (a shared tensor is kept once). Expert-parallel
    /// code passes only the dense ones.
    DataParallel(std::shared_ptr<Communicator> comm, const std::vector<std::pair<std::string, Tensor<T>>>& params,
                 DataParallelOptions opt = {})
        : comm_(std::move(comm)), opt_(opt) {
        MOEKD_CHECK(comm_, "DataParallel: null communicator");
        MOEKD_CHECK(opt_.bucket_mb > 0, "DataParallel: bucket_mb ", opt_.bucket_mb, " must be > 0");
        for (const auto& [name, t] : params) {
            MOEKD_CHECK(t.defined() && t.is_contiguous(), "DataParallel: parameter ", name,
                        " must be a defined contiguous tensor");
            bool dup = false;
            for (const auto& p : params_) dup = dup || p.is_same(t);
            if (dup) continue;
            names_.push_back(name);
            params_.push_back(t);
        }
        make_buckets();
        if (opt_.check && comm_->size() > 1) {  // a mismatch would otherwise garble the broadcast
            std::vector<std::pair<std::string, Tensor<T>>> kept;
            for (size_t i = 0; i < params_.size(); ++i) kept.emplace_back(names_[i], params_[i]);
            check_same_config(*comm_, kept, "DataParallel bucket_mb=" + std::to_string(opt_.bucket_mb));
        }
        if (opt_.broadcast) broadcast_parameters();
    }
    DataParallel(std::shared_ptr<Communicator> comm, const nn::Module<T>& model, DataParallelOptions opt = {})
        : DataParallel(std::move(comm), model.named_parameters(), opt) {}

    /// Every rank's parameters become the root's (one broadcast per parameter).
    void broadcast_parameters() {
        for (size_t i = 0; i < params_.size(); ++i)
            broadcast(*comm_, params_[i], opt_.root, names_[i]);
    }

    /// Averages the gradients over the ranks, bucket by bucket. A parameter with a gradient on
    /// some ranks only (an unused branch) gets zeros from the others; one with a gradient on no
    /// rank is left without one (so the optimizer skips it, as on one rank).
    void average_gradients() {
        if (comm_->size() == 1) return;
        std::vector<int64_t> has(params_.size());
        for (size_t i = 0; i < params_.size(); ++i) has[i] = params_[i].grad().defined() ? 1 : 0;
        comm_->all_reduce(has.data(), int64_t(has.size()), ReduceOp::Max);
        for (size_t i = 0; i < params_.size(); ++i) {
            if (!has[i]) continue;
            Tensor<T> g = params_[i].grad();
            if (!g.defined()) {
                params_[i].impl()->grad = Tensor<T>::zeros(params_[i].shape()).impl_ptr();
            } else {
                MOEKD_CHECK(g.shape() == params_[i].shape(), "DataParallel: gradient ", g.shape(), " of ", names_[i],
                            " ", params_[i].shape());
                if (!g.is_contiguous()) params_[i].impl()->grad = g.contiguous().impl_ptr();
            }
        }
        for (const auto& b : buckets_) {
            std::vector<size_t> live;
            for (size_t i : b)
                if (has[i]) live.push_back(i);
            if (live.empty()) continue;
            if (live.size() == 1) {  // one tensor: reduce in place
                Tensor<T> g = params_[live[0]].grad();
                comm_->all_reduce(g.data(), g.numel(), ReduceOp::Mean);
                continue;
            }
            int64_t n = 0;
            for (size_t i : live) n += params_[i].numel();
            flat_.resize(size_t(n));
            int64_t off = 0;
            for (size_t i : live) {
                Tensor<T> g = params_[i].grad();
                std::memcpy(flat_.data() + off, g.data(), sizeof(T) * size_t(g.numel()));
                off += g.numel();
            }
            comm_->all_reduce(flat_.data(), n, ReduceOp::Mean);
            off = 0;
            for (size_t i : live) {
                Tensor<T> g = params_[i].grad();
                std::memcpy(g.data(), flat_.data() + off, sizeof(T) * size_t(g.numel()));
                off += g.numel();
            }
        }
    }

    Communicator& comm() { return *comm_; }
    const std::vector<Tensor<T>>& parameters() const { return params_; }
    /// Parameter indices of each bucket, in order.
    const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }

private:
    void make_buckets() {
        const double cap = opt_.bucket_mb * 1024.0 * 1024.0;
        double bytes = 0;
        for (size_t i = 0; i < params_.size(); ++i) {
            const double b = double(params_[i].numel()) * sizeof(T);
            if (buckets_.empty() || bytes + b > cap) {
                buckets_.emplace_back();
                bytes = 0;
            }
            buckets_.back().push_back(i);
            bytes += b;
        }
    }

    std::shared_ptr<Communicator> comm_;
    DataParallelOptions opt_;
    std::vector<std::string> names_;
    std::vector<Tensor<T>> params_;
    std::vector<std::vector<size_t>> buckets_;
    std::vector<T> flat_;
};

}  // namespace moekd::dist
