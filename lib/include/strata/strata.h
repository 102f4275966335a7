// strata: train transformer language models on one workstation, paging parameters,
// gradients and optimizer state across GPU memory, CPU RAM and NVMe.
// This header includes the whole public API and no CUDA header.
#pragma once
#include "strata/checkpoint.h"
#include "strata/data.h"
#include "strata/device.h"
#include "strata/dtype.h"
#include "strata/error.h"
#include "strata/gradcheck.h"
#include "strata/lora.h"
#include "strata/model.h"
#include "strata/ops.h"
#include "strata/optim.h"
#include "strata/tensor.h"
#include "strata/tokenizer.h"
#include "strata/train.h"
#include "strata/unit.h"
