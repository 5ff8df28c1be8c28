// checkpoint.hpp — full training checkpoints: everything a run needs to continue bit for bit
// after a crash or a kill -9, in ONE safetensors file written atomically.
//
// Contents (tensors, all little-endian):
//   model.<name>        every entry of Module::state_dict() (parameters and buffers), dtype of T
//   optim.<key>         every entry of Optimizer::state_dict() ("step", "state.<k>.<slot>")
//   rng.<name>          each named Generator as U64 (6,): xoshiro words s0..s3, has_spare (0/1),
//                       the Box-Muller spare's bit pattern, so the state round-trips exactly
// and scalars in __metadata__ (all strings): format, format_version, dtype, step, epoch,
// batch_index, data_position, config, extra.<key> (the caller's map: schedule state and so on),
// optim.type / optim.steps / optim.groups / optim.group.<i>.{lr,weight_decay,size}, a CRC-32
// per tensor (crc32.<tensor>) so a flipped bit in the data is caught, not trained on, and
// header_crc32: a CRC-32 over every other metadata field (keys and values) and every tensor's
// name, dtype and shape, so a flipped character in step, epoch, extra.* (stage state), config
// or a shape is caught too (format_version 2). Version 1 files (before header_crc32) are read
// with a warning on stderr: their metadata cannot be verified.
//
// latest_checkpoint(dir) verifies the files it picks: when the newest is corrupt it says so on
// stderr (file and reason) and returns the newest intact one, naming it.
//
// Saving goes through write_file_atomic (temp + fsync + rename): a kill at any moment leaves the
// previous file intact. Loading validates the whole file against the model, optimizer and
// generators first (names, shapes, dtypes, checksums, metadata) and only then copies anything,
// so a bad file never leaves a half-loaded model. Errors name the file and the entry.
// Learning-rate schedules here are functions of the step (schedule.hpp), so `step` is their
// whole state; a stateful schedule keeps its state in TrainState::extra.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <typeinfo>
#include <vector>

#include "../core/random.hpp"
#include "../nn/module.hpp"
#include "../optim/optimizer.hpp"
#include "atomic_file.hpp"
#include "json.hpp"
#include "read_file.hpp"
#include "safetensors.hpp"

namespace moekd::io {

static_assert(std::endian::native == std::endian::little, "checkpoint.hpp assumes a little-endian host");

/// Everything about a run that is not a tensor.
struct TrainState {
    int64_t step = 0;            // optimizer steps done; lr = schedule(step + 1) for the next one
    int64_t epoch = 0;           // data position: the epoch ...
    int64_t batch_index = 0;     // ... and the next batch within that epoch's (shuffled) order
    std::string data_position;   // free-form position (a byte offset, a shard name), verbatim
    std::string config;          // the user's config (JSON, a command line), verbatim
    std::map<std::string, std::string> extra;  // schedule state and anything else, by name
    bool operator==(const TrainState&) const = default;
};

/// One optimizer parameter group as saved (hyper-parameters and how many tensors it holds).
struct GroupInfo {
    double lr = 0, weight_decay = 0;
    int64_t size = 0;
    bool operator==(const GroupInfo&) const = default;
};

/// A parsed and self-consistent checkpoint, not yet applied to any object.
template <class T = float>
struct CheckpointData {
    std::map<std::string, Tensor<T>> model;      // state_dict names, without "model."
    std::map<std::string, Tensor<T>> optimizer;  // Optimizer::state_dict() keys, without "optim."
    bool has_optimizer = false;
    int64_t optimizer_steps = 0;  // exact (the optimizer's own 'step' tensor is T)
    std::string optimizer_type;                  // typeid name of the optimizer that wrote it
    std::vector<GroupInfo> groups;
    std::map<std::string, Generator::State> generators;
    TrainState state;
};

namespace detail {

inline constexpr const char* kCheckpointFormat = "moekd.checkpoint";
inline constexpr const char* kCheckpointVersion = "2";
inline constexpr const char* kCheckpointLegacyVersion = "1";  // no header_crc32: read with a warning
inline constexpr const char* kHeaderCrcKey = "header_crc32";

/// A tensor to write: dtype tag, shape and a pointer to its contiguous bytes.
struct RawView {
    std::string dtype;
    Shape shape;
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
};

inline uint32_t crc32_of(const uint8_t* p, size_t n) {
    uLong c = ::crc32_z(0L, Z_NULL, 0);
    return uint32_t(::crc32_z(c, p, n));
}
inline std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", v);
    return buf;
}
/// Shortest text that reads back as exactly the same double.
inline std::string exact_double(double d) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d);
    return std::string(buf, r.ptr);
}

