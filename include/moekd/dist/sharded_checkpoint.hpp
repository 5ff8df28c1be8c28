// sharded_checkpoint.hpp — model weights saved by every rank of an expert-parallel job, loadable
// on any number of ranks (re-sharding experts), the thing fairseq / DeepSpeed MoE checkpoints are
// often cursed for lacking.
//
// A checkpoint is a directory:
//   shard-00000-of-00002.safetensors   rank 0: every tensor of its state dict (dense + its experts)
//   shard-00001-of-00002.safetensors   rank r > 0: only its expert tensors (is_expert_parameter)
//   index.json                          written last by rank 0: world size, each shard's size and
//                                       FNV-1a 64 hash, and which shard holds each tensor
// Tensors keep their GLOBAL names (`...moe.experts.<global i>.fc1.weight`), as in a
// single-process moe::MoELayer, so the same checkpoint loads into an ExpertParallelMoE model on
// any world size dividing E, or into a plain MoELayer model on one process: a loading rank reads
// the index and only the shards that hold tensors it has. A tensor held by several ranks is
// taken from the lowest. A shard that is missing, truncated, altered (hash) or unreadable is an
// Error naming the file; a tensor the model wants and no shard has is an Error naming it.
// Saving: every write is checked (io::write_file_atomic); a rank that cannot write its shard
// (a full disk) tells the others through the gather, and rank 0 its index through a final
// all-reduce, so that every rank throws the same Error naming the file instead of waiting forever.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../io/atomic_file.hpp"
#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "../core/hash.hpp"
#include "../nn/module.hpp"
#include "communicator.hpp"
#include "expert_parallel.hpp"

