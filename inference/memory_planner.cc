#include "inference/memory_planner.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace inference {
namespace {

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

bool lifetimes_overlap(const BufferRequest& a, const BufferRequest& b) {
  return a.first_use <= b.last_use && b.first_use <= a.last_use;
}

}  // namespace

MemoryPlan plan_greedy(const std::vector<BufferRequest>& requests, size_t alignment) {
  if (alignment == 0) alignment = 1;
  MemoryPlan plan;
  plan.alignment = alignment;
  plan.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (requests[a].size_bytes != requests[b].size_bytes) return requests[a].size_bytes > requests[b].size_bytes;
    return requests[a].first_use < requests[b].first_use;
  });
  std::vector<size_t> placed;  // request indices, in placement order
  placed.reserve(requests.size());
  std::vector<size_t> live;    // placed requests overlapping the current one in time, by offset
  for (size_t idx : order) {
    const BufferRequest& r = requests[idx];
    const size_t size = align_up(r.size_bytes, alignment);
    live.clear();
    for (size_t p : placed) {
      if (requests[p].size_bytes > 0 && lifetimes_overlap(requests[p], r)) live.push_back(p);
    }
    std::sort(live.begin(), live.end(), [&](size_t a, size_t b) { return plan.offsets[a] < plan.offsets[b]; });
    size_t candidate = 0;
    for (size_t p : live) {
      const size_t p_begin = plan.offsets[p];
      const size_t p_end = align_up(p_begin + requests[p].size_bytes, alignment);
      if (candidate + size <= p_begin) break;  // fits in the gap before p
      candidate = std::max(candidate, p_end);
    }
    plan.offsets[idx] = candidate;
    placed.push_back(idx);
    if (size > 0) plan.arena_bytes = std::max(plan.arena_bytes, candidate + size);
  }
  plan.arena_bytes = align_up(plan.arena_bytes, alignment);
  return plan;
}

MemoryPlan plan_linear(const std::vector<BufferRequest>& requests, size_t alignment) {
  if (alignment == 0) alignment = 1;
  MemoryPlan plan;
  plan.alignment = alignment;
  size_t offset = 0;
  for (const BufferRequest& r : requests) {
    plan.offsets.push_back(offset);
    offset += align_up(r.size_bytes, alignment);
  }
  plan.arena_bytes = offset;
  return plan;
}

size_t naive_bytes(const std::vector<BufferRequest>& requests, size_t alignment) {
  if (alignment == 0) alignment = 1;
  size_t sum = 0;
  for (const BufferRequest& r : requests) sum += align_up(r.size_bytes, alignment);
  return sum;
}

base::Status verify_no_overlap(const std::vector<BufferRequest>& requests, const MemoryPlan& plan) {
  if (plan.offsets.size() != requests.size()) {
    return base::internal_error("memory plan has " + std::to_string(plan.offsets.size()) + " offsets for " +
                                std::to_string(requests.size()) + " buffers");
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    if (plan.alignment > 1 && plan.offsets[i] % plan.alignment != 0) {
      return base::internal_error("buffer '" + requests[i].name + "' at offset " + std::to_string(plan.offsets[i]) +
                                  " is not aligned to " + std::to_string(plan.alignment));
    }
    if (plan.offsets[i] + requests[i].size_bytes > plan.arena_bytes) {
      return base::internal_error("buffer '" + requests[i].name + "' ends past the arena (" +
                                  std::to_string(plan.arena_bytes) + " bytes)");
    }
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    for (size_t j = i + 1; j < requests.size(); ++j) {
      const BufferRequest& a = requests[i];
      const BufferRequest& b = requests[j];
      if (a.size_bytes == 0 || b.size_bytes == 0 || !lifetimes_overlap(a, b)) continue;
      const size_t a0 = plan.offsets[i], a1 = a0 + a.size_bytes;
      const size_t b0 = plan.offsets[j], b1 = b0 + b.size_bytes;
      if (a0 < b1 && b0 < a1) {
        return base::internal_error("buffers '" + a.name + "' [" + std::to_string(a0) + ", " + std::to_string(a1) +
                                    ") and '" + b.name + "' [" + std::to_string(b0) + ", " + std::to_string(b1) +
                                    ") overlap while both are alive");
      }
    }
  }
  return base::ok_status();
}

std::string format_plan(const std::vector<BufferRequest>& requests, const MemoryPlan& plan) {
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (plan.offsets[a] != plan.offsets[b]) return plan.offsets[a] < plan.offsets[b];
    return requests[a].first_use < requests[b].first_use;
  });
  std::string out = "  offset_KiB    size_KiB  steps      buffer\n";
  char line[160];
  for (size_t i : order) {
    if (i >= plan.offsets.size()) break;
    const BufferRequest& r = requests[i];
    std::snprintf(line, sizeof(line), "  %10.1f  %10.1f  %4d..%-4d  ", plan.offsets[i] / 1024.0,
                  r.size_bytes / 1024.0, r.first_use, r.last_use);
    out += line + r.name + "\n";
  }
  std::snprintf(line, sizeof(line), "  arena %.2f MiB, linear plan (no reuse) %.2f MiB (%zu buffers, alignment %zu)\n",
                plan.arena_bytes / 1048576.0, naive_bytes(requests, plan.alignment) / 1048576.0, requests.size(),
                plan.alignment);
  out += line;
  return out;
}

}  // namespace inference
