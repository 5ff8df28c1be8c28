// rank_generators.hpp — the random generators of a data-parallel run in its checkpoints, so that
// a resumed run draws what an uninterrupted one would have drawn, on every rank.
//
// Every rank holds the same named generators (dropout masks, router jitter, ...). Rank 0 writes
// the checkpoint: its own states under their names, and rank r's under "rank<r>.<name>"
// (for_save gathers them: a collective). On resume each rank loads its own entries (to_load);
// a rank the checkpoint does not know (it was written by fewer ranks) reseeds its generators
// from the run seed, its rank and the step instead. Rank r > 0 starts a fresh run from
// reseed_all(): its own streams, so the ranks' dropout masks differ.
//
//   train::RankGenerators gens(comm, seed, {{"dropout", &drop_gen}, {"jitter", &jitter_gen}});
//   gens.reseed_all();                                            // a fresh run
//   io::save_checkpoint_rotating(dir, keep, model, &opt, gens.for_save(), st);   // every rank calls
//   io::load_checkpoint(file, model, &opt, gens.to_load(peek));   // peek: the checkpoint's generators
#pragma once

#include <bit>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/hash.hpp"
#include "../core/random.hpp"
#include "../dist/communicator.hpp"

namespace moekd::train {

class RankGenerators {
public:
    /// comm: null or one rank = a single process. The names must be the same on every rank.
    RankGenerators(std::shared_ptr<dist::Communicator> comm, uint64_t seed, std::map<std::string, Generator*> gens)
        : comm_(std::move(comm)), seed_(seed), gens_(std::move(gens)) {}
    int rank() const { return comm_ ? comm_->rank() : 0; }
    int ranks() const { return comm_ ? comm_->size() : 1; }
    const std::map<std::string, Generator*>& own() const { return gens_; }

    /// Rank r > 0: every generator gets a stream of its own (rank 0 keeps its seeded state).
    void reseed_all(uint64_t step = 0) {
        for (auto& [name, g] : gens_) reseed(name, *g, step);
    }

    /// The generators a checkpoint holds: this rank's, and (rank 0, ranks > 1) every other
    /// rank's as "rank<r>.<name>". Collective: every rank calls it. The result points into this
    /// object; it is valid until the next call.
    std::map<std::string, const Generator*> for_save() {
        std::map<std::string, const Generator*> g(gens_.begin(), gens_.end());
        others_.clear();
        if (ranks() == 1) return g;
        std::vector<uint64_t> mine;  // 6 words per generator, in name order (the same on every rank)
        for (auto& [name, gen] : gens_) {
            const Generator::State s = gen->state();
            mine.insert(mine.end(), s.s.begin(), s.s.end());
            mine.push_back(s.has_spare ? 1 : 0);
            mine.push_back(std::bit_cast<uint64_t>(s.spare));
        }
        std::vector<uint64_t> all(mine.size() * size_t(ranks()));
        comm_->all_gather(mine.data(), all.data(), int64_t(mine.size() * sizeof(uint64_t)));
        for (int r = 1; r < ranks(); ++r) {
            size_t i = mine.size() * size_t(r);
            for (auto& [name, gen] : gens_) {
                const uint64_t* w = all.data() + i;
                others_.emplace_back().set_state({{w[0], w[1], w[2], w[3]}, w[4] == 1, std::bit_cast<double>(w[5])});
                g["rank" + std::to_string(r) + "." + name] = &others_.back();
                i += 6;
            }
        }
        return g;
    }

    /// Where each generator entry of a checkpoint (its names: `in_file`, written after `step`
    /// updates) loads to: this rank's own entries into its generators, the other ranks' into
    /// scratch. Rank 0's entries must all be there (a missing one is the loader's error); a rank
    /// r > 0 with no entry of its own reseeds from the run seed, its rank and the step.
    template <class Names>
    std::map<std::string, Generator*> to_load(const Names& in_file, int64_t step) {
        scratch_.clear();
        std::map<std::string, Generator*> g;
        if (rank() == 0) g.insert(gens_.begin(), gens_.end());
        const std::string own = "rank" + std::to_string(rank()) + ".";
        bool have_own = rank() == 0;
        for (auto& [name, gen] : gens_) have_own = have_own || in_file.count(own + name);
        for (auto& [name, s] : in_file) {
            if (g.count(name)) continue;
            auto it = rank() > 0 && have_own && name.rfind(own, 0) == 0 ? gens_.find(name.substr(own.size())) : gens_.end();
            if (it != gens_.end()) {
                g[name] = it->second;
            } else {
                scratch_.emplace_back();
                g[name] = &scratch_.back();
            }
        }
        if (!have_own) reseed_all(uint64_t(step));
        return g;
    }

private:
    /// A stream of its own for rank r > 0: from the run seed, the rank, the generator's name and
    /// (on a resume the checkpoint has no entry for) the step.
    void reseed(const std::string& name, Generator& g, uint64_t step) const {
        if (rank() == 0) return;
        g.manual_seed(fnv1a64(name, seed_ * 0x9E3779B97F4A7C15ull + uint64_t(rank()) * 1000003ull + step));
    }

    std::shared_ptr<dist::Communicator> comm_;
    uint64_t seed_;
    std::map<std::string, Generator*> gens_;
    std::deque<Generator> others_, scratch_;  // stable addresses
};

}  // namespace moekd::train
