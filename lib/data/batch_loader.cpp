// BatchLoader: which windows batch k holds (a pure function), and the background
// thread that reads them ahead of the trainer.
// Invariant: the queue holds batches position, position + 1, ... in order with no gap;
// an error is queued in place of the batch it broke, so the consumer meets it exactly
// when it reaches that batch, and every batch before it is still delivered.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "lib/data/permutation.h"
#include "strata/data.h"
#include "strata/error.h"

namespace strata {

struct BatchLoader::Prefetcher {
  struct Item {
    TokenBatch batch;
    std::exception_ptr error;  // set instead of batch when fill() threw
  };

  const BatchLoader* loader;
  size_t capacity;
  int64_t limit;  // the worker stops before this batch number; -1 for never

  std::mutex mutex;
  std::condition_variable ready;  // an item was queued
  std::condition_variable space;  // an item was taken, or stop was set
  std::deque<Item> queue;  // batches position, position + 1, ...
  int64_t position = 0;  // the batch number next() returns
  int64_t produce = 0;  // the batch number the worker makes next
  bool stop = false;
  std::thread thread;

  void start(int64_t first) {
    queue.clear();
    position = produce = first;
    stop = false;
    thread = std::thread([this] { run(); });
  }

  void halt() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    space.notify_all();
    if (thread.joinable()) thread.join();
  }

  void run() {
    for (;;) {
      int64_t k;
      {
        std::unique_lock<std::mutex> lock(mutex);
        space.wait(lock, [&] { return stop || queue.size() < capacity; });
        if (stop || (limit >= 0 && produce >= limit)) return;
        k = produce++;
      }
      Item item;
      try {
        loader->fill(k, item.batch);
      } catch (...) {
        item.error = std::current_exception();
      }
      const bool failed = bool(item.error);
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stop) return;
        queue.push_back(std::move(item));
      }
      ready.notify_one();
      if (failed) return;  // nothing after a failed batch is queued
    }
  }
};

BatchLoader::BatchLoader(TokenDataset dataset, const LoaderOptions& options)
    : BatchLoader(std::make_shared<const TokenDataset>(std::move(dataset)), options) {}

BatchLoader::BatchLoader(std::shared_ptr<const TokenDataset> dataset, const LoaderOptions& options)
    : dataset_(std::move(dataset)), options_(options) {
  const LoaderOptions& o = options_;
  STRATA_CHECK(dataset_ != nullptr, "BatchLoader: dataset is null");
  STRATA_CHECK(o.batch_size >= 1, "BatchLoader: batch_size " << o.batch_size << " must be >= 1");
  STRATA_CHECK(o.seq_len >= 1, "BatchLoader: seq_len " << o.seq_len << " must be >= 1");
  STRATA_CHECK(o.world_size >= 1, "BatchLoader: world_size " << o.world_size
                                                             << " must be >= 1");
  STRATA_CHECK(o.rank >= 0 && o.rank < o.world_size,
               "BatchLoader: rank " << o.rank << " must be in [0, world_size = "
                                    << o.world_size << ")");
  STRATA_CHECK(o.prefetch >= 1, "BatchLoader: prefetch " << o.prefetch << " must be >= 1");
  STRATA_CHECK(o.vocab_size >= 0, "BatchLoader: vocab_size " << o.vocab_size
                                                             << " must be >= 0 (0: unchecked)");

  // A window of T+1 tokens starts every T tokens of a shard and stays inside it.
  const int64_t T = o.seq_len;
  slot_begin_.push_back(0);
  for (size_t s = 0; s < dataset_->num_shards(); ++s) {
    const int64_t n = dataset_->shard(s).size();
    num_slots_ += n > T ? (n - 1) / T : 0;
    slot_begin_.push_back(num_slots_);
  }
  const int64_t per_batch = int64_t(o.world_size) * o.batch_size;
  STRATA_CHECK(num_slots_ >= per_batch,
               "BatchLoader: the dataset has " << dataset_->num_tokens() << " tokens in "
                   << dataset_->num_shards() << " shard(s), which hold " << num_slots_
                   << " windows of seq_len + 1 = " << T + 1 << " tokens (one every " << T
                   << " tokens, inside a shard); one batch of world_size " << o.world_size
                   << " x batch_size " << o.batch_size << " needs " << per_batch
                   << " windows, i.e. at least " << per_batch * T + 1
                   << " tokens in one shard. Use more data or a smaller batch_size, "
                      "seq_len or world_size");
  num_batches_ = num_slots_ / per_batch;

  prefetcher_ = std::make_unique<Prefetcher>();
  prefetcher_->loader = this;
  prefetcher_->capacity = size_t(o.prefetch);
  prefetcher_->limit = o.shuffle ? -1 : num_batches_;
  prefetcher_->start(0);
}

