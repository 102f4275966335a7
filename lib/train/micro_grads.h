// MicroGradients: while a backward runs on top of gradients that already hold earlier
// micro-batches, each unit's gradient of this micro-batch is formed from zero in a
// scratch buffer and added to the accumulator once, at the unit's last use in the
// backward: its own (units borrow parameters only from units before them, so a
// borrowed unit, the tied embedding, is complete only after its own backward).
// Why: so accumulating k micro-batches on one device adds them as
//   acc = ((g_0 + g_1) + g_2) + ...    (each g_j a whole micro-batch, formed from zero)
// which is exactly the rank-ordered fold a data-parallel reduction computes (see
// lib/dist/cpu_comm.cpp), and one device is bitwise N ranks (docs/distributed.md).
// Invariant: installed only for the duration of one Model::backward, in front of the
// model's own store (or its resident buffers); the first micro-batch after zero_grad
// never needs it (its accumulator is zero, the in-place sum is the same).
#pragma once
#include <vector>

#include "../model/store.h"
#include "strata/model.h"

namespace strata {

class MicroGradients final : public ParamStore {
 public:
  explicit MicroGradients(Model& model);
  ~MicroGradients() override;
  MicroGradients(const MicroGradients&) = delete;
  MicroGradients& operator=(const MicroGradients&) = delete;

  void* acquire_params(int unit) override;
  void release_params(int unit) override;
  void* acquire_grads(int unit) override;
  void release_grads(int unit) override;

 private:
  Model* model_;
  ParamStore* inner_;            // the store it stands in front of; null = resident buffers
  std::vector<Buffer> scratch_;  // per unit: this micro-batch's gradient while it forms
  std::vector<int> refs_;
  std::vector<Buffer> pool_;     // free scratch buffers
  int primary_ = -1;             // the unit whose backward is running
};

}  // namespace strata
