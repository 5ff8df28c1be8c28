// sentencepiece.hpp — a small wrapper over Google's SentencePiece library (Debian
// libsentencepiece-dev): train a (joint) subword model on text files,
// load it, encode sentences to ids and decode ids back to text, with moekd::Error messages that
// name the file when a model is missing or corrupt.
//
// Programs that include this header must link the library: `pkg-config --libs sentencepiece`
// (-lsentencepiece -lsentencepiece_train); see tests/tokenizer/CMakeLists.txt for the CMake.
//
// Special ids are fixed so that models are interchangeable inside moekd: pad 0, unk 1, bos 2,
// eos 3 (fairseq's order). User-defined symbols (e.g. target-language tags "<2fr>") become single
// pieces that are never split, with ids 4, 5, ... in the order given.
//
// Files are written by moekd, not by SentencePiece (whose writes are not all checked): training
// returns the model in memory, and the .model and .vocab files go through io::write_file_atomic
// (every write checked, a full disk is an error naming the file, the previous file stays).
#pragma once

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "../io/read_file.hpp"

namespace moekd::text {

struct SentencePieceOptions {
    int vocab_size = 8000;
    std::string model_type = "unigram";       // "unigram" or "bpe" ("char", "word" also work)
    double character_coverage = 1.0;          // 1.0 keeps every character (small corpora, many scripts)
    std::string normalization = "identity";   // "identity": decode(encode(s)) == s for clean text;
                                              // "nmt_nfkc": SentencePiece's default (NFKC + NMT rules)
    int64_t input_sentence_size = 0;          // 0: all lines; else a random sample of this many
    std::vector<std::string> user_defined_symbols;  // never split, e.g. language tags
    bool hard_vocab_limit = false;            // false: a corpus too small for vocab_size gives fewer pieces
    int num_threads = 1;
    unsigned seed = 1;                        // used when input_sentence_size samples lines
    bool quiet = true;                        // suppress SentencePiece's training log on stderr
};

constexpr int kSpPad = 0, kSpUnk = 1, kSpBos = 2, kSpEos = 3;

/// Trains a model on the lines of `input_files` (UTF-8 text, one sentence per line) and writes
/// `model_prefix + ".model"` and `.vocab`. Returns the .model path.
inline std::string train_sentencepiece(const std::vector<std::string>& input_files, const std::string& model_prefix,
                                       const SentencePieceOptions& opt = {}) {
    MOEKD_CHECK(!input_files.empty(), "sentencepiece: no training files given");
    std::string inputs;
    for (const std::string& f : input_files) {
        MOEKD_CHECK(std::filesystem::is_regular_file(f), "sentencepiece: training file '", f, "' does not exist");
        MOEKD_CHECK(f.find(',') == std::string::npos, "sentencepiece: training file name '", f,
                    "' contains ',' (SentencePiece separates files by commas)");
        inputs += (inputs.empty() ? "" : ",") + f;
    }
    MOEKD_CHECK(opt.vocab_size > 4 + static_cast<int>(opt.user_defined_symbols.size()), "sentencepiece: vocab_size ",
                opt.vocab_size, " leaves no room beyond the 4 special ids and ", opt.user_defined_symbols.size(),
                " user-defined symbols");
    const std::filesystem::path parent = std::filesystem::path(model_prefix).parent_path();
    MOEKD_CHECK(parent.empty() || std::filesystem::is_directory(parent), "sentencepiece: output directory '",
                parent.string(), "' does not exist");
    std::string symbols;
    for (const std::string& s : opt.user_defined_symbols) {
        MOEKD_CHECK(!s.empty() && s.find(',') == std::string::npos, "sentencepiece: bad user-defined symbol '", s, "'");
        symbols += (symbols.empty() ? "" : ",") + s;
    }
    std::unordered_map<std::string, std::string> kw = {
        {"input", inputs},
        {"vocab_size", std::to_string(opt.vocab_size)},
        {"model_type", opt.model_type},
        {"character_coverage", std::to_string(opt.character_coverage)},
        {"normalization_rule_name", opt.normalization},
        {"hard_vocab_limit", opt.hard_vocab_limit ? "true" : "false"},
        {"num_threads", std::to_string(opt.num_threads)},
        {"pad_id", std::to_string(kSpPad)},
        {"unk_id", std::to_string(kSpUnk)},
        {"bos_id", std::to_string(kSpBos)},
        {"eos_id", std::to_string(kSpEos)},
        {"minloglevel", opt.quiet ? "2" : "0"},
    };
    if (!symbols.empty()) kw["user_defined_symbols"] = symbols;
    if (opt.input_sentence_size > 0) {
        kw["input_sentence_size"] = std::to_string(opt.input_sentence_size);
        kw["shuffle_input_sentence"] = "true";
        sentencepiece::SetRandomGeneratorSeed(opt.seed);
    }
    std::string model;  // the serialized ModelProto: SentencePiece writes no file itself
    const auto st = sentencepiece::SentencePieceTrainer::Train(kw, nullptr, &model);
    MOEKD_CHECK(st.ok(), "sentencepiece: training on '", inputs, "' failed: ", st.ToString());
    sentencepiece::SentencePieceProcessor sp;
    MOEKD_CHECK(sp.LoadFromSerializedProto(model).ok() && sp.GetPieceSize() > 0,
                "sentencepiece: training on '", inputs, "' returned no usable model");
    std::ostringstream vocab;  // the .vocab file SentencePiece writes: piece TAB score
    for (int i = 0; i < sp.GetPieceSize(); ++i) vocab << sp.IdToPiece(i) << '\t' << sp.GetScore(i) << '\n';
    io::write_text_atomic(model_prefix + ".model", model);
    io::write_text_atomic(model_prefix + ".vocab", vocab.str());
    return model_prefix + ".model";
}

/// A loaded SentencePiece model. Copies share the (immutable) model.
class SentencePiece {
public:
    /// Loads a .model file; a missing, empty or corrupt file is a moekd::Error naming it.
    static SentencePiece load(const std::string& model_path) {
        const std::string why = io::unreadable_reason(model_path);  // "missing file", "is a directory"
        MOEKD_CHECK(why.empty(), "sentencepiece: model file '", model_path, "' ",
                    why == "missing file" ? std::string("does not exist") : why);
        const std::string bytes = io::read_file(model_path, "sentencepiece");
        return from_serialized(bytes, model_path);
    }

