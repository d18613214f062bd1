// A connection to another iii engine, as a worker of that engine: the first-party C++ SDK
// client (its own I/O thread, reconnects with backoff, re-registers its functions and triggers
// after every reconnect). Used by iii-bridge and by the `bridge` adapters of iii-state and
// iii-stream. Everything here is called on the engine thread, and every completion and
// exposed-function call is posted back to it, so the rest of the engine stays single-threaded.
#pragma once

#include <boost/json/value.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"

namespace boost::asio {
class io_context;
}
namespace iii {
class III;
}

namespace iii::workers::bridge {

class RemoteEngine {
 public:
  // A new connection, owned by one built-in worker (which shuts it down when it stops), named
  // `worker_name` on the remote engine. Engine thread only.
  static std::shared_ptr<RemoteEngine> connect(boost::asio::io_context& io, const std::string& url,
                                               const std::string& worker_name);
  ~RemoteEngine();
  RemoteEngine(const RemoteEngine&) = delete;
  RemoteEngine& operator=(const RemoteEngine&) = delete;

  // Calls `function_id` on the remote engine; `done` runs on the engine thread with the remote
  // result, or its error, or the SDK's (`TIMEOUT`, `DISCONNECTED`, `SHUTDOWN`).
  void call(const std::string& function_id, boost::json::value data, std::optional<int> timeout_ms,
            engine::Completion done);
  // Fire and forget.
  void call_void(const std::string& function_id, boost::json::value data);

  // Registers `remote_id` on the remote engine, served on the engine thread by `handler`
  // (which completes through its Completion). Registered again after every reconnect.
  using Handler = std::function<void(boost::json::value input, engine::Completion done)>;
  void expose(const std::string& remote_id, Handler handler);
  // Removes an exposed function from the remote engine.
  void unexpose(const std::string& remote_id);
  // A trigger on the remote engine (e.g. a `subscribe` for a function exposed above); returns
  // its id there.
  std::string add_remote_trigger(const std::string& type, const std::string& function_id,
                                 boost::json::value config);
  void remove_remote_trigger(const std::string& trigger_id);

  // A service on the remote engine (registered again after every reconnect).
  void register_service(const std::string& id, const std::string& name);

  bool connected() const;
  const std::string& url() const { return url_; }
  // Closes the connection (in-flight calls fail with SHUTDOWN); nothing is posted afterwards.
  void shutdown();

 private:
  RemoteEngine(boost::asio::io_context& io, std::string url, std::string worker_name);
  struct Alive;
  boost::asio::io_context& io_;
  std::string url_;
  std::shared_ptr<Alive> alive_;  // cleared by shutdown(): late posts then do nothing
  std::shared_ptr<iii::III> sdk_;
  struct Refs;
  std::unique_ptr<Refs> refs_;  // SDK handles of exposed functions and remote triggers
};

}  // namespace iii::workers::bridge
