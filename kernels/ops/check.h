// Argument checks shared by every op's entry point. Each failure throws
// strata::Error naming the op, the argument, what it got and what it needed.
#pragma once
#include <initializer_list>
#include <string>

#include "../ops.h"
#include "strata/error.h"

namespace strata::ops::check {

// t is defined (non-null, non-empty) and lives on the stream's device.
void present(const char* op, const char* arg, const TensorView& t, const Stream& s);

// t's dtype is one of `allowed`.
void dtype(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed);

// t's dtype is f32, bf16 or f16.
void floating(const char* op, const char* arg, const TensorView& t);

// t has the same dtype as ref.
void same_dtype(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                const TensorView& ref);

// t's shape is exactly `dims`.
void shape(const char* op, const char* arg, const TensorView& t, std::initializer_list<int64_t> dims);

// t has `n` elements.
void numel(const char* op, const char* arg, const TensorView& t, int64_t n);

// The last dimension of t, and the product of the others (rows).
int64_t last_dim(const TensorView& t);
int64_t rows(const TensorView& t);

// Whether the bytes of x and y overlap (two views of one buffer, or aliases).
bool overlaps(const TensorView& x, const TensorView& y);

// A generic failed condition about an argument: "op: argument 'arg' (shape) what".
[[noreturn]] void fail(const char* op, const char* arg, const TensorView& t, const std::string& what);

}  // namespace strata::ops::check
