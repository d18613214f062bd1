// Test helper: a real redis-server on a free port, in a temporary directory, started and
// stopped by the test (unit tests only).
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace iii::storage::redis::testing {

// Runs `io` until `done` holds; fails the test after `limit`.
inline void run_until(boost::asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  io.restart();
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out";
    io.run_for(std::chrono::milliseconds(5));
    io.restart();
  }
}

inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class RedisServer {
 public:
  // `tls`: the port speaks TLS only, with a self-signed certificate for CN=localhost made here.
  explicit RedisServer(std::vector<std::string> extra = {}, bool tls = false)
      : extra_(std::move(extra)) {
    port_ = free_port();
    dir_ = std::filesystem::temp_directory_path() /
           ("iii-redis-test-" + std::to_string(::getpid()) + "-" + std::to_string(port_));
    std::filesystem::create_directories(dir_);
    if (tls) {
      const std::string d = dir_.string();
      const std::string cmd =
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
          "-nodes -days 1 -subj /CN=localhost -keyout " +
          d + "/key.pem -out " + d + "/cert.pem >/dev/null 2>&1";
      if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl req failed");
      extra_.insert(extra_.end(),
                    {"--tls-port", std::to_string(port_), "--tls-cert-file", d + "/cert.pem",
                     "--tls-key-file", d + "/key.pem", "--tls-ca-cert-file", d + "/cert.pem",
                     "--tls-auth-clients", "no"});
      tls_ = true;
    }
    start();
  }
  std::string cert_file() const { return (dir_ / "cert.pem").string(); }
  ~RedisServer() {
    kill(SIGKILL);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  uint16_t port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  void start() {
    std::vector<std::string> args{"redis-server",
                                  "--port",
                                  tls_ ? "0" : std::to_string(port_),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--dir",
                                  dir_.string(),
                                  "--daemonize",
                                  "no",
                                  "--loglevel",
                                  "warning"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int devnull = ::open("/dev/null", 1);
      ::dup2(devnull, 1);
      ::execvp("redis-server", argv.data());
      ::_exit(127);
    }
    // Ready once it accepts connections.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(port_);
      const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
      if (ok) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
  }

  void kill(int sig = SIGKILL) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::vector<std::string> extra_;
  uint16_t port_ = 0;
  bool tls_ = false;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace iii::storage::redis::testing