/// Serialises raw tensors of any dtypes + metadata to safetensors bytes (names in map order).
inline std::vector<uint8_t> serialize_raw(const std::map<std::string, RawView>& tensors,
                                          const std::map<std::string, std::string>& metadata) {
    json::Value header = json::Value::object();  // metadata first, then the tensors in name order
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t at = 0;
    for (auto& [name, t] : tensors) {
        MOEKD_CHECK(dtype_size(t.dtype) > 0 && uint64_t(numel(t.shape)) * dtype_size(t.dtype) == t.nbytes,
                    "safetensors: tensor '", name, "' of ", t.dtype, " ", t.shape, " has ", t.nbytes, " bytes");
        MOEKD_CHECK(name != "__metadata__", "safetensors: a tensor cannot be named __metadata__ (the header's metadata entry)");
        header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.nbytes}}};
        at += t.nbytes;
    }
    std::string h = json::dump(header);
    while (h.size() % 8) h += ' ';
    std::vector<uint8_t> out(8 + h.size() + at);
    const uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out[i] = uint8_t(n >> (8 * i));
    std::memcpy(out.data() + 8, h.data(), h.size());
    uint8_t* p = out.data() + 8 + h.size();
    for (auto& [name, t] : tensors) {
        if (t.nbytes) std::memcpy(p, t.data, t.nbytes);
        p += t.nbytes;
    }
    return out;
}

/// CRC-32 of the header: every metadata entry but header_crc32 itself (length-prefixed keys and
/// values, in key order) and every tensor's name, dtype and shape (in name order).
template <class TensorMap>
uint32_t header_crc(const std::map<std::string, std::string>& metadata, const TensorMap& tensors) {
    std::string canon;
    for (auto& [k, v] : metadata) {
        if (k == kHeaderCrcKey) continue;
        canon += 'm';
        canon += std::to_string(k.size()) + ":" + k + std::to_string(v.size()) + ":" + v + "\n";
    }
    for (auto& [name, t] : tensors) {
        canon += 't';  // ("t" + std::to_string(...), like " " + std::to_string(d), trips GCC 12's -Wrestrict false positive)
        canon += std::to_string(name.size()) + ":" + name + " " + t.dtype;
        for (int64_t d : t.shape) {
            canon += ' ';
            canon += std::to_string(d);
        }
        canon += "\n";
    }
    return crc32_of(reinterpret_cast<const uint8_t*>(canon.data()), canon.size());
}

/// Checks header_crc32 of a parsed checkpoint (format_version 2), or warns about a version 1
/// file that has none. Throws an Error naming the file and what the checksum covers.
inline void check_header_crc(const SafetensorsFile& f, const std::string& name, bool warn_legacy) {
    auto ver = f.metadata.find("format_version");
    const bool legacy = ver != f.metadata.end() && ver->second == kCheckpointLegacyVersion;
    auto it = f.metadata.find(kHeaderCrcKey);
    if (it == f.metadata.end()) {
        MOEKD_CHECK(legacy, "checkpoint '", name, "', entry '", kHeaderCrcKey, "': missing from __metadata__ (the "
                    "header was damaged, or the file was not written by moekd)");
        if (warn_legacy)
            std::fprintf(stderr, "warning: checkpoint '%s' has format_version 1 (no %s): its metadata (step, epoch, "
                         "extra.*, config) cannot be verified; loading it as it is\n", name.c_str(), kHeaderCrcKey);
        return;
    }
    const std::string got = hex32(header_crc(f.metadata, f.tensors));
    MOEKD_CHECK(it->second == got, "checkpoint '", name, "', entry '", kHeaderCrcKey, "': checksum mismatch (stored ",
                it->second, ", header ", got, "): the metadata (format, dtype, step, epoch, batch_index, "
                "data_position, config, extra.*, optim.*, crc32.*) or a tensor's name, dtype or shape was altered; "
                "the file is corrupt");
}

