#include "cli/worker_command.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "config/config.h"

#ifndef III_VERSION
#define III_VERSION "0.11.6"
#endif

namespace iii::cli {
namespace {

// The documented default block of each built-in worker (the worker registry's
// "configuration" for 0.11.6 where it has one, else the 0.11 docs' sample configuration).
const std::map<std::string, std::string>& default_blocks() {
  static const std::map<std::string, std::string> kBlocks = {
      {"iii-worker-manager", "port: 49134\n"},
      {"iii-engine-functions", ""},
      {"iii-observability", "enabled: true\nlevel: info\n"},
      {"iii-telemetry", ""},
      {"iii-http", "port: 3111\nhost: 0.0.0.0\n"},
      {"iii-state",
       "adapter:\n  name: kv\n  config:\n    store_method: file_based\n"
       "    file_path: ./data/state_store.db\n"},
      {"iii-stream",
       "port: 3112\nhost: 127.0.0.1\nadapter:\n  name: kv\n  config:\n"
       "    store_method: file_based\n    file_path: ./data/stream_store\n"},
      {"iii-queue",
       "queue_configs:\n  default:\n    max_retries: 5\n    concurrency: 5\n"
       "    type: standard\nadapter:\n  name: builtin\n"},
      {"iii-pubsub", "adapter:\n  name: local\n"},
      {"iii-cron", "adapter:\n  name: kv\n"},
      {"iii-http-functions",
       "security:\n  url_allowlist:\n    - \"*\"\n  block_private_ips: true\n"
       "  require_https: true\n"},
      {"iii-exec", "watch:\n  - src/**/*.ts\nexec:\n  - npm run dev\n"},
      {"iii-bridge", "url: ${III_URL:ws://127.0.0.1:49134}\n"},
  };
  return kBlocks;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string> split_lines(const std::string& text, bool& trailing_newline) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  trailing_newline = text.empty() || text.back() == '\n';
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines, bool trailing_newline) {
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    out += lines[i];
    if (i + 1 < lines.size() || trailing_newline) out += '\n';
  }
  return out;
}

size_t indent_of(const std::string& line) {
  const size_t p = line.find_first_not_of(" \t");
  return p == std::string::npos ? line.size() : p;
}
bool is_blank(const std::string& line) { return indent_of(line) == line.size(); }
bool is_comment(const std::string& line) {
  const size_t p = indent_of(line);
  return p < line.size() && line[p] == '#';
}

struct Entry {
  std::string name;     // canonical
  std::string written;  // as in the file (name or class)
  int first = 0;        // 0-based lines, inclusive
  int last = 0;
  size_t dash_col = 0;
  std::string list;  // "workers" or "modules"
};

struct ListInfo {
  int key_line = -1;
  bool present = false;
  bool flow = false;
  bool empty = true;
  int end_line = -1;  // last line that belongs to the list (before the next top-level key)
};

struct Layout {
  std::vector<std::string> lines;
  bool trailing_newline = true;
  std::map<std::string, ListInfo> lists;
  std::vector<Entry> entries;
};

int mark_line(const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return m.is_null() ? -1 : m.line;
}

Layout analyse(const std::string& text, const std::string& path) {
  Layout L;
  L.lines = split_lines(text, L.trailing_newline);
  // Only line numbers matter here: unset variables expand to "" so that any working config
  // parses (values are not used).
  const std::string expanded =
      config::expand_env(text, path, [](const std::string& name) -> std::optional<std::string> {
        const char* v = std::getenv(name.c_str());
        return v ? std::optional<std::string>(v) : std::optional<std::string>("");
      });
  YAML::Node root;
  try {
    root = YAML::Load(expanded);
  } catch (const YAML::Exception& e) {
    throw WorkerCommandError(path + ":" + std::to_string(e.mark.line + 1) +
                             ": invalid YAML: " + e.msg + " (nothing changed)");
  }
  if (!root.IsDefined() || root.IsNull()) return L;
  if (!root.IsMap())
    throw WorkerCommandError(path + ": the top level must be a mapping with 'workers:'");
  std::vector<int> key_lines;
  for (const auto& kv : root) key_lines.push_back(mark_line(kv.first));
  const int nlines = static_cast<int>(L.lines.size());
  for (const auto& kv : root) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (key != "workers" && key != "modules") continue;
    ListInfo info;
    info.present = true;
    info.key_line = mark_line(kv.first);
    int next_key = nlines;
    for (int l : key_lines)
      if (l > info.key_line) next_key = std::min(next_key, l);
    info.end_line = next_key - 1;
    const YAML::Node list = kv.second;
    if (list.IsSequence()) {
      info.flow = list.Style() == YAML::EmitterStyle::Flow;
      info.empty = list.size() == 0;
    } else if (!list.IsNull()) {
      throw WorkerCommandError(path + ":" + std::to_string(info.key_line + 1) + ": '" + key +
                               "' must be a list of workers");
    }
    if (info.flow && !info.empty)
      throw WorkerCommandError(path + ":" + std::to_string(info.key_line + 1) + ": '" + key +
                               "' is written inline ([...]); write it as a block list to edit it "
                               "with 'iii worker'");
    L.lists[key] = info;
    if (!list.IsSequence() || info.flow) continue;
    std::vector<Entry> here;
    for (const auto& item : list) {
      Entry e;
      e.list = key;
      e.first = mark_line(item);
      // The item's dash: on its first line, or on the line above (`-` alone on a line).
      while (e.first > 0 && L.lines[e.first].find('-') == std::string::npos) --e.first;
      const std::string& dl = L.lines[e.first];
      e.dash_col = dl.find('-');
      if (item.IsMap()) {
        if (item["name"] && item["name"].IsScalar()) {
          e.written = item["name"].Scalar();
          e.name = config::canonical_worker_name(e.written);
        } else if (item["class"] && item["class"].IsScalar()) {
          e.written = item["class"].Scalar();
          e.name = config::legacy_class_worker_name(e.written).value_or(e.written);
        }
      }
      here.push_back(e);
    }
    for (size_t i = 0; i < here.size(); ++i) {
      int last = i + 1 < here.size() ? here[i + 1].first - 1 : info.end_line;
      // Trailing blank lines, and comments no deeper than the dash, belong to what follows.
      while (last > here[i].first &&
             (is_blank(L.lines[last]) ||
              (is_comment(L.lines[last]) && indent_of(L.lines[last]) <= here[i].dash_col)))
        --last;
      here[i].last = last;
    }
    L.entries.insert(L.entries.end(), here.begin(), here.end());
  }
  return L;
}