BatchLoader::~BatchLoader() { prefetcher_->halt(); }

int64_t BatchLoader::slot_position(int64_t slot) const {
  auto it = std::upper_bound(slot_begin_.begin(), slot_begin_.end(), slot);
  const size_t s = size_t(it - slot_begin_.begin()) - 1;
  return dataset_->shard_begin(s) + (slot - slot_begin_[s]) * options_.seq_len;
}

std::vector<int64_t> BatchLoader::window_positions(int64_t k) const {
  const LoaderOptions& o = options_;
  STRATA_CHECK(k >= 0, "BatchLoader: batch number " << k << " must be >= 0");
  STRATA_CHECK(o.shuffle || k < num_batches_,
               "BatchLoader: batch " << k << " is past the end of the sequential pass ("
                                     << num_batches_ << " batches)");
  const int64_t per_batch = int64_t(o.world_size) * o.batch_size;
  const int64_t epoch = k / num_batches_;
  const int64_t first = (k % num_batches_) * per_batch + int64_t(o.rank) * o.batch_size;
  // Each epoch gets its own permutation; its key never involves the rank.
  const detail::FeistelPermutation permute(uint64_t(num_slots_),
                                           num::RandomKey{o.seed, uint32_t(epoch), 0});
  std::vector<int64_t> positions(size_t(o.batch_size));
  for (int64_t i = 0; i < o.batch_size; ++i) {
    const int64_t j = first + i;
    positions[size_t(i)] = slot_position(o.shuffle ? int64_t(permute(uint64_t(j))) : j);
  }
  return positions;
}

void BatchLoader::fill(int64_t k, TokenBatch& batch) const {
  const int64_t B = options_.batch_size, T = options_.seq_len;
  batch.number = k;
  batch.batch_size = B;
  batch.seq_len = T;
  batch.positions = window_positions(k);
  batch.tokens.resize(size_t(B * (T + 1)));
  batch.inputs.resize(size_t(B * T));
  batch.targets.resize(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const TokenView w = dataset_->window(batch.positions[size_t(b)], T + 1);
    int32_t* row = batch.tokens.data() + b * (T + 1);  // (T+1,)
    std::copy(w.begin(), w.end(), row);
    if (options_.vocab_size > 0) {
      const auto bad = std::find_if(w.begin(), w.end(),
                                    [&](uint32_t t) { return t >= options_.vocab_size; });
      STRATA_CHECK(bad == w.end(),
                   "BatchLoader: batch " << k << " holds token " << *bad
                                         << " at global position "
                                         << batch.positions[size_t(b)] + (bad - w.begin())
                                         << ", outside the vocabulary of " << options_.vocab_size
                                         << "; the data was made with another tokenizer, or is "
                                            "corrupt (TokenDataset::validate_tokens finds all)");
    }
    std::copy(row, row + T, batch.inputs.data() + b * T);
    std::copy(row + 1, row + T + 1, batch.targets.data() + b * T);
    if (dataset_->has_loss_mask()) {
      const TokenView mask = dataset_->loss_mask_window(batch.positions[size_t(b)], T + 1);
      for (int64_t t = 0; t < T; ++t)
        if (mask[size_t(t + 1)] == 0) batch.targets[size_t(b * T + t)] = -100;  // Batch's ignore
    }
  }
}

TokenBatch BatchLoader::next() {
  Prefetcher& p = *prefetcher_;
  std::unique_lock<std::mutex> lock(p.mutex);
  STRATA_CHECK(options_.shuffle || p.position < num_batches_,
               "BatchLoader: the sequential pass is over after " << num_batches_
                                                                 << " batches; call reset() "
                                                                    "to start another");
  p.ready.wait(lock, [&] { return !p.queue.empty(); });
  // A failed batch stays queued: next() keeps reporting it until seek() or reset().
  if (p.queue.front().error) std::rethrow_exception(p.queue.front().error);
  TokenBatch batch = std::move(p.queue.front().batch);
  p.queue.pop_front();
  ++p.position;
  lock.unlock();
  p.space.notify_one();
  return batch;
}

int64_t BatchLoader::position() const {
  std::lock_guard<std::mutex> lock(prefetcher_->mutex);
  return prefetcher_->position;
}

void BatchLoader::seek(int64_t k) {
  STRATA_CHECK(k >= 0, "BatchLoader::seek: batch number " << k << " must be >= 0");
  STRATA_CHECK(options_.shuffle || k <= num_batches_,
               "BatchLoader::seek: batch " << k << " is past the end of the sequential pass ("
                                           << num_batches_ << " batches)");
  prefetcher_->halt();
  prefetcher_->start(k);
}

}  // namespace strata