inline bool parse_i64(const std::string& s, int64_t& out) {
    if (s.empty()) return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}
inline bool parse_f64(const std::string& s, double& out) {
    if (s.empty()) return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace detail

/// The bytes of a checkpoint (what save_checkpoint writes). `optimizer` may be null; each
/// generator is stored under its name. Model tensors are read where they are (no copy when
/// contiguous).
template <class T>
std::vector<uint8_t> serialize_checkpoint(const nn::Module<T>& model, const optim::Optimizer<T>* optimizer,
                                          const std::map<std::string, const Generator*>& generators,
                                          const TrainState& state) {
    std::map<std::string, detail::RawView> views;
    std::vector<Tensor<T>> keep;  // contiguous copies stay alive until serialised
    const char* dt = safetensors_dtype<T>();
    auto add = [&](const std::string& name, const Tensor<T>& t) {
        MOEKD_CHECK(t.defined(), "save_checkpoint: entry '", name, "' is an undefined tensor");
        keep.push_back(moekd::detail::contiguous_data(t.to(Device::CPU)));  // device tensors: copied back
        const Tensor<T>& c = keep.back();
        views[name] = {dt, t.shape(), reinterpret_cast<const uint8_t*>(c.data()), size_t(c.numel()) * sizeof(T)};
    };
    std::map<std::string, std::string> meta;
    meta["format"] = detail::kCheckpointFormat;
    meta["format_version"] = detail::kCheckpointVersion;
    meta["dtype"] = dt;
    meta["step"] = std::to_string(state.step);
    meta["epoch"] = std::to_string(state.epoch);
    meta["batch_index"] = std::to_string(state.batch_index);
    meta["data_position"] = state.data_position;
    meta["config"] = state.config;
    for (auto& [k, v] : state.extra) meta["extra." + k] = v;

    for (auto& [name, t] : model.state_dict()) add("model." + name, t);
    if (optimizer) {
        for (auto& [key, t] : optimizer->state_dict()) add("optim." + key, t);
        auto& groups = const_cast<optim::Optimizer<T>*>(optimizer)->groups();
        meta["optim.type"] = typeid(*optimizer).name();
        meta["optim.steps"] = std::to_string(optimizer->steps());
        meta["optim.groups"] = std::to_string(groups.size());
        for (size_t i = 0; i < groups.size(); ++i) {
            const std::string g = "optim.group." + std::to_string(i) + ".";
            meta[g + "lr"] = detail::exact_double(groups[i].lr);
            meta[g + "weight_decay"] = detail::exact_double(groups[i].weight_decay);
            meta[g + "size"] = std::to_string(groups[i].params.size());
        }
    }
    std::map<std::string, std::array<uint64_t, 6>> rng_words;
    for (auto& [name, gen] : generators) {
        MOEKD_CHECK(gen, "save_checkpoint: generator '", name, "' is null");
        const Generator::State s = gen->state();
        rng_words[name] = {s.s[0], s.s[1], s.s[2], s.s[3], uint64_t(s.has_spare), std::bit_cast<uint64_t>(s.spare)};
    }
    for (auto& [name, w] : rng_words)
        views["rng." + name] = {"U64", Shape{6}, reinterpret_cast<const uint8_t*>(w.data()), sizeof w};
    for (auto& [name, v] : views) meta["crc32." + name] = detail::hex32(detail::crc32_of(v.data, v.nbytes));
    meta[detail::kHeaderCrcKey] = detail::hex32(detail::header_crc(meta, views));
    return detail::serialize_raw(views, meta);
}

/// Writes a checkpoint atomically (temp file + fsync + rename): a kill or a failed write at
/// any moment leaves the previous file at `path` as it was.
template <class T>
void save_checkpoint(const std::string& path, const nn::Module<T>& model, const optim::Optimizer<T>* optimizer,
                     const std::map<std::string, const Generator*>& generators, const TrainState& state) {
    write_file_atomic(path, serialize_checkpoint(model, optimizer, generators, state));
}

/// Parses checkpoint bytes and checks them for self-consistency (format, dtypes, checksums,
/// metadata). `name` (the path) is used in error messages. Applies nothing.
template <class T = float>
CheckpointData<T> parse_checkpoint(const uint8_t* data, size_t size, const std::string& name) {
    SafetensorsFile f = parse_safetensors(data, size, name);
    auto fail = [&](const std::string& entry, const std::string& what) -> Error {
        return Error(msg("checkpoint '", name, "', entry '", entry, "': ", what));
    };
    auto meta = [&](const std::string& key) -> const std::string& {
        auto it = f.metadata.find(key);
        if (it == f.metadata.end()) throw fail(key, "missing from __metadata__ (not a moekd checkpoint, or damaged)");
        return it->second;
    };
    auto meta_int = [&](const std::string& key, int64_t lo) {
        int64_t v = 0;
        if (!detail::parse_i64(meta(key), v) || v < lo)
            throw fail(key, msg("'", meta(key), "' is not an integer >= ", lo));
        return v;
    };
    auto meta_double = [&](const std::string& key) {
        double v = 0;
        if (!detail::parse_f64(meta(key), v) || !std::isfinite(v)) throw fail(key, msg("'", meta(key), "' is not a finite number"));
        return v;
    };
    if (meta("format") != detail::kCheckpointFormat)
        throw fail("format", msg("'", meta("format"), "' is not '", detail::kCheckpointFormat, "'"));
    if (meta("format_version") != detail::kCheckpointVersion && meta("format_version") != detail::kCheckpointLegacyVersion)
        throw fail("format_version", msg("version '", meta("format_version"), "' is not supported (this build reads ",
                                         detail::kCheckpointLegacyVersion, " and ", detail::kCheckpointVersion, ")"));
    const char* dt = safetensors_dtype<T>();
    if (meta("dtype") != dt)
        throw fail("dtype", msg("the checkpoint holds ", meta("dtype"), " tensors but is being loaded as ", dt,
                                ". HINT: load it with the element type it was saved with"));

    CheckpointData<T> out;
    for (auto& [key, r] : f.tensors) {
        const std::string crc_key = "crc32." + key;
        auto it = f.metadata.find(crc_key);
        if (it == f.metadata.end()) throw fail(key, "no checksum (" + crc_key + ") in __metadata__");
        const std::string got = detail::hex32(detail::crc32_of(r.bytes.data(), r.bytes.size()));
        if (it->second != got)
            throw fail(key, msg("checksum mismatch (stored ", it->second, ", data ", got, "): the file is corrupt"));
        if (key.rfind("model.", 0) == 0 || key.rfind("optim.", 0) == 0) {
            if (r.dtype != dt) throw fail(key, msg("stored as ", r.dtype, " but the checkpoint's dtype is ", dt));
            Tensor<T> t = to_tensor<T>(r, key);
            if (key[0] == 'm') out.model.emplace(key.substr(6), std::move(t));
            else out.optimizer.emplace(key.substr(6), std::move(t));
        } else if (key.rfind("rng.", 0) == 0) {
            if (r.dtype != "U64" || r.shape != Shape{6}) throw fail(key, msg("a generator must be U64 (6,), got ", r.dtype, " ", r.shape));
            uint64_t w[6];
            std::memcpy(w, r.bytes.data(), sizeof w);
            if (w[4] > 1) throw fail(key, msg("has_spare word is ", w[4], ", not 0 or 1"));
            Generator::State s{{w[0], w[1], w[2], w[3]}, w[4] == 1, std::bit_cast<double>(w[5])};
            out.generators.emplace(key.substr(4), s);
        } else {
            throw fail(key, "unexpected tensor (entries are model.*, optim.* or rng.*)");
        }
    }
    for (auto& [k, v] : f.metadata)
        if (k.rfind("crc32.", 0) == 0 && !f.tensors.count(k.substr(6))) throw fail(k, "checksum of a tensor that is not in the file");

    TrainState& st = out.state;
    st.step = meta_int("step", 0);
    st.epoch = meta_int("epoch", 0);
    st.batch_index = meta_int("batch_index", 0);
    st.data_position = meta("data_position");
    st.config = meta("config");
    for (auto& [k, v] : f.metadata)
        if (k.rfind("extra.", 0) == 0) st.extra[k.substr(6)] = v;

    out.has_optimizer = f.metadata.count("optim.type") > 0;
    if (out.has_optimizer) {
        out.optimizer_type = meta("optim.type");
        const int64_t steps = meta_int("optim.steps", 0);
        out.optimizer_steps = steps;
        auto sit = out.optimizer.find("step");
        if (sit == out.optimizer.end()) throw fail("optim.step", "missing (the optimizer's step count)");
        if (sit->second.numel() != 1 || sit->second.item() != static_cast<T>(steps))
            throw fail("optim.step", msg("does not match optim.steps = ", steps));
        const int64_t ng = meta_int("optim.groups", 0);
        if (ng > 1000000) throw fail("optim.groups", "absurdly many groups");
        int64_t total = 0;
        for (int64_t i = 0; i < ng; ++i) {
            const std::string g = "optim.group." + std::to_string(i) + ".";
            out.groups.push_back({meta_double(g + "lr"), meta_double(g + "weight_decay"), meta_int(g + "size", 0)});
            total += out.groups.back().size;
            if (total > (int64_t(1) << 40)) throw fail(g + "size", "absurdly many parameters");
        }
        for (auto& [key, t] : out.optimizer) {
            if (key == "step") continue;
            // "state.<k>.<slot>" with k an index below the number of parameters
            const size_t dot = key.find('.', 6);
            int64_t k = -1;
            if (key.rfind("state.", 0) != 0 || dot == std::string::npos || dot + 1 == key.size() ||
                !detail::parse_i64(key.substr(6, dot - 6), k) || k < 0 || k >= total)
                throw fail("optim." + key, msg("not a state slot 'state.<k>.<name>' with k < ", total, " parameters"));
        }
    } else if (!out.optimizer.empty()) {
        throw fail("optim." + out.optimizer.begin()->first, "optimizer tensors without optim.type metadata");
    }
    // last, so that a field that does not even parse is named above; this catches the rest
    detail::check_header_crc(f, name, true);
    return out;
}

/// Why the checkpoint file at `path` cannot be used ("" when it is intact): unreadable, not a
/// checkpoint, an unsupported version, a tensor checksum or the header checksum wrong. Checks
/// integrity only (not whether it fits a model); works for any element type.
inline std::string checkpoint_problem(const std::string& path) {
    try {
        const std::string bytes = read_file(path, "checkpoint");
        const SafetensorsFile f = parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
        auto meta = [&](const char* k) {
            auto it = f.metadata.find(k);
            return it == f.metadata.end() ? std::string("<missing>") : it->second;
        };
        MOEKD_CHECK(meta("format") == detail::kCheckpointFormat, "entry 'format' is '", meta("format"), "', not '",
                    detail::kCheckpointFormat, "'");
        MOEKD_CHECK(meta("format_version") == detail::kCheckpointVersion ||
                        meta("format_version") == detail::kCheckpointLegacyVersion,
                    "entry 'format_version': version '", meta("format_version"), "' is not supported");
        for (auto& [key, r] : f.tensors) {
            auto it = f.metadata.find("crc32." + key);
            MOEKD_CHECK(it != f.metadata.end() &&
                            it->second == detail::hex32(detail::crc32_of(r.bytes.data(), r.bytes.size())),
                        "entry '", key, "': checksum missing or wrong (the data is corrupt)");
        }
        detail::check_header_crc(f, path, false);
        return "";
    } catch (const Error& e) {
        return e.what();
    }
}

/// Reads and checks a checkpoint file without applying it (inspect the config, step, ...).
template <class T = float>
CheckpointData<T> read_checkpoint(const std::string& path) {
    const std::string bytes = read_file(path, "checkpoint");
    return parse_checkpoint<T>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

/// Checks that `ck` fits the objects exactly (every name, shape, group, generator), then loads
/// it into them. Nothing is modified unless everything fits. Returns the TrainState.
template <class T>
TrainState apply_checkpoint(const CheckpointData<T>& ck, const std::string& name, nn::Module<T>& model,
                            optim::Optimizer<T>* optimizer, const std::map<std::string, Generator*>& generators) {
    auto where = [&](const std::string& what) { return msg("checkpoint '", name, "': ", what); };
    // ---- validate: model
    nn::LoadReport rep;
    const auto mine = model.state_dict();
    for (auto& [n, t] : mine) {
        auto it = ck.model.find(n);
        if (it == ck.model.end()) rep.missing.push_back("model." + n);
        else if (it->second.shape() != t.shape())
            rep.mismatched.push_back(msg("model.", n, ": module ", t.shape(), " vs file ", it->second.shape()));
    }
    for (auto& [n, t] : ck.model)
        if (!mine.count(n)) rep.unexpected.push_back(msg("model.", n, " ", t.shape()));
    MOEKD_CHECK(rep.ok(), where("the model does not fit the checkpoint (nothing was loaded)\n"), rep.str());
    // ---- validate: optimizer
    MOEKD_CHECK(ck.has_optimizer == (optimizer != nullptr),
                where(ck.has_optimizer ? "the file holds optimizer state but no optimizer was given"
                                       : "no optimizer state in the file (entry 'optim.type') but an optimizer was given"));
    std::vector<const Tensor<T>*> params;
    if (optimizer) {
        const char* type = typeid(*optimizer).name();
        MOEKD_CHECK(ck.optimizer_type == type, where(msg("entry 'optim.type': written by optimizer '", ck.optimizer_type,
                                                         "', loading into '", type, "'")));
        auto& groups = optimizer->groups();
        MOEKD_CHECK(ck.groups.size() == groups.size(), where(msg("entry 'optim.groups': ", ck.groups.size(),
                                                                 " parameter groups in the file, ", groups.size(),
                                                                 " in the optimizer")));
        for (size_t i = 0; i < groups.size(); ++i) {
            MOEKD_CHECK(ck.groups[i].size == int64_t(groups[i].params.size()),
                        where(msg("entry 'optim.group.", i, ".size': ", ck.groups[i].size, " parameters in the file, ",
                                  groups[i].params.size(), " in the optimizer")));
            for (auto& p : groups[i].params) params.push_back(&p);
        }
        for (auto& [key, t] : ck.optimizer) {
            if (key == "step") continue;
            const size_t dot = key.find('.', 6);
            int64_t k = -1;
            MOEKD_CHECK(key.rfind("state.", 0) == 0 && dot != std::string::npos &&
                            detail::parse_i64(key.substr(6, dot - 6), k) && k >= 0 && size_t(k) < params.size(),
                        where(msg("entry 'optim.", key, "' is not a state slot of one of the ", params.size(), " parameters")));
            MOEKD_CHECK(t.numel() == params[size_t(k)]->numel(),
                        where(msg("entry 'optim.", key, "' has shape ", t.shape(), " but parameter ", k, " has shape ",
                                  params[size_t(k)]->shape())));
        }
    }
    // ---- validate: generators
    for (auto& [n, g] : generators) {
        MOEKD_CHECK(g, where(msg("generator '", n, "' is null")));
        MOEKD_CHECK(ck.generators.count(n), where(msg("entry 'rng.", n, "' is missing (generator '", n, "' was not saved)")));
    }
    for (auto& [n, s] : ck.generators)
        MOEKD_CHECK(generators.count(n), where(msg("entry 'rng.", n, "': no generator of that name was given to load into")));
    // ---- apply (nothing below can fail: everything was checked above)
    model.load_state_dict(ck.model, true);
    if (optimizer) {
        optimizer->load_state_dict(ck.optimizer);
        optimizer->set_steps(ck.optimizer_steps);
        auto& groups = optimizer->groups();
        for (size_t i = 0; i < groups.size(); ++i) {
            groups[i].lr = ck.groups[i].lr;
            groups[i].weight_decay = ck.groups[i].weight_decay;
        }
    }
    for (auto& [n, g] : generators) g->set_state(ck.generators.at(n));
    return ck.state;
}

/// Reads, validates and applies a checkpoint; see apply_checkpoint.
template <class T>
TrainState load_checkpoint(const std::string& path, nn::Module<T>& model, optim::Optimizer<T>* optimizer,
                           const std::map<std::string, Generator*>& generators) {
    return apply_checkpoint(read_checkpoint<T>(path), path, model, optimizer, generators);
}

// ---- a folder of checkpoints: ckpt-<step>.safetensors, the last N kept ------------------------

/// dir/ckpt-<step, 10 digits>.safetensors
inline std::string checkpoint_path(const std::string& dir, int64_t step) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "ckpt-%010lld.safetensors", static_cast<long long>(step));
    return (std::filesystem::path(dir) / buf).string();
}

