// Parsing of the SDKs' telemetry frames (sdk-wire.md §1.14, modules.md §8.1): a 4-byte ASCII
// prefix (`OTLP` traces, `MTRC` metrics, `LOGS` logs) and OTLP/JSON (camelCase; snake_case is
// accepted too). Pure functions, no engine state: they run on the ingest thread.
//
// Bad input never throws: a frame that is not JSON or not the right shape yields an error and no
// records; a record with a bad field (an id of the wrong length, a timestamp that is not a
// decimal number) is skipped and counted, the rest of the batch is kept.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "workers/observability/telemetry_types.h"

namespace iii::observability {

enum class FrameKind { kTraces, kMetrics, kLogs };
const char* to_string(FrameKind k);
// The kind of a telemetry frame, from its prefix; nullopt when it has none.
std::optional<FrameKind> frame_kind(std::string_view frame);

struct IngestLimits {
  size_t max_records = 100000;          // per frame; the rest is dropped (counted)
  size_t max_attributes = 128;          // per record; the rest is dropped (not counted)
  size_t max_string_bytes = 64 * 1024;  // longer strings are cut
};

struct IngestResult {
  FrameKind kind = FrameKind::kTraces;
  std::vector<StoredSpan> spans;
  std::vector<StoredLog> logs;
  std::vector<StoredMetric> metrics;
  size_t dropped = 0;  // records skipped for bad fields or limits
  std::string error;   // the frame's problem, or the first record's; empty when all was well
};

// Parses a whole frame (prefix included).
IngestResult parse_frame(std::string_view frame, const IngestLimits& limits = {});

// True if `s` is `n` hex digits and not all zero (OTLP's invalid id).
bool valid_hex_id(std::string_view s, size_t n);

// W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>"; nullopt when malformed or all-zero ids.
struct TraceParent {
  std::string trace_id;
  std::string span_id;
  uint8_t flags = 1;
};
std::optional<TraceParent> parse_traceparent(std::string_view s);

}  // namespace iii::observability