struct Spec {
  std::string name;  // canonical
  std::optional<std::string> version;
};

const std::vector<std::string>& builtin_names() { return config::known_worker_names(); }

bool is_builtin(const std::string& name) {
  const auto& b = builtin_names();
  return std::find(b.begin(), b.end(), name) != b.end();
}

// Versions this engine can honour: its own (0.11.6, prereleases and builds of it included) and
// the earlier 0.11.x releases, whose workers it provides a superset of. "latest" is this one.
bool version_honoured(const std::string& raw) {
  std::string v = raw;
  if (v == "latest") return true;
  if (!v.empty() && v[0] == 'v') v.erase(0, 1);
  const size_t cut = v.find_first_of("-+");
  const std::string core = v.substr(0, cut);
  int parts[3] = {-1, -1, -1};
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    const size_t dot = core.find('.', pos);
    const std::string part =
        core.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    int n = -1;
    const auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), n);
    if (ec != std::errc() || p != part.data() + part.size() || part.empty()) return false;
    parts[i] = n;
    if (dot == std::string::npos) {
      if (i != 2) return false;
      break;
    }
    pos = dot + 1;
    if (i == 2) return false;  // four parts
  }
  return parts[0] == 0 && parts[1] == 11 && parts[2] <= 6;
}

Spec parse_spec(const std::string& spec) {
  Spec s;
  std::string name = spec;
  const size_t at = spec.find('@');
  if (at != std::string::npos) {
    name = spec.substr(0, at);
    s.version = spec.substr(at + 1);
  }
  s.name = config::canonical_worker_name(name);
  if (name.empty() || !is_builtin(s.name))
    throw WorkerCommandError("unknown worker '" + name +
                             "': this engine manages only its built-in workers (" +
                             join(builtin_names()) + ") and downloads nothing");
  if (s.version && !version_honoured(*s.version))
    throw WorkerCommandError(s.name + "@" + *s.version +
                             " cannot be provided: this engine is iii " III_VERSION " and has " +
                             s.name + " " III_VERSION " built in; it honours " + s.name +
                             "@0.11.x up to 0.11.6 (and its prereleases) and downloads nothing");
  return s;
}

std::vector<std::string> entry_block(const std::string& name, size_t dash_col) {
  const std::string pad(dash_col, ' ');
  std::vector<std::string> out{pad + "- name: " + name};
  const std::string& body = default_worker_block(name);
  if (body.empty()) return out;
  out.push_back(pad + "  config:");
  bool trailing = true;
  for (const auto& l : split_lines(body, trailing)) out.push_back(pad + "    " + l);
  return out;
}