namespace moekd::dist {

namespace detail {
// The shard hash: FNV-1a 64 from 1469598103934665603, a digit short of the offset basis
// (14695981039346656037): a slip in the first version, kept so that indexes written since load.
inline constexpr uint64_t kShardHashStart = 1469598103934665603ull;
inline uint64_t fnv1a64(const uint8_t* p, size_t n) { return moekd::fnv1a64_bytes(p, n, kShardHashStart); }
inline std::string hex64(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}
inline std::string shard_name(int r, int P) {
    char b[64];
    std::snprintf(b, sizeof b, "shard-%05d-of-%05d.safetensors", r, P);
    return b;
}
/// Every rank's string, in rank order (two all_gathers: lengths, then padded bytes).
inline std::vector<std::string> gather_strings(Communicator& comm, const std::string& mine) {
    const int P = comm.size();
    int64_t len = static_cast<int64_t>(mine.size());
    std::vector<int64_t> lens(P);
    comm.all_gather(&len, lens.data(), sizeof(int64_t));
    int64_t mx = 0;
    for (int64_t l : lens) mx = std::max(mx, l);
    std::string pad = mine;
    pad.resize(static_cast<size_t>(mx), '\0');
    std::string all(static_cast<size_t>(mx * P), '\0');
    if (mx > 0) comm.all_gather(pad.data(), all.data(), mx);
    std::vector<std::string> out(P);
    for (int r = 0; r < P; ++r) out[r] = all.substr(static_cast<size_t>(r * mx), static_cast<size_t>(lens[r]));
    return out;
}
inline std::vector<uint8_t> read_bytes(const std::string& path, const char* what) {
    std::ifstream f(path, std::ios::binary);
    MOEKD_CHECK(f, "load_sharded: cannot open ", what, " '", path, "' (missing?)");
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
}  // namespace detail

/// What save_sharded wrote / load_sharded read.
struct ShardedInfo {
    int world_size = 1;                          // ranks that saved
    std::vector<std::string> files_read;         // shards this rank read (load)
    std::map<std::string, std::string> metadata; // user metadata (stored in the index)
};

/// Collective: every rank writes its shard into `dir` (created if needed), rank 0 then the index.
/// Returns after every file is on disk (final barrier).
template <class T>
ShardedInfo save_sharded(const nn::Module<T>& model, Communicator& comm, const std::string& dir,
                         const std::map<std::string, std::string>& metadata = {}) {
    const int r = comm.rank(), P = comm.size();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    MOEKD_CHECK(std::filesystem::is_directory(dir), "save_sharded: cannot create directory '", dir, "'",
                ec ? ": " + ec.message() : std::string());
    std::map<std::string, Tensor<T>> mine;
    for (auto& [n, t] : model.state_dict())
        if (r == 0 || is_expert_parameter(n)) mine[n] = t;
    const std::vector<uint8_t> bytes = io::serialize_safetensors(mine, {{"rank", std::to_string(r)},
                                                                        {"world_size", std::to_string(P)}});
    const std::string file = detail::shard_name(r, P);
    std::string desc;  // "!<error>" when this rank's write failed
    try {
        io::write_file_atomic(dir + "/" + file, bytes);
    } catch (const Error& e) {
        desc = std::string("!") + e.what();
    }
    // rank 0 learns every shard's hash, size and tensor names (every rank: who failed)
    if (desc.empty()) {
        desc = detail::hex64(detail::fnv1a64(bytes.data(), bytes.size())) + " " + std::to_string(bytes.size());
        for (auto& [n, t] : mine) desc += "\n" + n;
    }
    const std::vector<std::string> all = detail::gather_strings(comm, desc);
    for (int q = 0; q < P; ++q)
        MOEKD_CHECK(all[q].empty() || all[q][0] != '!', "save_sharded: rank ", q, " of ", P, " could not write its shard: ",
                    all[q].substr(1));
    std::string index_error;
    if (r == 0) try {
        json::Value shards = json::Value::array(), tensors = json::Value::object();
        std::set<std::string> seen;
        for (int q = 0; q < P; ++q) {
            std::vector<std::string> lines;
            size_t at = 0;
            for (size_t nl; (nl = all[q].find('\n', at)) != std::string::npos; at = nl + 1)
                lines.push_back(all[q].substr(at, nl - at));
            lines.push_back(all[q].substr(at));
            const size_t sp = lines[0].find(' ');
            shards.push_back({{"file", detail::shard_name(q, P)},
                              {"fnv1a64", lines[0].substr(0, sp)},
                              {"bytes", int64_t(std::stoll(lines[0].substr(sp + 1)))}});
            for (size_t i = 1; i < lines.size(); ++i)  // (seen: a name once, without ordered_json's linear look-up)
                if (seen.insert(lines[i]).second) tensors.get_ref<json::Object&>().emplace_back(lines[i], q);
        }
        const json::Value index = {{"format", "moekd-sharded-v1"},
                                   {"world_size", P},
                                   {"shards", std::move(shards)},
                                   {"tensors", std::move(tensors)},
                                   {"metadata", metadata}};
        io::write_text_atomic(dir + "/index.json", json::dump(index));
    } catch (const Error& e) {
        index_error = e.what();
    }
    int64_t failed = index_error.empty() ? 0 : 1;  // also the final barrier: every file is on disk
    comm.all_reduce(&failed, 1, ReduceOp::Max);
    MOEKD_CHECK(failed == 0, "save_sharded: ", r == 0 ? index_error : "rank 0 could not write the index '" + dir +
                "/index.json' (its error says why)");
    ShardedInfo info;
    info.world_size = P;
    info.metadata = metadata;
    return info;
}

/// Loads every tensor of model.state_dict() from a sharded checkpoint saved on any number of
/// ranks (strict: each must be found, with its shape). Reads only the shards holding them. Not
/// collective: a single process (no communicator) can load an expert-parallel checkpoint.
template <class T>
ShardedInfo load_sharded(nn::Module<T>& model, const std::string& dir) {
    const std::string ipath = dir + "/index.json";
    const std::vector<uint8_t> itext = detail::read_bytes(ipath, "checkpoint index");
    json::Value index;
    try {
        index = json::parse(std::string_view(reinterpret_cast<const char*>(itext.data()), itext.size()));
    } catch (const Error& e) {
        throw Error(msg("load_sharded: index '", ipath, "' is not valid JSON (", e.what(), ")"));
    }
    const json::Value* format = json::find(index, "format");
    MOEKD_CHECK(format && format->is_string() && format->get<std::string>() == "moekd-sharded-v1", "load_sharded: '",
                ipath, "' is not a moekd sharded checkpoint index (format moekd-sharded-v1)");
    ShardedInfo info;
    int64_t world_size = 0;
    std::map<std::string, int64_t> where;
    std::vector<const json::Value*> shards;
    try {
        for (const json::Value& s : json::get_array(json::at(index, "shards"), "shards")) {
            json::get_object(s, "a shard");
            shards.push_back(&s);
        }
        world_size = json::get_int(json::at(index, "world_size"), "world_size");
        if (const json::Value* m = json::find(index, "metadata"))
            for (auto& [k, v] : json::get_object(*m, "metadata")) info.metadata[k] = json::get_string(v, "a metadata value");
        for (auto& [n, v] : json::get_object(json::at(index, "tensors"), "tensors"))
            where[n] = json::get_int(v, "a tensor's shard");
    } catch (const Error& e) {
        throw Error(msg("load_sharded: index '", ipath, "': ", e.what()));
    }
    MOEKD_CHECK(int64_t(shards.size()) == world_size, "load_sharded: '", ipath, "' lists ", shards.size(),
                " shards for world size ", world_size);
    info.world_size = static_cast<int>(world_size);
    // which shard each wanted tensor comes from
    const auto want = model.state_dict();
    std::map<int, std::vector<std::string>> by_shard;
    for (auto& [n, t] : want) {
        const auto it = where.find(n);
        MOEKD_CHECK(it != where.end(), "load_sharded: tensor '", n, "' of the model is in no shard of '", ipath,
                    "' (saved on ", info.world_size, " ranks). HINT: was it saved from the same model?");
        MOEKD_CHECK(it->second >= 0 && it->second < info.world_size, "load_sharded: '", ipath, "' puts '", n,
                    "' in shard ", it->second, " of ", info.world_size);
        by_shard[static_cast<int>(it->second)].push_back(n);
    }
    typename nn::Module<T>::StateDict dict;
    for (auto& [s, names] : by_shard) {
        const json::Value& sh = *shards[s];
        std::string file, want_hash;
        int64_t expect = 0;
        try {
            file = json::get_string(json::at(sh, "file"), "file");
            expect = json::get_int(json::at(sh, "bytes"), "bytes");
            want_hash = json::get_string(json::at(sh, "fnv1a64"), "fnv1a64");
        } catch (const Error& e) {
            throw Error(msg("load_sharded: index '", ipath, "', shard ", s, ": ", e.what()));
        }
        const std::string path = dir + "/" + file;
        const std::vector<uint8_t> bytes = detail::read_bytes(path, "shard");
        MOEKD_CHECK(static_cast<int64_t>(bytes.size()) == expect, "load_sharded: shard '", path, "' is ", bytes.size(),
                    " bytes, the index says ", expect, " (truncated or overwritten?)");
        const std::string h = detail::hex64(detail::fnv1a64(bytes.data(), bytes.size()));
        MOEKD_CHECK(h == want_hash, "load_sharded: shard '", path, "' is corrupt: its FNV-1a 64 hash is ", h,
                    ", the index says ", want_hash);
        const io::SafetensorsFile f = io::parse_safetensors(bytes.data(), bytes.size(), path);
        for (const auto& n : names) {
            const auto it = f.tensors.find(n);
            MOEKD_CHECK(it != f.tensors.end(), "load_sharded: shard '", path, "' lacks tensor '", n,
                        "' that the index puts there");
            dict[n] = io::to_tensor<T>(it->second, n);
        }
        info.files_read.push_back(path);
    }
    model.load_state_dict(dict, true);
    return info;
}

}  // namespace moekd::dist
