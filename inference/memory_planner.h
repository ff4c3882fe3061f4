// Static memory planning: given buffers with sizes and lifetimes (first and last step that
// touches them), assign byte offsets inside one arena so that buffers alive at the same
// time never overlap. Pure functions, no allocation of the arena itself.
// Greedy planner after TensorFlow Lite Micro's GreedyMemoryPlanner: largest buffer first,
// each placed in the first gap among the already placed buffers whose lifetimes overlap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace inference {

/// One buffer to place. Lifetime is inclusive: alive from step `first_use` to `last_use`.
struct BufferRequest {
  size_t size_bytes = 0;
  int first_use = 0;
  int last_use = 0;
  std::string name;  // for printing only
};

/// Where each request lives: offsets[i] belongs to requests[i]; every offset is a multiple
/// of `alignment`; `arena_bytes` is the end of the furthest buffer rounded up to `alignment`.
struct MemoryPlan {
  std::vector<size_t> offsets;
  size_t arena_bytes = 0;
  size_t alignment = 1;
};

/// Greedy plan: sort by size (largest first; ties by earlier first_use, then index), place
/// each at the lowest aligned offset that does not overlap any placed buffer whose lifetime
/// overlaps its own. `alignment` must be a power of two >= 1. Deterministic.
MemoryPlan plan_greedy(const std::vector<BufferRequest>& requests, size_t alignment);

/// Linear plan that never reuses memory (each buffer after the previous one); for debugging
/// and as the upper bound the greedy plan is compared against.
MemoryPlan plan_linear(const std::vector<BufferRequest>& requests, size_t alignment);

/// Sum of the sizes rounded up to `alignment` (what plan_linear needs).
size_t naive_bytes(const std::vector<BufferRequest>& requests, size_t alignment);

/// Checks a plan: one offset per request, aligned, inside the arena, and no two buffers with
/// overlapping lifetimes share a byte. Errors: kInternal naming the first offending pair.
base::Status verify_no_overlap(const std::vector<BufferRequest>& requests, const MemoryPlan& plan);

/// A printable table (offset, size, lifetime, name; sorted by offset) plus the arena size
/// and the naive sum, for `strokebox engine info` and logs.
std::string format_plan(const std::vector<BufferRequest>& requests, const MemoryPlan& plan);

}  // namespace inference