// The result must still be a valid config that lists the worker as expected.
void check_result(const std::string& text, const std::string& path) {
  try {
    config::parse_config(
        config::expand_env(text, path,
                           [](const std::string& name) -> std::optional<std::string> {
                             const char* v = std::getenv(name.c_str());
                             return v ? std::optional<std::string>(v)
                                      : std::optional<std::string>("");
                           }),
        path);
  } catch (const std::exception& e) {
    throw WorkerCommandError(std::string("the edited file would not load (nothing changed): ") +
                             e.what());
  }
}

}  // namespace

std::string default_worker_block(const std::string& canonical_name) {
  const auto& b = default_blocks();
  auto it = b.find(canonical_name);
  return it == b.end() ? std::string() : it->second;
}

WorkerEdit add_worker(const std::string& text, const std::string& spec, const std::string& path) {
  const Spec s = parse_spec(spec);
  Layout L = analyse(text, path);
  for (const auto& e : L.entries) {
    if (e.name == s.name)
      return WorkerEdit{text,
                        s.name + " is already in " + path + " (line " +
                            std::to_string(e.first + 1) + "); nothing changed",
                        false};
  }
  const std::string list = L.lists.count("workers")   ? "workers"
                           : L.lists.count("modules") ? "modules"
                                                      : "";
  std::vector<std::string>& lines = L.lines;
  if (list.empty()) {
    // No list yet: a new `workers:` at the end of the file.
    while (!lines.empty() && is_blank(lines.back())) lines.pop_back();
    if (!lines.empty()) lines.push_back("");
    lines.push_back("workers:");
    for (auto& l : entry_block(s.name, 2)) lines.push_back(l);
  } else {
    ListInfo& info = L.lists[list];
    std::vector<const Entry*> in_list;
    for (const auto& e : L.entries)
      if (e.list == list) in_list.push_back(&e);
    if (in_list.empty()) {
      if (info.flow) {
        // `workers: []` becomes a block list.
        std::string& kl = lines[info.key_line];
        size_t open = kl.find('[', kl.find(':'));
        const size_t close = kl.find(']', open);
        if (open > 0 && kl[open - 1] == ' ') --open;
        kl.erase(open, close - open + 1);
        while (!kl.empty() && kl.back() == ' ') kl.pop_back();
      }
      const auto block = entry_block(s.name, 2);
      lines.insert(lines.begin() + info.key_line + 1, block.begin(), block.end());
    } else {
      const Entry& last = *in_list.back();
      bool spaced = false;
      if (in_list.size() >= 2) {
        const Entry& a = *in_list[0];
        const Entry& b = *in_list[1];
        for (int l = a.last + 1; l < b.first; ++l) spaced = spaced || is_blank(lines[l]);
      }
      std::vector<std::string> block;
      if (spaced) block.push_back("");
      for (auto& l : entry_block(s.name, last.dash_col)) block.push_back(l);
      lines.insert(lines.begin() + last.last + 1, block.begin(), block.end());
    }
  }
  WorkerEdit out;
  out.text = join_lines(lines, true);
  check_result(out.text, path);
  out.changed = true;
  out.message = "added " + s.name + " (built in, version " III_VERSION ") to " + path;
  if (default_worker_block(s.name).empty())
    out.message += " with its default settings";
  else
    out.message += " with its documented default config";
  return out;
}

