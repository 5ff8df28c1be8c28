// methods.hpp — the umbrella header of the three methods a trainer calls (methods/): TSJT
// (two-stage joint training of an MoE model and a dense or device model), TCD (transfer-
// capability distillation from a vanilla teacher) and OneS (SVD knowledge gathering of an MoE
// teacher into a dense student, then distillation).
#pragma once

#include "methods/tsjt.hpp"
#include "methods/tcd.hpp"
#include "methods/ones.hpp"
