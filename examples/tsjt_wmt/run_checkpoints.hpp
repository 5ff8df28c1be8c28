// run_checkpoints.hpp — where a training run's resumable checkpoints live, which one a rerun
// resumes from, and how one is written, for one process, data parallel and expert parallel:
//
//   one process, data parallel   RUN/ckpt/ckpt-<step>.safetensors, written by rank 0 with every
//                                rank's generator states ("rank<r>.<name>", train::RankGenerators);
//                                every rank resumes from that file
//   expert parallel              RUN/ckpt/rank<r>/ckpt-<step>.safetensors, one per rank: its own
//                                experts, their Adam moments and its generators; the ranks resume
//                                from the newest step all of them have (a kill between two ranks'
//                                writes leaves them one checkpoint apart)
//
// A checkpoint of the other layout is returned by resume_point() too, so that the run's
// configuration check (the world size and the flag are in it) refuses it instead of a fresh run
// overwriting the log.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <moekd/dist/collective.hpp>
#include <moekd/io/checkpoint.hpp>
#include <moekd/train/rank_generators.hpp>

#include "model.hpp"

namespace tsjt {

class RunCheckpoints {
public:
    RunCheckpoints() = default;
    RunCheckpoints(std::shared_ptr<dist::Communicator> comm, bool expert_parallel, const std::string& run_dir,
                   int keep_last)
        : comm_(std::move(comm)), ep_(expert_parallel), run_dir_(run_dir), keep_last_(keep_last) {
        root_ = (std::filesystem::path(run_dir) / "ckpt").string();
        mine_ = ep_ ? (std::filesystem::path(root_) / ("rank" + std::to_string(comm_->rank()))).string() : root_;
    }
    /// This rank's folder (created by create()).
    const std::string& dir() const { return mine_; }
    void create() const {
        if (comm_->rank() == 0 || ep_) std::filesystem::create_directories(mine_);
    }

    /// The checkpoint to resume from ("" = a fresh run). Collective.
    std::string resume_point() const {
        std::string last = io::latest_checkpoint(mine_);
        if (ep_ && comm_->size() > 1) {
            int64_t mine = -1;
            for (const auto& [step, path] : io::list_checkpoints(mine_))
                if (path == last) mine = step;
            int64_t m[2] = {-mine, mine};  // {-min, max} by one Max
            comm_->all_reduce(m, 2, dist::ReduceOp::Max);
            const int64_t lo = -m[0], hi = m[1];
            std::string failed;
            if (lo < 0 && hi >= 0)
                failed = msg("tsjt: expert-parallel run '", run_dir_, "': some ranks have checkpoints and some none (",
                             mine_, ": ", mine < 0 ? "none" : last, "). HINT: resume with the number of ranks it was "
                             "written with, or use another --out directory");
            else if (lo != mine) {
                last = io::checkpoint_path(mine_, lo);
                if (!std::filesystem::is_regular_file(last))
                    failed = msg("tsjt: expert-parallel run '", run_dir_, "': no checkpoint of step ", lo,
                                 " (the newest every rank has) in ", mine_);
            }
            dist::stop_together(*comm_, failed);
        }
        if (last.empty())  // the other layout's newest, for the configuration check only
            last = io::latest_checkpoint(ep_ ? root_ : (std::filesystem::path(root_) / "rank0").string());
        return last;
    }

    /// Where a checkpoint's generator entries load to (this rank's own, see the layouts).
    std::map<std::string, Generator*> generators_to_load(train::RankGenerators& gens,
                                                         const io::CheckpointData<F>& ck) const {
        return ep_ ? gens.own() : gens.to_load(ck.generators, ck.state.step);
    }

    /// Writes the checkpoint of `st` (rotating: the newest keep_last stay). Collective.
    void save(const nn::Module<F>& model, const optim::Optimizer<F>* opt, train::RankGenerators& gens,
              const io::TrainState& st) const {
        if (ep_) {
            const std::map<std::string, const Generator*> g(gens.own().begin(), gens.own().end());
            io::save_checkpoint_rotating<F>(mine_, keep_last_, model, opt, g, st);
        } else {
            const std::map<std::string, const Generator*> g = gens.for_save();  // collective
            if (comm_->rank() == 0) io::save_checkpoint_rotating<F>(mine_, keep_last_, model, opt, g, st);
        }
        comm_->barrier();  // the file is there before any rank may read it
    }

private:
    std::shared_ptr<dist::Communicator> comm_;
    bool ep_ = false;
    std::string run_dir_, root_, mine_;
    int keep_last_ = 2;
};

}  // namespace tsjt
