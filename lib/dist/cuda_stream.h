// The one seam between dist/ and the CUDA backend: how NCCL finds the cudaStream_t
// behind a strata::Stream. Invariant: dist/ never guesses a stream; when no accessor
// is registered (CPU build, or the CUDA backend not wired yet) NCCL collectives fail
// with an error instead of silently running on the legacy default stream.
//
// For the CUDA backend: call set_native_stream_accessor once (e.g. the first time a
// CUDA Device is created) with a function returning the Stream's cudaStream_t cast
// to void*, and nullptr for a CPU stream. A function pointer rather than a weak
// symbol, so the static library links the same whichever objects the linker pulls.
#pragma once

namespace strata {
class Stream;
}

namespace strata::dist::detail {

using NativeStreamAccessor = void* (*)(Stream& stream);

// Thread-safe; the last registration wins.
void set_native_stream_accessor(NativeStreamAccessor accessor);
// The stream's cudaStream_t as void*; nullptr for a CPU stream or with no accessor.
void* native_stream(Stream& stream);
bool has_native_stream_accessor();

}  // namespace strata::dist::detail
