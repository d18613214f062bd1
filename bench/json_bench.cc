// Micro-benchmark of the engine's frame encoders (Google Benchmark).
//
//   json_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// The 1 MiB string cases are the ones the invoke round trip pays twice (invoke + result).
#include <benchmark/benchmark.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <string>

#include "protocol/codec.h"

namespace {

namespace json = boost::json;
using iii::protocol::encode_invoke;
using iii::protocol::encode_result;

constexpr const char* kId = "6f1c2a9e-1b2c-4d3e-8f40-123456789abc";
constexpr size_t kMiB = 1 << 20;

json::value plain_string() { return json::value(std::string(kMiB, 'x')); }

// Text with a quote and a newline every ~64 bytes: the escape-heavy path.
json::value escaped_string() {
  std::string s;
  s.reserve(kMiB);
  while (s.size() < kMiB) s += "some \"quoted\" words, then a line break\n and more filler here.";
  s.resize(kMiB);
  return json::value(std::move(s));
}

// ~1 MiB spread over many small nodes: checks the tree walk, not the string copy.
json::value many_small_nodes() {
  json::array rows;
  for (int i = 0; i < 16384; ++i)
    rows.push_back(json::object{{"id", i}, {"name", "row-name"}, {"ok", true}, {"x", 1.5}});
  return json::object{{"rows", std::move(rows)}};
}

void run_invoke(benchmark::State& state, const json::value& data) {
  size_t bytes = 0;
  for (auto _ : state) {
    std::string frame =
        encode_invoke(kId, "bench::echo", data, std::string("00-abc-def-01"), std::nullopt);
    bytes = frame.size();
    benchmark::DoNotOptimize(frame);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_EncodeInvokePlain1MiB(benchmark::State& state) { run_invoke(state, plain_string()); }
void BM_EncodeInvokeEscaped1MiB(benchmark::State& state) { run_invoke(state, escaped_string()); }
void BM_EncodeInvokeSmallNodes(benchmark::State& state) { run_invoke(state, many_small_nodes()); }

void BM_EncodeResultPlain1MiB(benchmark::State& state) {
  const std::optional<json::value> result = plain_string();
  size_t bytes = 0;
  for (auto _ : state) {
    std::string frame =
        encode_result(kId, "bench::echo", result, std::nullopt, std::nullopt, std::nullopt);
    bytes = frame.size();
    benchmark::DoNotOptimize(frame);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

// Reference point: boost::json::serialize of the bare payload.
void BM_BoostSerializePlain1MiB(benchmark::State& state) {
  const json::value data = plain_string();
  for (auto _ : state) {
    std::string s = json::serialize(data);
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (kMiB + 2)));
}

BENCHMARK(BM_EncodeInvokePlain1MiB)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeInvokeEscaped1MiB)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeInvokeSmallNodes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeResultPlain1MiB)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BoostSerializePlain1MiB)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
