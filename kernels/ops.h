// The op contract lives in the public header strata/ops.h (one declaration of every
// op and its args); kernels/ include it through this name, with the shared math
// (Philox, RoPE frequencies) their implementations use.
#pragma once
#include "common/philox.h"
#include "common/rope_math.h"
#include "strata/ops.h"
