// train.hpp — the TSJT training rule on this example's batches. The rule itself is library code
// (moekd/methods/tsjt.hpp: Mode, StageController, joint_loss); this file runs both submodels on
// one Batch and names the library's types in the example's namespace.
//
//   stage 1 (TSJT, and ConstJT throughout):
//     L = CE(y_moe) + aux + alpha_moe * KL_sym(y_moe || y_dense')      (gradient to the MoE side)
//       + CE(y_dense) + alpha_dense * KL_sym(y_moe' || y_dense)         (gradient to the dense side)
//     (' = held fixed: symmetric_kl's detach flags). One backward and one Adam step: with the
//     shared architecture the shared layers get both models' gradients in the same step; with
//     the indep architecture the parameter sets are disjoint and Adam is per-parameter, so this
//     is the paper's "optimize the MoE submodel first, followed by the dense or device submodel"
//     (l.68) when the small model's KL sees the MoE logits from before the MoE update, which is
//     our reading: the paper does not say which MoE output the second update sees.
//   stage 2 (TSJT after the switch, and Single throughout): L = CE + aux + CE (no KL).
//
// StageController's automatic t_sep is our own rule: the paper switches at a fixed threshold
// (Eq. 1, l.62-66) found by grid search (l.659); see moekd/methods/tsjt.hpp.
#pragma once

#include <moekd/methods/tsjt.hpp>

#include "batch.hpp"
#include "model.hpp"

namespace tsjt {

using moekd::tsjt::Mode;
using moekd::tsjt::mode_name;
using moekd::tsjt::parse_mode;
using moekd::tsjt::StageController;
using JointLoss = moekd::tsjt::JointLoss<F>;

/// Forward of both submodels on one batch and the TSJT loss (see the top of this file).
inline JointLoss joint_loss(const Sub& moe_m, const Sub& dense, const Batch& b, bool use_kl, double alpha_moe,
                            double alpha_dense, double label_smoothing) {
    const nn::AuxOutput<F> oa = moe_m.forward_with_aux(b.src, b.prev), ob = dense.forward_with_aux(b.src, b.prev);
    return moekd::tsjt::joint_loss(oa, ob, b.tgt, b.tgt_pad, moe_m.pad, use_kl, alpha_moe, alpha_dense, label_smoothing);
}

}  // namespace tsjt
