// Stored records (telemetry_types.h) back to OTLP/JSON for the exporter: spans, log records
// and metrics in the OTLP/HTTP JSON mapping (camelCase, hex ids, int64 as decimal strings,
// enums as numbers), and the resource and scope each is exported under.
#pragma once

#include <boost/json/object.hpp>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "workers/observability/otlp_exporter.h"
#include "workers/observability/telemetry_store.h"
#include "workers/observability/telemetry_types.h"

namespace iii::observability {

// A JSON value as an OTLP AnyValue: {"stringValue"}, {"boolValue"}, {"intValue": "n"},
// {"doubleValue"}, {"arrayValue": {"values"}}, {"kvlistValue": {"values"}}.
boost::json::object to_any_value(const boost::json::value& v);
// An object of attributes as OTLP KeyValues.
boost::json::array to_key_values(const boost::json::object& attrs);

boost::json::object span_to_otlp(const StoredSpan& s);
boost::json::object log_to_otlp(const StoredLog& l);
// Exponential histograms are not kept with their buckets in the store; they are exported as
// their count and sum in a histogram point with no buckets.
boost::json::object metric_to_otlp(const StoredMetric& m);

// Feeds an OtlpExporter from the store's observers. The engine thread only copies each record
// into the exporter's queue (a DeferredRecord); the exporter's thread converts it to OTLP/JSON
// and finds its origin (resource + scope) when the batch is built, caching the origins so that
// records of one service share one.
class OtlpFeed {
 public:
  // `service_*`: the engine's own resource, used for records without a resource.
  OtlpFeed(OtlpExporter& exporter, std::string service_name, std::string service_version,
           std::string service_namespace);
  void spans(const std::vector<StoredSpan>& spans);
  void logs(const std::vector<StoredLog>& logs);
  void metrics(const std::vector<StoredMetric>& metrics);
  // One of the engine's own spans: the compact record is queued as it is and becomes a span
  // of the engine's service on the exporter's thread.
  void engine_span(const EngineSpanRec& rec, const std::shared_ptr<const std::string>& function_id);

  // The origin of a record (cached). Exporter thread only, once the exporter runs.
  std::shared_ptr<const OtlpOrigin> origin(const boost::json::object& resource,
                                           const std::string& service_name,
                                           const std::optional<std::string>& scope_name,
                                           const std::optional<std::string>& scope_version);

 private:
  OtlpExporter& exporter_;
  std::string service_name_, service_version_, service_namespace_;
  std::unordered_map<std::string, std::shared_ptr<const OtlpOrigin>> origins_;
};

}  // namespace iii::observability
