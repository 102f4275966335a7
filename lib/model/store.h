// ParamStore: where a unit's working parameters and gradient accumulators live while
// the Model computes with them. The Model asks for a unit's bytes before it runs the
// unit and hands them back after; a store may keep them resident, gather them from
// shards on other ranks (ZeRO-3), reduce gradients into a shard (ZeRO-2), or page
// them from host memory or NVMe (offload).
// Invariant: between acquire and release the pointer is the unit's full flat buffer
// (Model::unit_numel(u) elements: working dtype for params, f32 for gradients), and
// gradients accumulate into it with +=; nothing else may move those bytes meanwhile.
#pragma once

namespace strata {

class ParamStore {
 public:
  virtual ~ParamStore() = default;
  virtual void* acquire_params(int unit) = 0;
  virtual void release_params(int unit) = 0;
  virtual void* acquire_grads(int unit) = 0;
  virtual void release_grads(int unit) = 0;
};

}  // namespace strata
