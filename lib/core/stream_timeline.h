// The stream timeline: with it on, every item a CPU worker stream runs (copies, host
// functions, events' markers) records when it began and ended on now_seconds()'s
// clock, so a test can check how transfers and compute interleaved (docs/streams.md).
// Invariant: off by default and then costs one relaxed load per item; the intervals of
// one stream are recorded in its FIFO order and never overlap each other.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/device.h"

namespace strata {

struct StreamInterval {
  DeviceKind device_kind = DeviceKind::cpu;
  int device = 0;  // Device::index()
  StreamRole role = StreamRole::host_to_device;
  uint64_t item = 0;   // the item's position in its stream
  bool marker = false;  // an Event's record or wait marker rather than work
  double begin = 0, end = 0;
};

// Turns recording on or off (off: what was recorded stays until taken).
void set_stream_timeline(bool on);
// What was recorded since the last call, in the order items ended; clears it.
std::vector<StreamInterval> take_stream_timeline();

}  // namespace strata
