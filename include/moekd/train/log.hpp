// log.hpp — a training run's JSONL log: one JSON object per line (nlohmann::ordered_json, keys in
// the order written; a double is written in its shortest form that reads back to the same bits),
// each line one checked write(2) through io::AppendFile, so a crash keeps what was written and a
// full disk is an error naming the file.
//
// Resuming from a checkpoint of update k cuts the log back to it first (open_resumed): the lines
// with "step" > k (written after the checkpoint, before a kill) go, and so does a half-written
// last line; with drop_end_only also the lines marked "end_only": true (written only because an
// earlier process stopped at that update). So a resumed run's log equals an uninterrupted one's.
//
//   train::JsonlLog log;
//   log.open_resumed(dir + "/log.jsonl", resumed_step, /*drop_end_only=*/true);   // or open(path)
//   log.write({{"step", step}, {"loss", loss}});
//   log.close();                                                                   // checked
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../io/atomic_file.hpp"

namespace moekd::train {

class JsonlLog {
public:
    /// A fresh log at `path` (an existing file is emptied).
    void open(const std::string& path) { f_.open(path, /*truncate=*/true); }
    /// The log of a run resumed after update `step`: keeps its history up to that update (see
    /// the top of this file) and appends after it. step 0: a fresh log.
    void open_resumed(const std::string& path, int64_t step, bool drop_end_only) {
        cut(path, step, drop_end_only);
        f_.open(path);
    }
    /// Appends one line; an error names the file.
    void write(const nlohmann::ordered_json& line) { f_.write(line.dump() + "\n"); }
    void close() { f_.close(); }
    bool is_open() const { return f_.is_open(); }

    /// Keeps the lines of the file with "step" <= step, drops the rest and any line that does not
    /// parse (a half-written one); drop_end_only: also those with "end_only": true. Rewritten
    /// atomically (io::write_file_atomic). A missing file is left missing.
    static void cut(const std::string& path, int64_t step, bool drop_end_only) {
        if (!std::filesystem::exists(path)) return;
        std::ifstream in(path);
        std::string keep;
        for (std::string line; std::getline(in, line);) {
            const nlohmann::json v = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
            if (!v.is_object() || !v.contains("step") || !v["step"].is_number_integer()) continue;
            if (drop_end_only && v.value("end_only", false)) continue;
            if (v["step"].get<int64_t>() <= step) keep += line + "\n";
        }
        io::write_file_atomic(path, std::vector<uint8_t>(keep.begin(), keep.end()));
    }

private:
    io::AppendFile f_;
};

}  // namespace moekd::train
