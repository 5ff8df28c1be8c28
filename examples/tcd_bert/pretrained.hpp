// pretrained.hpp — --finetune-from DIR: the pre-trained models of an earlier tcd_bert run read
// back instead of pre-trained again, so that a fine-tuning setting (epochs, learning rates, the
// adapter size of the paper's l.362-364) is measured on the very checkpoints the earlier run
// scored. Nothing is taken on trust:
//   - the flags that shape the models and their pre-training must be the ones DIR/log.jsonl
//     recorded (an error names the flag and both values);
//   - each checkpoint must be its run's (its "format" metadata) and fit the model the flags build
//     (a strict load: every tensor, every shape);
//   - its held-out masked-LM log-likelihood, computed again here on this run's held-out segments
//     with DIR's vocabulary, must be the last one the pre-training log wrote for that run, so the
//     weights, the vocabulary and the data are the pre-training's.
// Only the last epoch's checkpoint is on disk, so such a run fine-tunes that one alone (no trend).
#pragma once

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/json.hpp>
#include <moekd/io/safetensors.hpp>

#include "pretrain.hpp"

namespace tcdb {

/// What an earlier run's log.jsonl says: its config line and each run's last pre-training epoch.
struct PretrainedLog {
    std::string path;
    json::Value config;
    std::map<std::string, EpochLog> last;  // run key -> its last "pretrain_epoch" (epoch, held-out LL)
};

inline PretrainedLog read_pretrained_log(const std::string& dir) {
    PretrainedLog out;
    out.path = dir + "/log.jsonl";
    MOEKD_CHECK(std::filesystem::is_regular_file(out.path), "--finetune-from: no file '", out.path,
                "' (the log of the pre-training run whose checkpoints are to be fine-tuned)");
    std::istringstream in(io::read_file(out.path, "--finetune-from"));
    bool have_config = false;
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
        ++n;
        if (line.empty()) continue;
        try {
            const json::Value j = json::parse(line);
            const std::string& ev = json::get_string(json::at(j, "event"), "event");
            if (ev == "config") {
                out.config = j, have_config = true;
            } else if (ev == "pretrain_epoch") {
                EpochLog e;  // the epoch's losses and routing as logged (Table 3 prints L_T, L_I, L_A)
                e.epoch = int(json::get_int(json::at(j, "epoch"), "epoch"));
                auto num = [&](const char* k) {  // null when it was not finite
                    const json::Value& v = json::at(j, k);
                    return v.is_null() ? std::nan("") : json::get_double(v, k);
                };
                e.heldout_ll = num("heldout_ll"), e.mlm = num("mlm"), e.balance = num("balance");
                e.trunk = num("l_t"), e.inner = num("l_i"), e.attention = num("l_a");
                e.gate = num("gate"), e.max_load = num("max_load"), e.dropped = num("dropped"), e.kl = num("kl");
                e.seconds = num("seconds");
                out.last[json::get_string(json::at(j, "run"), "run")] = e;
            }
        } catch (const Error& e) {
            MOEKD_CHECK(false, out.path, ":", n, ": ", e.what());
        }
    }
    MOEKD_CHECK(have_config, out.path, ": no \"config\" line (not the log of a tcd_bert run?)");
    const json::Value* up = json::find(out.config, "finetune_from");
    MOEKD_CHECK(!up || !up->is_string() || up->get_ref<const std::string&>().empty(), "--finetune-from: ", dir,
                " did not pre-train (it fine-tuned the checkpoints of ", json::dump(*up), "): give that folder instead");
    return out;
}

/// The value of a config key that logs written before it existed lack (null: not checked then; a
/// mismatch still fails the strict load of the checkpoints).
inline const std::map<std::string, json::Value> kAbsentMeans{
    {"pretrain_decay", "adamw"}, {"teacher_layers", nullptr}, {"max_len", nullptr}};

