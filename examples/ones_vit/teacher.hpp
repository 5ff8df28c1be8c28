// teacher.hpp — the MoE teacher on disk: --save-teacher writes its weights with the configuration
// it was trained with (model flags, teacher epochs / lr / batch / augmentation, seed, and a hash
// of the training images); --teacher loads one only when that configuration is this run's, else
// the error lists what differs.
#pragma once

#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>

#include <moekd/io/safetensors.hpp>

#include "cli.hpp"

namespace ones_vit {

/// A hash of the first n images and labels of a set (what a teacher trained on).
inline std::string data_hash(const data::ImageSet& s, int64_t n) {
    n = std::min<int64_t>(n, s.size());
    const int64_t per = s.images.numel() / std::max<int64_t>(1, s.size());
    uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](const void* p, size_t bytes) {
        const auto* c = static_cast<const unsigned char*>(p);
        size_t i = 0;
        for (; i + 8 <= bytes; i += 8) {
            uint64_t w;
            std::memcpy(&w, c + i, 8);
            h = (h ^ w) * 1099511628211ULL;
            h ^= h >> 29;
        }
        for (; i < bytes; ++i) h = (h ^ c[i]) * 1099511628211ULL;
    };
    mix(s.images.data(), size_t(n * per) * sizeof(float));
    mix(s.labels.data(), size_t(n) * sizeof(int64_t));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
    return std::to_string(n) + "x" + std::to_string(per) + ":" + buf;
}

/// "k=v k=v ..." -> map.
inline std::map<std::string, std::string> parse_kv(const std::string& s) {
    std::map<std::string, std::string> m;
    std::stringstream ss(s);
    for (std::string t; ss >> t;) {
        const size_t eq = t.find('=');
        if (eq != std::string::npos) m[t.substr(0, eq)] = t.substr(eq + 1);
    }
    return m;
}

/// Loads a teacher checkpoint; any missing, extra or mis-shaped tensor is an error naming the file,
/// and so is a teacher trained on other data or flags than `want` (its "train_config" metadata).
inline void load_teacher(WideNetViT<float>& t, const std::string& path, const std::string& want) {
    std::map<std::string, std::string> meta;
    const auto dict = io::load_safetensors<float>(path, &meta);
    try {
        t.load_state_dict(dict, true);
    } catch (const Error& e) {
        MOEKD_CHECK(false, "teacher checkpoint '", path, "' does not match the teacher built from the flags (",
                    "--dim/--ffn-dim/--experts/--layers/--patch): ", e.what());
    }
    const auto it = meta.find("train_config");
    if (it == meta.end()) {
        std::printf("  note: '%s' records no training configuration (an older file); its data cannot be checked\n",
                    path.c_str());
        return;
    }
    const auto have = parse_kv(it->second), need = parse_kv(want);
    std::string diff;
    for (const auto& [k, v] : need) {
        const auto h = have.find(k);
        const std::string hv = h == have.end() ? "(absent)" : h->second;
        if (hv != v) diff += (diff.empty() ? "" : ", ") + k + " " + hv + " in the file vs " + v + " now";
    }
    MOEKD_CHECK(diff.empty(), "teacher checkpoint '", path, "' was trained on other data or flags than this run uses: ",
                diff, ". HINT: give the flags it was trained with (and the same --data / --cifar files), or drop ",
                "--teacher to train a new one");
}

/// Everything that decides what the teacher computes, and (when it is saved or loaded) a hash of
/// the images it trains on: "key=value ...", the metadata of a saved teacher.
inline std::string teacher_config(const Options& o, const data::ImageSet& train, int ranks) {
    const WideNetConfig& cfg = o.cfg;
    const TrainOptions& to = o.to;
    std::ostringstream tcs;
    tcs << "dim=" << cfg.dim << " heads=" << cfg.heads << " ffn_dim=" << cfg.ffn_dim << " layers=" << cfg.layers
        << " patch=" << cfg.patch_size << " image=" << cfg.image_size << "x" << cfg.channels
        << " experts=" << cfg.experts << " top_k=" << cfg.top_k
        << (cfg.logit_noise ? " router_noise=1" : "") << (cfg.renormalize_gates ? "" : " raw_gates=1")
        << (cfg.balance_all_choices ? " balance_all_choices=1" : "")  // absent for the router before 2026-12-07 (renormalised, no noise, first choices): its teachers still match with those flags
        << " teacher_epochs=" << to.epochs
        << " teacher_lr=" << to.lr << " teacher_warmup=" << to.warmup_frac << " weight_decay=" << to.weight_decay
        << " global_batch=" << to.batch * ranks << " augment=" << to.augment << " shift=" << to.shift
        << (to.crop_scale > 0 ? " crop_scale=" + std::to_string(to.crop_scale) : std::string())  // absent without the crop: older teachers still match
        << " dropout=" << cfg.dropout << " label_smoothing=" << to.label_smoothing << " mixup=" << to.mixup
        << " seed=" << o.seed << (to.precision == Precision::bf16 ? " precision=bf16" : "")
        << " train_data=" << ((o.teacher_in.empty() && o.teacher_out.empty()) ? "-" : data_hash(train, to.train_limit));
    return tcs.str();
}

}  // namespace ones_vit