WorkerEdit remove_worker(const std::string& text, const std::string& name_arg,
                         const std::string& path) {
  std::string name = name_arg;
  std::optional<int> instance;
  const size_t hash = name.rfind('#');
  if (hash != std::string::npos && hash + 1 < name.size() && name.size() - hash <= 7 &&
      std::all_of(name.begin() + static_cast<std::ptrdiff_t>(hash) + 1, name.end(),
                  [](char c) { return c >= '0' && c <= '9'; })) {
    instance = std::stoi(name.substr(hash + 1));
    name.resize(hash);
  }
  const std::string canonical = config::canonical_worker_name(name);
  if (!is_builtin(canonical))
    throw WorkerCommandError("unknown worker '" + name_arg +
                             "' (built-in workers: " + join(builtin_names()) + ")");
  Layout L = analyse(text, path);
  std::vector<const Entry*> matches;
  for (const auto& e : L.entries)
    if (e.name == canonical) matches.push_back(&e);
  if (matches.empty())
    throw WorkerCommandError(canonical + " is not in " + path + "; nothing to remove");
  const Entry* target = nullptr;
  if (instance) {
    if (*instance >= static_cast<int>(matches.size()))
      throw WorkerCommandError(path + " has " + std::to_string(matches.size()) + " " + canonical +
                               " entr" + (matches.size() == 1 ? "y" : "ies") + "; there is no #" +
                               std::to_string(*instance));
    target = matches[*instance];
  } else if (matches.size() > 1) {
    std::string which;
    for (size_t i = 0; i < matches.size(); ++i)
      which += (i ? ", " : "") + canonical + (i ? "#" + std::to_string(i) : "") + " (line " +
               std::to_string(matches[i]->first + 1) + ")";
    throw WorkerCommandError(path + " has " + std::to_string(matches.size()) + " " + canonical +
                             " entries: " + which + "; name the one to remove");
  } else {
    target = matches[0];
  }
  std::vector<std::string> lines = L.lines;
  int first = target->first, last = target->last;
  // Do not leave two blank lines where the entry was.
  if (first > 0 && is_blank(lines[first - 1]) &&
      (last + 1 >= static_cast<int>(lines.size()) || is_blank(lines[last + 1])))
    --first;
  lines.erase(lines.begin() + first, lines.begin() + last + 1);
  WorkerEdit out;
  out.text = join_lines(lines, L.trailing_newline);
  check_result(out.text, path);
  out.changed = true;
  out.message =
      "removed " + canonical + " (line " + std::to_string(target->first + 1) + ") from " + path;
  if (config::is_mandatory_worker(canonical))
    out.message += "; it is mandatory, so it keeps running with its default settings";
  return out;
}

std::string list_workers(const std::string& text, const std::string& path) {
  const Layout L = analyse(text, path);
  std::ostringstream out;
  out << path << ":\n";
  std::vector<std::string> listed;
  if (L.entries.empty()) out << "  (no workers listed)\n";
  for (const auto& e : L.entries) {
    out << "  " << e.name;
    for (size_t i = e.name.size(); i < 22; ++i) out << ' ';
    out << "line " << (e.first + 1);
    if (e.written != e.name) out << "  (written as " << e.written << ")";
    if (!is_builtin(e.name)) out << "  (not a built-in worker of this engine)";
    out << "\n";
    listed.push_back(e.name);
  }
  std::vector<std::string> implicit, available;
  for (const auto& n : builtin_names()) {
    if (std::find(listed.begin(), listed.end(), n) != listed.end()) continue;
    (config::is_mandatory_worker(n) ? implicit : available).push_back(n);
  }
  if (!implicit.empty()) out << "always running (mandatory): " << join(implicit) << "\n";
  if (!available.empty()) out << "built in, not configured: " << join(available) << "\n";
  return out.str();
}

int run_worker_command(const WorkerOptions& opts) {
  const std::string& path = opts.config_path;
  std::string text;
  bool exists = false;
  {
    std::error_code ec;
    exists = std::filesystem::exists(path, ec);
    if (exists) {
      std::ifstream in(path, std::ios::binary);
      std::ostringstream buf;
      buf << in.rdbuf();
      if (!in && !in.eof()) {
        std::cerr << "Error: cannot read " << path << ": " << std::strerror(errno) << "\n";
        return 2;
      }
      text = buf.str();
    }
  }
  try {
    if (opts.action == "list") {
      if (!exists) {
        std::cerr << "Error: " << path << " not found (iii worker add <name> creates it)\n";
        return 2;
      }
      std::cout << list_workers(text, path);
      return 0;
    }
    if (opts.action == "remove" && !exists) {
      std::cerr << "Error: " << path << " not found\n";
      return 2;
    }
    const WorkerEdit edit = opts.action == "add" ? add_worker(text, opts.name, path)
                                                 : remove_worker(text, opts.name, path);
    if (edit.changed) {
      // Atomic replace, keeping the file's permissions.
      const std::string tmp = path + ".iii-tmp";
      {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << edit.text;
        out.flush();
        if (!out) {
          std::cerr << "Error: cannot write " << tmp << ": " << std::strerror(errno) << "\n";
          std::remove(tmp.c_str());
          return 2;
        }
      }
      struct stat st {};
      if (exists && ::stat(path.c_str(), &st) == 0) ::chmod(tmp.c_str(), st.st_mode & 07777);
      if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::cerr << "Error: cannot replace " << path << ": " << std::strerror(errno) << "\n";
        std::remove(tmp.c_str());
        return 2;
      }
    }
    std::cout << edit.message << "\n";
    return 0;
  } catch (const WorkerCommandError& e) {
    std::cerr << "Error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace iii::cli
