// oneDNN matmul ceiling: the GFLOP/s a large square matmul reaches on this CPU with oneDNN's
// best kernel, the practical upper bound the engine's convolutions are compared against in
// bench/engine_bench.sh. Usage: matmul_ceiling_bench [fp32|bf16] [N] [runs]; prints one JSON
// line (median of `runs` after 2 warm-up runs). bf16 fails (exit 1) where oneDNN has no
// bf16 matmul for this CPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dnnl.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const std::string precision = argc > 1 ? argv[1] : "fp32";
  const long n = argc > 2 ? std::atol(argv[2]) : 2048;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 10;
  if ((precision != "fp32" && precision != "bf16") || n <= 0 || runs <= 0) {
    std::fprintf(stderr, "usage: matmul_ceiling_bench [fp32|bf16] [N] [runs]\n");
    return 2;
  }
  using dt = dnnl::memory::data_type;
  const dt t = precision == "bf16" ? dt::bf16 : dt::f32;
  try {
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream strm(eng);
    const dnnl::memory::desc a({n, n}, t, dnnl::memory::format_tag::ab);
    const dnnl::memory::desc b({n, n}, t, dnnl::memory::format_tag::any);
    const dnnl::memory::desc c({n, n}, dt::f32, dnnl::memory::format_tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
    dnnl::memory ma(a, eng), mb(pd.weights_desc(), eng), mc(c, eng);
    std::fill_n(static_cast<char*>(ma.get_data_handle()), a.get_size(), 0x3f);
    std::fill_n(static_cast<char*>(mb.get_data_handle()), pd.weights_desc().get_size(), 0x3f);
    dnnl::matmul mm(pd);
    std::vector<double> times;
    for (int i = 0; i < runs + 2; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      mm.execute(strm, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
      strm.wait();
      if (i >= 2) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double gflop = 2.0 * n * n * n / 1e9;
    std::printf("{\"backend\":\"onednn matmul\",\"precision\":\"%s\",\"n\":%ld,\"impl\":\"%s\",\"median_s\":%.6f,"
                "\"gflop_per_s\":%.2f}\n",
                precision.c_str(), n, pd.impl_info_str(), median, gflop / median);
  } catch (const dnnl::error& e) {
    std::fprintf(stderr, "matmul_ceiling_bench: oneDNN: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    return 1;
  }
  return 0;
}
