// STRATA_HD marks functions compiled for both host and device. Everything in
// kernels/common is plain arithmetic usable from CPU code, CUDA device code and the
// CUDA emulation build alike: no allocation, no exceptions, no library calls.
#pragma once

#if defined(__CUDACC__)
#define STRATA_HD __host__ __device__ __forceinline__
#else
#define STRATA_HD inline
#endif
