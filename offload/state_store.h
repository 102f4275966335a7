// The stores behind strata/state.h that live beside the offload tiers: resident state
// (the model's buffers and a resident AdamW), single-device offload (OffloadStore's
// tiers) and the adapter group that puts a Lora's parameters in the same store. The
// ZeRO-sharded store is lib/train/zero_state.cpp. The Trainer builds one of each base
// and wraps it in with_adapters, so its step never asks which store it holds.
#pragma once
#include <memory>
#include <vector>

#include "strata/model.h"
#include "strata/offload.h"
#include "strata/state.h"
#include "strata/optim.h"

namespace strata {

// The global norm of `inputs` (tensors of dev) read back to the host.
float global_norm_to_host(std::vector<TensorView> inputs, Device& dev);
// Unit u's working parameters as f32, through the model's ParamStore when it has one
// (which gathers a ZeRO-3 unit) or its resident buffers.
std::vector<float> read_unit_parameters(Model& model, int u);
// The resident optimizer of `store`; throws, naming where the state is, when there is none.
AdamW& resident_optimizer(StateStore& store);

// The model's own buffers and (unless the base is frozen) a resident AdamW over them.
std::unique_ptr<StateStore> make_resident_store(Model& model, const AdamWOptions& adamw);
// One device, every unit's arrays on the tiers `options` names (offload::OffloadStore).
std::unique_ptr<StateStore> make_offload_store(Model& model, const offload::OffloadOptions& options,
                                               const AdamWOptions& adamw);
// `base` (the model's units) plus, while a Lora is attached to the model, its adapters
// as a second parameter group trained resident with `adamw`: the norm covers both, the
// update and zeroing run the base's, then the adapters'.
std::unique_ptr<StateStore> with_adapters(Model& model, const AdamWOptions& adamw, std::unique_ptr<StateStore> base);

}  // namespace strata