/// The checkpoints in dir by step, oldest first (temp files of interrupted writes are skipped).
inline std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
    std::vector<std::pair<int64_t, std::string>> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return out;
    for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
        const std::string f = e.path().filename().string();
        const std::string pre = "ckpt-", suf = ".safetensors";
        if (f.size() <= pre.size() + suf.size() || f.rfind(pre, 0) != 0 || f.compare(f.size() - suf.size(), suf.size(), suf))
            continue;
        int64_t step = 0;
        if (detail::parse_i64(f.substr(pre.size(), f.size() - pre.size() - suf.size()), step) && step >= 0)
            out.emplace_back(step, e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

/// The newest intact checkpoint in dir (checkpoint_problem() finds nothing wrong), or "" when
/// there is none at all. Each newer, corrupt one is reported on stderr with its reason, and the
/// one taken instead is named. Throws when there are checkpoints but none is intact (resuming
/// from step 0 over them would be wrong too).
inline std::string latest_checkpoint(const std::string& dir) {
    const auto all = list_checkpoints(dir);
    std::string skipped;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
        const std::string why = checkpoint_problem(it->second);
        if (why.empty()) {
            if (!skipped.empty())
                std::fprintf(stderr, "checkpoint: using the previous intact checkpoint '%s' (step %lld) instead\n",
                             it->second.c_str(), static_cast<long long>(it->first));
            return it->second;
        }
        std::fprintf(stderr, "checkpoint: '%s' is corrupt and is skipped: %s\n", it->second.c_str(), why.c_str());
        skipped += (skipped.empty() ? "" : "; ") + ("'" + it->second + "': " + why);
    }
    MOEKD_CHECK(all.empty(), "checkpoint: no intact checkpoint in '", dir, "' (", all.size(), " found, all corrupt: ",
                skipped, "). HINT: move them away to start from step 0");
    return std::string();
}

/// Saves checkpoint_path(dir, state.step) atomically, then deletes all but the newest
/// `keep_last` checkpoints (keep_last <= 0 keeps all) and temp files left by killed writers
/// (a process that no longer exists). Returns the path written.
template <class T>
std::string save_checkpoint_rotating(const std::string& dir, int keep_last, const nn::Module<T>& model,
                                     const optim::Optimizer<T>* optimizer,
                                     const std::map<std::string, const Generator*>& generators, const TrainState& state) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    MOEKD_CHECK(!ec, "checkpoint: cannot create the folder '", dir, "': ", ec.message());
    const std::string path = checkpoint_path(dir, state.step);
    save_checkpoint(path, model, optimizer, generators, state);
    auto all = list_checkpoints(dir);
    if (keep_last > 0)
        for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i) std::filesystem::remove(all[i].second, ec);
    for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
        const std::string f = e.path().filename().string();
        const size_t at = f.find(".safetensors.tmp.");
        int64_t pid = 0;
        if (f.rfind("ckpt-", 0) == 0 && at != std::string::npos && detail::parse_i64(f.substr(at + 17), pid) &&
            pid != ::getpid() && pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH)
            std::filesystem::remove(e.path(), ec);
    }
    return path;
}

}  // namespace moekd::io