/// Each (log key, flag, this run's value): an error at the first that differs from the log's.
inline void check_pretrained_config(const PretrainedLog& log,
                                    const std::vector<std::tuple<std::string, std::string, json::Value>>& want) {
    for (const auto& [key, flag, mine] : want) {
        const json::Value* theirs = json::find(log.config, key);
        // a key newer than the log: it was pre-trained before the flag existed, i.e. at what is its default now
        const auto older = kAbsentMeans.find(key);
        if (!theirs && older != kAbsentMeans.end()) {
            if (older->second.is_null()) continue;
            theirs = &older->second;
        }
        MOEKD_CHECK(theirs, "--finetune-from: ", log.path, " records no '", key, "' (a log of an older tcd_bert?)");
        // integers exactly (seeds up to 2^64); a float as written by the log's dump (round trip), so a
        // tolerance only for a log written by another formatter
        const bool both_int = theirs->is_number_integer() && mine.is_number_integer();
        const bool same = both_int || !(theirs->is_number() && mine.is_number())
                              ? *theirs == mine
                              : std::abs(theirs->get<double>() - mine.get<double>()) <= 1e-12 * std::abs(mine.get<double>());
        MOEKD_CHECK(same, "--finetune-from: the checkpoints were pre-trained with ", key, " ", json::dump(*theirs),
                    " (", log.path, "), this run has ", json::dump(mine), ": pass the pre-training run's ", flag);
    }
}

/// Loads DIR/ckpt/<key>.safetensors into `m` (strict) after checking it is run `key`'s; returns its epoch.
inline int load_pretrained(const std::string& dir, const std::string& key, nn::BertEncoder<float>& m) {
    const std::string path = dir + "/ckpt/" + key + ".safetensors";
    MOEKD_CHECK(std::filesystem::is_regular_file(path), "--finetune-from: no checkpoint '", path, "' of run '", key,
                "' (was that run pre-trained? the ablation runs need --ablations there and here)");
    std::map<std::string, std::string> meta;
    const auto dict = io::load_safetensors<float>(path, &meta);
    const auto f = meta.find("format");
    MOEKD_CHECK(f != meta.end() && f->second == "tcd_bert " + key, "--finetune-from: '", path,
                "' is not a tcd_bert checkpoint of run '", key, "' (its format is '",
                f == meta.end() ? std::string("(none)") : f->second, "')");
    try {
        m.load_state_dict(dict, true);  // copies each tensor to its parameter's device
    } catch (const Error& e) {
        MOEKD_CHECK(false, "--finetune-from: '", path, "' does not fit the model the flags build: ", e.what());
    }
    const auto ep = meta.find("epoch");
    MOEKD_CHECK(ep != meta.end() && !ep->second.empty() && ep->second.find_first_not_of("0123456789") == std::string::npos,
                "--finetune-from: '", path, "' records no epoch");
    return std::stoi(ep->second);
}

/// The loaded model against the log: the checkpoint of its last epoch, which is the run's `epochs`
/// (not a run that stopped early), and the same held-out LL, i.e. the same model on the same data
/// (a different thread count may move the last digits of a sum, hence the tolerance). Returns the
/// log's record of that epoch, with the LL measured here.
inline EpochLog check_pretrained_ll(const PretrainedLog& log, const std::string& key, int epoch, int epochs, double ll) {
    const auto it = log.last.find(key);
    MOEKD_CHECK(it != log.last.end(), "--finetune-from: ", log.path, " has no pre-training epoch of run '", key, "'");
    MOEKD_CHECK(it->second.epoch == epoch, "--finetune-from: the checkpoint of '", key, "' is of epoch ", epoch,
                " but ", log.path, " ends at epoch ", it->second.epoch);
    MOEKD_CHECK(epoch == epochs, "--finetune-from: run '", key, "' stopped at epoch ", epoch, " of ", epochs,
                " (", log.path, "): its checkpoint is not comparable with the others'");
    MOEKD_CHECK(std::abs(ll - it->second.heldout_ll) <= 1e-4, "--finetune-from: the checkpoint of '", key,
                "' has held-out LL ", ll, " here but ", it->second.heldout_ll, " in ", log.path,
                ": its weights or the held-out data differ from the pre-training run's "
                "(the same --data / --corpus and --heldout-segments?)");
    EpochLog e = it->second;
    e.heldout_ll = ll;
    return e;
}

}  // namespace tcdb
