// collective.hpp — two pieces of multi-rank glue a trainer needs beyond DataParallel: gathering
// every rank's strings (sharded translations or predictions, a file path made by rank 0) and
// stopping every rank together with one error when any rank failed in a step, so no rank is left
// waiting in a collective until the timeout.
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "communicator.hpp"

namespace moekd::dist {

/// An error every rank raises together (same text), so each can end normally instead of
/// aborting the job; main prints it once (rank 0).
struct CollectiveError : Error {
    using Error::Error;
};

/// Every rank's strings, concatenated in rank order (collective). Each rank gives its own list,
/// of any length (also empty).
inline std::vector<std::string> all_gather_strings(Communicator& comm, const std::vector<std::string>& mine) {
    if (comm.size() == 1) return mine;
    std::string packed;
    std::vector<int64_t> lens;
    for (const std::string& s : mine) packed += s, lens.push_back(int64_t(s.size()));
    // every rank sends max-sized buffers: (count, bytes), max_count + 1 lengths, max_bytes + 1 chars
    int64_t counts[2] = {int64_t(mine.size()), int64_t(packed.size())}, max[2] = {counts[0], counts[1]};
    comm.all_reduce(max, 2, ReduceOp::Max);
    const size_t N = size_t(comm.size()), L = size_t(max[0]) + 1, B = size_t(max[1]) + 1;
    std::vector<int64_t> all_counts(2 * N), all_lens(L * N);
    comm.all_gather(counts, all_counts.data(), 2 * sizeof(int64_t));
    lens.resize(L);
    comm.all_gather(lens.data(), all_lens.data(), int64_t(L * sizeof(int64_t)));
    packed.resize(B);
    std::string all(N * B, '\0');
    comm.all_gather(packed.data(), all.data(), int64_t(B));
    std::vector<std::string> out;
    for (size_t r = 0; r < N; ++r) {
        size_t off = r * B;
        for (int64_t i = 0; i < all_counts[2 * r]; ++i) {
            const size_t len = size_t(all_lens[r * L + size_t(i)]);
            out.push_back(all.substr(off, len));
            off += len;
        }
    }
    return out;
}

/// Every rank throws the same CollectiveError when any rank failed (`failed`: its error text,
/// empty when it did not), naming the lowest such rank and its error. Collective.
inline void stop_together(Communicator& comm, const std::string& failed) {
    int64_t first = failed.empty() ? 0 : comm.size() - comm.rank();  // max: the lowest failed rank
    comm.all_reduce(&first, 1, ReduceOp::Max);
    if (first == 0) return;
    const int r = int(comm.size() - first);
    const std::string text = all_gather_strings(comm, {failed})[size_t(r)];
    throw CollectiveError(msg("rank ", r, " of ", comm.size(), ": ", text));
}

/// What a program's main does with an error that reached it: as one process, print
/// "<program>: error: <what>" and return 1; a CollectiveError (every rank has it) is printed by
/// rank 0 alone and every rank returns 1; any other error under N ranks is printed with its rank
/// and ends the job, since the other ranks would wait for this one.
inline int report_error(Communicator& comm, const char* program, const std::exception& e) {
    if (dynamic_cast<const CollectiveError*>(&e)) {
        if (comm.rank() == 0) std::fprintf(stderr, "%s: error: %s\n", program, e.what());
        return 1;
    }
    if (comm.size() == 1) {
        std::fprintf(stderr, "%s: error: %s\n", program, e.what());
        return 1;
    }
    std::fprintf(stderr, "%s rank %d/%d: error: %s\n", program, comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    comm.abort(1);
    return 1;  // not reached: abort ends the process
}

}  // namespace moekd::dist