    /// Loads a model from the bytes of a .model file (`what` names it in errors).
    static SentencePiece from_serialized(const std::string& bytes, const std::string& what = "<memory>") {
        MOEKD_CHECK(!bytes.empty(), "sentencepiece: model file '", what, "' is empty");
        auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
        const auto st = sp->LoadFromSerializedProto(bytes);
        MOEKD_CHECK(st.ok(), "sentencepiece: '", what, "' is not a valid SentencePiece model (corrupt or another format): ",
                    st.ToString());
        MOEKD_CHECK(sp->GetPieceSize() > 0, "sentencepiece: model '", what, "' has no pieces");
        SentencePiece out;
        out.sp_ = std::move(sp);
        out.bytes_ = bytes;
        out.name_ = what;
        return out;
    }

    /// Ids of the pieces of `text` (no bos/eos added).
    std::vector<int> encode(std::string_view text) const {
        std::vector<int> ids;
        const auto st = proc().Encode(text, &ids);
        MOEKD_CHECK(st.ok(), "sentencepiece: encoding failed: ", st.ToString());
        return ids;
    }

    /// The pieces themselves ("▁Hello", ...), for inspection.
    std::vector<std::string> encode_pieces(std::string_view text) const {
        std::vector<std::string> pieces;
        const auto st = proc().Encode(text, &pieces);
        MOEKD_CHECK(st.ok(), "sentencepiece: encoding failed: ", st.ToString());
        return pieces;
    }

    /// Text of `ids`; pad/bos/eos (control ids) are dropped, unk decodes as " ⁇ ".
    std::string decode(const std::vector<int>& ids) const {
        const int n = vocab_size();
        for (size_t i = 0; i < ids.size(); ++i)
            MOEKD_CHECK(ids[i] >= 0 && ids[i] < n, "sentencepiece: id ", ids[i], " at position ", i,
                        " is outside the vocabulary [0, ", n, ") of '", name_, "'");
        std::string text;
        const auto st = proc().Decode(ids, &text);
        MOEKD_CHECK(st.ok(), "sentencepiece: decoding failed: ", st.ToString());
        return text;
    }

    int vocab_size() const { return proc().GetPieceSize(); }
    int pad_id() const { return proc().pad_id(); }
    int unk_id() const { return proc().unk_id(); }
    int bos_id() const { return proc().bos_id(); }
    int eos_id() const { return proc().eos_id(); }
    /// Id of a piece, or -1 when it is not in the vocabulary (not the unk id).
    int piece_id(std::string_view piece) const {
        const int id = proc().PieceToId(piece);
        return (id == unk_id() && piece != proc().IdToPiece(id)) ? -1 : id;
    }
    const std::string& id_to_piece(int id) const {
        MOEKD_CHECK(id >= 0 && id < vocab_size(), "sentencepiece: id ", id, " is outside the vocabulary of '", name_, "'");
        return proc().IdToPiece(id);
    }
    /// The serialized model (what a .model file holds), to store beside checkpoints.
    const std::string& serialized() const { return bytes_; }
    /// Writes the model to `path` (a copy of the .model file), atomically and checked.
    void save(const std::string& path) const { io::write_text_atomic(path, bytes_); }
    bool loaded() const { return sp_ != nullptr; }

private:
    const sentencepiece::SentencePieceProcessor& proc() const {
        MOEKD_CHECK(sp_ != nullptr, "sentencepiece: no model loaded");
        return *sp_;
    }
    std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
    std::string bytes_, name_;
};

}  // namespace moekd::text
