// The read side of engine::logs|traces|metrics|rollups (modules.md §8.3): input checking and the
// result shapes, over a Telemetry store. Pure functions of the store and the input.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <stdexcept>
#include <string>

#include "workers/observability/engine_metrics.h"
#include "workers/observability/telemetry_store.h"

namespace iii::observability {

// A bad input field; the caller answers deserialization_error
// "Failed to deserialize input for <fn>: <what()>".
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Each throws InputError for a field of the wrong type or value.
boost::json::object list_logs(const Telemetry& t, const boost::json::object& in, int64_t now_ms);
boost::json::object list_traces(const Telemetry& t, const boost::json::object& in);
boost::json::object trace_tree(const Telemetry& t, const boost::json::object& in);
boost::json::object list_metrics(const Telemetry& t, const EngineMetrics& m, size_t active_workers,
                                 const boost::json::object& in, int64_t now_ms);
boost::json::object list_rollups(const Telemetry& t, const boost::json::object& in, int64_t now_ms);

// A span is internal when it belongs to an engine::* function (attribute iii.internal=true).
bool is_internal(const StoredSpan& s);

// W3C baggage header "k=v;prop,k2=v2" → {k: v} (values percent-decoded).
boost::json::object parse_baggage(std::string_view header);

}  // namespace iii::observability
