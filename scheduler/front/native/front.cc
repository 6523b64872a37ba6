// hashserve's native front: the customers' gRPC port, in C++, before the scheduler.
//
// Why it exists: a Python gRPC server spends about 200 us of CPU on every call before any of
// hashserve's own work begins, so a scheduler that answers each customer's call itself cannot
// reach the rate of a bare Python server. This front terminates the customers' calls in gRPC's
// C++ core and hands their submits to the leader in batches (`Intake.SubmitMany`), so the leader
// pays one call for many submits.
//
// What it does, and nothing more:
//   - SubmitJob and SubmitJobs: queued, and sent to the leader together while a batch is in
//     flight (as a journal's group commit: under load a batch grows, idle a submit goes alone
//     at once). Each item carries its customer's own API key; the leader authenticates,
//     validates, admits and journals every item as if it had come alone, and its answer is
//     passed back as it is. The front holds no credential and decides nothing.
//   - Every other CustomerService method, the AdminService and server reflection: passed
//     through to the leader, stream by stream, with the caller's metadata and deadline. Agents
//     connect to the scheduler's own port, not here.
//   - Health (grpc.health.v1): SERVING while the process serves.
//   - With --metrics-listen, Prometheus metrics: the scheduler's gRPC server series
//     (hashserve_grpc_server_*, go-grpc-prometheus's names and labels, as the Python front's
//     and the scheduler's own), so one dashboard reads every engine; and the intake's batches.
// A batch the leader did not answer (it died, or is being replaced) is sent again for as long
// as --failover-wait-s allows, but only its items whose jobs all have an idempotency key: the
// leader may have journalled them before it went. The others are answered UNAVAILABLE.
// It parses no protobuf beyond the few fields it must (the wire format, by hand): it needs
// gRPC's C++ library alone, and its behaviour is that of the Python front (scheduler/front/).
//
// Build: scripts/build_front.sh (generic x86-64/aarch64 code: nothing here is tuned to the
// building CPU). Run: `hashserve front --engine native`, or `hashserve up`, which starts it when
// it is built.

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kSubmitJob = "/hashserve.v1.CustomerService/SubmitJob";
constexpr const char* kSubmitJobs = "/hashserve.v1.CustomerService/SubmitJobs";
constexpr const char* kSubmitMany = "/hashserve.v1.Intake/SubmitMany";
constexpr std::string_view kPassedPrefixes[] = {
    "/hashserve.v1.CustomerService/",
    "/hashserve.v1.AdminService/",  // operators use the same address (`hashserve up`)
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
};
constexpr int kMaxMessageBytes = 8 * 1024 * 1024;  // as the scheduler's own port
// A batch stays well below the leader's message limit however large its customers' calls.
constexpr size_t kMaxBatchBytes = 4 * 1024 * 1024;

void log_line(const std::string& text) {
  std::string line = "hashserve-front-native[" + std::to_string(getpid()) + "]: " + text + "\n";
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

// ----- the protobuf wire format, the few fields this front reads or writes -------------------

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_bytes_field(std::string& out, uint32_t field, std::string_view data) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, data.size());
  out.append(data);
}

struct WireField {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};

// Reads a message's fields one by one; `ok()` is false once the data is malformed.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}

  bool next(WireField& field) {
    if (pos_ >= data_.size() || bad_) return false;
    uint64_t key = 0;
    if (!varint(key)) return false;
    field.number = static_cast<uint32_t>(key >> 3);
    field.wire_type = static_cast<uint32_t>(key & 7);
    field.bytes = {};
    switch (field.wire_type) {
      case 0:
        return varint(field.varint);
      case 1:
        return skip(8);
      case 2: {
        uint64_t length = 0;
        if (!varint(length) || length > data_.size() - pos_) return fail();
        field.bytes = data_.substr(pos_, length);
        pos_ += length;
        return true;
      }
      case 5:
        return skip(4);
      default:
        return fail();
    }
  }
  bool ok() const { return !bad_; }

 private:
  bool fail() {
    bad_ = true;
    return false;
  }
  bool skip(size_t n) {
    if (n > data_.size() - pos_) return fail();
    pos_ += n;
    return true;
  }
  bool varint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return fail();
      auto byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return true;
    }
    return fail();
  }
  std::string_view data_;
  size_t pos_ = 0;
  bool bad_ = false;
};

// SubmitJobsRequest {repeated SubmitJobRequest jobs = 1}; SubmitJobRequest {string
// idempotency_key = 2}: a second try is safe only when every job names its key.
bool every_job_keyed(std::string_view jobs_request) {
  WireReader jobs(jobs_request);
  WireField job;
  while (jobs.next(job)) {
    if (job.number != 1 || job.wire_type != 2) continue;
    WireReader fields(job.bytes);
    WireField field;
    bool keyed = false;
    while (fields.next(field)) {
      if (field.number == 2 && field.wire_type == 2 && !field.bytes.empty()) keyed = true;
    }
    if (!keyed) return false;
  }
  return jobs.ok();
}

std::string flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const auto& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

grpc::ByteBuffer to_buffer(std::string data) {
  grpc::Slice slice(std::move(data));
  return grpc::ByteBuffer(&slice, 1);
}

// 'authorization: Bearer <key>', as scheduler/api/auth.py reads it; empty when absent.
std::string bearer_key(const grpc::GenericCallbackServerContext* ctx) {
  for (const auto& [name, value] : ctx->client_metadata()) {
    std::string_view key(name.data(), name.size());
    if (key != "authorization") continue;
    std::string text(value.data(), value.size());
    auto space = text.find(' ');
    if (space == std::string::npos) return "";
    std::string scheme = text.substr(0, space);
    for (auto& c : scheme) c = static_cast<char>(tolower(c));
    std::string token = text.substr(space + 1);
    auto first = token.find_first_not_of(" \t");
    auto last = token.find_last_not_of(" \t");
    if (scheme != "bearer" || first == std::string::npos) return "";
    return token.substr(first, last - first + 1);
  }
  return "";
}

// ----- submits, batched to the leader ---------------------------------------------------------

const char* code_name(grpc::StatusCode code) {
  static const char* names[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  auto i = static_cast<size_t>(code);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "UNKNOWN";
}
constexpr size_t kCodes = 17;

// ----- metrics ----------------------------------------------------------------------------------

// The series of scheduler/metrics/grpc_interceptor.py, with its buckets, and the intake's own.
class Metrics {
 public:
  Metrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        started_(prometheus::BuildCounter()
                     .Name("hashserve_grpc_server_started_total")
                     .Help("RPCs started on the server.")
                     .Register(*registry_)),
        handled_(prometheus::BuildCounter()
                     .Name("hashserve_grpc_server_handled_total")
                     .Help("RPCs completed on the server, by status code.")
                     .Register(*registry_)),
        handling_(prometheus::BuildHistogram()
                      .Name("hashserve_grpc_server_handling_seconds")
                      .Help("Time from the start of an RPC to its status, as the server sees it.")
                      .Register(*registry_)),
        batch_submits_(prometheus::BuildHistogram()
                           .Name("hashserve_front_intake_batch_submits")
                           .Help("Customers' submit calls per batch sent to the leader.")
                           .Register(*registry_)
                           .Add({}, prometheus::Histogram::BucketBoundaries{
                                        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})),
        batches_(prometheus::BuildCounter()
                     .Name("hashserve_front_intake_batches_total")
                     .Help("Batches of submits sent to the leader, by the call's status.")
                     .Register(*registry_)),
        resent_(prometheus::BuildCounter()
                    .Name("hashserve_front_intake_resent_total")
                    .Help("Keyed submits sent to the leader again after it did not answer.")
                    .Register(*registry_)
                    .Add({})) {}

  // One method's series, made on its first call: the methods served are a fixed few.
  struct Method {
    prometheus::Counter* started;
    prometheus::Histogram* handling;
    std::array<prometheus::Counter*, kCodes> handled{};
    prometheus::Labels labels;
  };

  Method* method(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = methods_.find(path);
    if (found != methods_.end()) return &found->second;
    // "/hashserve.v1.CustomerService/WatchJob" -> service, method
    auto slash = path.find('/', 1);
    std::string service = path.substr(1, slash - 1), name = path.substr(slash + 1);
    const char* type = "unary";
    if (name == "WatchJob") type = "server_stream";
    if (name == "ServerReflectionInfo") type = "bidi_stream";
    prometheus::Labels labels{{"grpc_service", service}, {"grpc_method", name},
                              {"grpc_type", type}};
    Method m{&started_.Add(labels),
             &handling_.Add(labels, prometheus::Histogram::BucketBoundaries{
                                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0,
                                        3600.0}),
             {}, labels};
    return &methods_.emplace(path, std::move(m)).first->second;
  }

  void handled(Method* m, const grpc::Status& status, Clock::time_point started) {
    m->handling->Observe(std::chrono::duration<double>(Clock::now() - started).count());
    auto code = static_cast<size_t>(status.error_code());
    if (code >= kCodes) code = static_cast<size_t>(grpc::StatusCode::UNKNOWN);
    prometheus::Counter* counter;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (m->handled[code] == nullptr) {
        auto labels = m->labels;
        labels["grpc_code"] = code_name(static_cast<grpc::StatusCode>(code));
        m->handled[code] = &handled_.Add(labels);
      }
      counter = m->handled[code];
    }
    counter->Increment();
  }

  void batch_sent(size_t submits) { batch_submits_.Observe(static_cast<double>(submits)); }

  void batch_answered(const grpc::Status& status) {
    batches_.Add({{"grpc_code", code_name(status.error_code())}}).Increment();
  }

  void resent(size_t submits) { resent_.Increment(static_cast<double>(submits)); }

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_;
  prometheus::Histogram& batch_submits_;
  prometheus::Family<prometheus::Counter>& batches_;
  prometheus::Counter& resent_;
  std::mutex mu_;
  std::unordered_map<std::string, Method> methods_;
};

// One customer call's series: started when made, handled once when its status is known.
class CallMetrics {
 public:
  CallMetrics(Metrics& metrics, const std::string& method)
      : metrics_(metrics), method_(metrics.method(method)), started_(Clock::now()) {
    method_->started->Increment();
  }
  void done(const grpc::Status& status) {
    if (!done_.exchange(true)) metrics_.handled(method_, status, started_);
  }

 private:
  Metrics& metrics_;
  Metrics::Method* method_;
  Clock::time_point started_;
  std::atomic<bool> done_{false};
};

struct Settings {
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen;  // host:port of /metrics; empty: none
  std::string scheduler = "127.0.0.1:50061";
  size_t max_batch_items = 256;
  int max_in_flight = 2;
  double failover_wait_s = 15.0;
  double call_timeout_s = 10.0;
  std::string tls_cert, tls_key, scheduler_tls_ca, scheduler_tls_server_name;
};

// One customer's submit call; `answer` is called exactly once, on any thread.
struct Item {
  std::string api_key;
  std::string jobs_request;  // SubmitJobsRequest bytes
  bool retry_safe = false;
  Clock::time_point deadline;
  // (status, SubmitJobsResponse bytes when OK)
  std::function<void(const grpc::Status&, std::string_view)> answer;
};
using ItemPtr = std::shared_ptr<Item>;

class Batcher {
 public:
  Batcher(std::shared_ptr<grpc::Channel> channel, const Settings& s, Metrics& metrics)
      : stub_(std::move(channel)),
        settings_(s),
        metrics_(metrics),
        retry_thread_([this] { retry_loop(); }) {}

  ~Batcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    retry_cv_.notify_all();
    retry_thread_.join();
  }

  void submit(ItemPtr item) {
    std::vector<std::vector<ItemPtr>> batches;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back(std::move(item));
      batches = take_batches_locked();
    }
    for (auto& batch : batches) send(std::move(batch));
  }

 private:
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer reply;
    std::vector<ItemPtr> batch;
  };

  std::vector<std::vector<ItemPtr>> take_batches_locked() {
    std::vector<std::vector<ItemPtr>> batches;
    while (!pending_.empty() && in_flight_ < settings_.max_in_flight && !stopping_) {
      std::vector<ItemPtr> batch;
      size_t bytes = 0;
      while (!pending_.empty() && batch.size() < settings_.max_batch_items) {
        size_t size = pending_.front()->jobs_request.size();
        if (!batch.empty() && bytes + size > kMaxBatchBytes) break;
        bytes += size;
        batch.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      ++in_flight_;
      batches.push_back(std::move(batch));
    }
    return batches;
  }

  void send(std::vector<ItemPtr> batch) {
    auto* call = new Call;
    std::string request;
    for (const auto& item : batch) {
      std::string one;  // IntakeItem {string api_key = 1; SubmitJobsRequest request = 2}
      put_bytes_field(one, 1, item->api_key);
      put_bytes_field(one, 2, item->jobs_request);
      put_bytes_field(request, 1, one);  // SubmitManyRequest {repeated IntakeItem items = 1}
    }
    call->request = to_buffer(std::move(request));
    metrics_.batch_sent(batch.size());
    call->batch = std::move(batch);
    call->context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::duration<double>(settings_.call_timeout_s)));
    stub_.UnaryCall(&call->context, kSubmitMany, grpc::StubOptions(), &call->request,
                    &call->reply, [this, call](grpc::Status status) {
                      on_reply(call, status);
                      delete call;
                      std::vector<std::vector<ItemPtr>> batches;
                      {
                        std::lock_guard<std::mutex> lock(mu_);
                        --in_flight_;
                        batches = take_batches_locked();
                      }
                      for (auto& next : batches) send(std::move(next));
                    });
  }

  void on_reply(Call* call, const grpc::Status& status) {
    metrics_.batch_answered(status);
    if (!status.ok()) {
      failed(call->batch, status);
      return;
    }
    // SubmitManyResponse {repeated IntakeResult results = 1}; IntakeResult {uint32 code = 1;
    // string message = 2; SubmitJobsResponse response = 3}
    std::string reply = flatten(call->reply);
    WireReader results(reply);
    WireField result;
    size_t i = 0;
    while (results.next(result) && i < call->batch.size()) {
      if (result.number != 1 || result.wire_type != 2) continue;
      uint64_t code = 0;
      std::string_view message, response;
      WireReader fields(result.bytes);
      WireField field;
      while (fields.next(field)) {
        if (field.number == 1 && field.wire_type == 0) code = field.varint;
        if (field.number == 2 && field.wire_type == 2) message = field.bytes;
        if (field.number == 3 && field.wire_type == 2) response = field.bytes;
      }
      auto& item = call->batch[i++];
      if (code == 0) {
        item->answer(grpc::Status::OK, response);
      } else {
        item->answer(grpc::Status(static_cast<grpc::StatusCode>(code), std::string(message)),
                     {});
      }
    }
    if (i < call->batch.size()) {
      log_line("the leader answered " + std::to_string(i) + " of " +
               std::to_string(call->batch.size()) + " submits of a batch");
      for (; i < call->batch.size(); ++i) {
        call->batch[i]->answer(
            grpc::Status(grpc::StatusCode::INTERNAL, "the scheduler's answer was incomplete"), {});
      }
    }
  }

  void failed(std::vector<ItemPtr>& batch, const grpc::Status& status) {
    bool retryable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    auto now = Clock::now();
    std::vector<ItemPtr> again;
    for (auto& item : batch) {
      if (retryable && item->retry_safe && now < item->deadline) {
        again.push_back(item);
      } else if (retryable) {
        item->answer(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  "the scheduler did not answer (" + std::string(code_name(status.error_code())) + ": " +
                                      status.error_message() +
                                      "); not acknowledged: send it again (an idempotency_key "
                                      "makes that safe)"),
                     {});
      } else {
        item->answer(status, {});
      }
    }
    if (again.empty()) return;
    metrics_.resent(again.size());
    log_line("the leader did not answer (" + std::string(code_name(status.error_code())) + ": " + status.error_message() +
             "): " + std::to_string(again.size()) + " keyed submits wait for it");
    {
      std::lock_guard<std::mutex> lock(mu_);
      retries_.emplace_back(now + std::chrono::milliseconds(200), std::move(again));
    }
    retry_cv_.notify_all();
  }

  // Items put back after a pause go first, before those that came since: they are older.
  void retry_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      if (retries_.empty()) {
        retry_cv_.wait(lock);
        continue;
      }
      auto due = retries_.front().first;
      if (Clock::now() < due) {
        retry_cv_.wait_until(lock, due);
        continue;
      }
      auto items = std::move(retries_.front().second);
      retries_.erase(retries_.begin());
      pending_.insert(pending_.begin(), items.begin(), items.end());
      auto batches = take_batches_locked();
      lock.unlock();
      for (auto& batch : batches) send(std::move(batch));
      lock.lock();
    }
  }

  grpc::GenericStub stub_;
  const Settings& settings_;
  Metrics& metrics_;
  std::mutex mu_;
  std::deque<ItemPtr> pending_;
  std::vector<std::pair<Clock::time_point, std::vector<ItemPtr>>> retries_;
  int in_flight_ = 0;
  bool stopping_ = false;
  std::condition_variable retry_cv_;
  std::thread retry_thread_;
};

// A SubmitJob (`single`: its answer is the batch answer's one job) or a SubmitJobs.
class SubmitReactor : public grpc::ServerGenericBidiReactor {
 public:
  SubmitReactor(grpc::GenericCallbackServerContext* ctx, Batcher& batcher, bool single,
                double failover_wait_s, Metrics& metrics)
      : ctx_(ctx),
        batcher_(batcher),
        single_(single),
        failover_wait_s_(failover_wait_s),
        metrics_(metrics, ctx->method()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message"));
      return;
    }
    std::string key = bearer_key(ctx_);
    if (key.empty()) {
      finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing credentials: send metadata 'authorization: Bearer <key>'"));
      return;
    }
    auto item = std::make_shared<Item>();
    item->api_key = std::move(key);
    std::string request = flatten(request_);
    if (single_) {
      put_bytes_field(item->jobs_request, 1, request);  // SubmitJobsRequest{jobs: [it]}
    } else {
      item->jobs_request = std::move(request);
    }
    item->retry_safe = every_job_keyed(item->jobs_request);
    item->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(failover_wait_s_));
    item->answer = [this](const grpc::Status& status, std::string_view response) {
      answer(status, response);
    };
    batcher_.submit(std::move(item));
  }

  void OnWriteDone(bool) override {}
  void OnCancel() override { metrics_.done(grpc::Status::CANCELLED); }
  void OnDone() override { delete this; }

 private:
  void finish(const grpc::Status& status) {
    metrics_.done(status);
    Finish(status);
  }

  // SubmitJobsResponse {repeated SubmitJobResponse jobs = 1}: a SubmitJob's answer is its one job.
  void answer(const grpc::Status& status, std::string_view response) {
    if (!status.ok()) {
      finish(status);
      return;
    }
    std::string out;
    if (single_) {
      WireReader jobs(response);
      WireField job;
      bool found = false;
      while (jobs.next(job)) {
        if (job.number == 1 && job.wire_type == 2) {
          out.assign(job.bytes);
          found = true;
          break;
        }
      }
      if (!found) {
        finish(grpc::Status(grpc::StatusCode::INTERNAL, "the scheduler answered no job"));
        return;
      }
    } else {
      out.assign(response);
    }
    reply_ = to_buffer(std::move(out));
    metrics_.done(grpc::Status::OK);
    StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
  }

  grpc::GenericCallbackServerContext* ctx_;
  Batcher& batcher_;
  bool single_;
  double failover_wait_s_;
  CallMetrics metrics_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer reply_;
};

// ----- every other call, passed through to the leader -----------------------------------------

// Two reactors, one per side, and one shared state: each side's OnDone releases it, and the
// last one deletes it. The upstream call is held open (a hold on its reactor) until the
// customer's side will write no more, so no write ever reaches a finished upstream call.
class PassThrough {
 public:
  PassThrough(grpc::GenericCallbackServerContext* ctx, grpc::GenericStub& stub, Metrics& metrics)
      : downstream_(this), upstream_(this), metrics_(metrics, ctx->method()) {
    for (const auto& [name, value] : ctx->client_metadata()) {
      std::string key(name.data(), name.size());
      if (key.empty() || key[0] == ':' || key.rfind("grpc-", 0) == 0 || key == "user-agent" ||
          key == "content-type" || key == "te" || key == "host") {
        continue;
      }
      client_.AddMetadata(key, std::string(value.data(), value.size()));
    }
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
      client_.set_deadline(ctx->deadline());
    }
    stub.PrepareBidiStreamingCall(&client_, ctx->method(), grpc::StubOptions(), &upstream_);
    upstream_.AddHold();
    upstream_.StartRead(&from_leader_);
    upstream_.StartCall();
    downstream_.StartRead(&from_customer_);
  }

  grpc::ServerGenericBidiReactor* reactor() { return &downstream_; }

 private:
  class Downstream : public grpc::ServerGenericBidiReactor {
   public:
    explicit Downstream(PassThrough* p) : p_(p) {}
    void OnReadDone(bool ok) override { p_->customer_read(ok); }
    void OnWriteDone(bool ok) override { p_->customer_written(ok); }
    void OnCancel() override { p_->client_.TryCancel(); }
    void OnDone() override { p_->release(); }

   private:
    PassThrough* p_;
  };

  class Upstream : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Upstream(PassThrough* p) : p_(p) {}
    void OnReadDone(bool ok) override { p_->leader_read(ok); }
    void OnWriteDone(bool ok) override { p_->leader_written(ok); }
    void OnDone(const grpc::Status& status) override { p_->leader_done(status); }

   private:
    PassThrough* p_;
  };

  void customer_read(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    if (held_released_) return;
    if (ok) {
      writing_up_ = true;
      lock.unlock();
      upstream_.StartWrite(&from_customer_);
      return;
    }
    held_released_ = true;  // the customer has sent everything (or is gone)
    lock.unlock();
    upstream_.StartWritesDone();
    upstream_.RemoveHold();
  }

  void leader_written(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    writing_up_ = false;
    if (!ok || leader_finished_sending_) {
      if (!held_released_) {
        held_released_ = true;
        lock.unlock();
        upstream_.RemoveHold();
      }
      return;
    }
    lock.unlock();
    downstream_.StartRead(&from_customer_);
  }

  void leader_read(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    if (ok) {
      writing_down_ = true;
      lock.unlock();
      downstream_.StartWrite(&from_leader_);
      return;
    }
    leader_finished_sending_ = true;
    if (!writing_up_ && !held_released_) {
      held_released_ = true;
      lock.unlock();
      upstream_.RemoveHold();
    }
  }

  void customer_written(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    writing_down_ = false;
    if (upstream_done_) {
      // The upstream call ended while this write was out (its status can come before its
      // last message is passed on): the customer's side finishes now, and reads no more.
      lock.unlock();
      metrics_.done(final_status_);
      downstream_.Finish(final_status_);
      release();
      return;
    }
    lock.unlock();
    if (ok) {
      upstream_.StartRead(&from_leader_);
    } else {
      client_.TryCancel();  // the customer is gone: so is the call upstream
    }
  }

  // Every upstream operation is over. A write to the customer may still be out: then its
  // completion finishes the customer's side, never a second operation on an ended call.
  void leader_done(const grpc::Status& status) {
    std::unique_lock<std::mutex> lock(mu_);
    upstream_done_ = true;
    final_status_ = status;
    if (writing_down_) return;
    lock.unlock();
    metrics_.done(status);
    downstream_.Finish(status);
    release();
  }

  void release() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  Downstream downstream_;
  Upstream upstream_;
  grpc::ClientContext client_;
  grpc::ByteBuffer from_customer_;
  grpc::ByteBuffer from_leader_;
  std::mutex mu_;
  bool writing_up_ = false;
  bool writing_down_ = false;
  bool held_released_ = false;
  bool leader_finished_sending_ = false;
  bool upstream_done_ = false;
  grpc::Status final_status_;
  CallMetrics metrics_;
  std::atomic<int> refs_{2};
};

class Refused : public grpc::ServerGenericBidiReactor {
 public:
  explicit Refused(const std::string& method) {
    Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "method " + method + " is not served by a front"));
  }
  void OnDone() override { delete this; }
};

class FrontService : public grpc::CallbackGenericService {
 public:
  FrontService(std::shared_ptr<grpc::Channel> upstream, const Settings& s, Metrics& metrics)
      : batcher(upstream, s, metrics), stub_(std::move(upstream)), settings_(s),
        metrics_(metrics) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    const std::string& method = ctx->method();
    if (method == kSubmitJob || method == kSubmitJobs) {
      return new SubmitReactor(ctx, batcher, method == kSubmitJob, settings_.failover_wait_s,
                               metrics_);
    }
    for (auto prefix : kPassedPrefixes) {
      if (std::string_view(method).substr(0, prefix.size()) == prefix) {
        return (new PassThrough(ctx, stub_, metrics_))->reactor();
      }
    }
    return new Refused(method);  // not counted: its name is the caller's, unbounded
  }

  Batcher batcher;

 private:
  grpc::GenericStub stub_;
  const Settings& settings_;
  Metrics& metrics_;
};

// ----- the process ----------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    log_line("cannot read " + path);
    std::exit(2);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const char* kUsage =
    "usage: hashserve-front-native --listen HOST:PORT --scheduler TARGET\n"
    "         [--metrics-listen HOST:PORT]\n"
    "         [--max-batch-items N] [--failover-wait-s S] [--call-timeout-s S]\n"
    "         [--tls-cert PEM --tls-key PEM] [--scheduler-tls-ca PEM]\n"
    "         [--scheduler-tls-server-name NAME]\n"
    "TARGET is a gRPC target: host:port, ipv4:a:p,b:q (the leader and its standbys) or dns:name.\n"
    "Started by `hashserve front --engine native` (see its --help).\n";

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "hashserve-front-native: %s needs a value\n%s", arg.c_str(), kUsage);
      std::exit(2);
    }
    std::string value = argv[++i];
    try {
      if (arg == "--listen") s.listen = value;
      else if (arg == "--scheduler") s.scheduler = value;
      else if (arg == "--metrics-listen") s.metrics_listen = value;
      else if (arg == "--max-batch-items") s.max_batch_items = std::stoul(value);
      else if (arg == "--failover-wait-s") s.failover_wait_s = std::stod(value);
      else if (arg == "--call-timeout-s") s.call_timeout_s = std::stod(value);
      else if (arg == "--tls-cert") s.tls_cert = value;
      else if (arg == "--tls-key") s.tls_key = value;
      else if (arg == "--scheduler-tls-ca") s.scheduler_tls_ca = value;
      else if (arg == "--scheduler-tls-server-name") s.scheduler_tls_server_name = value;
      else {
        fprintf(stderr, "hashserve-front-native: unknown option %s\n%s", arg.c_str(), kUsage);
        std::exit(2);
      }
    } catch (const std::exception&) {
      fprintf(stderr, "hashserve-front-native: %s: not a number: %s\n", arg.c_str(),
              value.c_str());
      std::exit(2);
    }
  }
  if (s.max_batch_items < 1 || s.max_batch_items > 1024) {
    fprintf(stderr, "hashserve-front-native: --max-batch-items must be 1..1024\n");
    std::exit(2);
  }
  return s;
}

std::shared_ptr<grpc::Channel> upstream_channel(const Settings& s) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // A standby starts serving within seconds of a leader's loss: look for it every 200 ms to
  // 1 s, not gRPC's default of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetLoadBalancingPolicyName("pick_first");
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!s.scheduler_tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_file(s.scheduler_tls_ca);
    creds = grpc::SslCredentials(ssl);
    if (!s.scheduler_tls_server_name.empty()) {
      args.SetSslTargetNameOverride(s.scheduler_tls_server_name);
    }
  }
  return grpc::CreateCustomChannel(s.scheduler, creds, args);
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings = parse(argc, argv);
  // Every thread gRPC starts inherits this mask, so the signals reach sigwait below alone.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Metrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  int metrics_port = 0;
  if (!settings.metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(settings.metrics_listen);
    } catch (const std::exception& err) {
      log_line("could not serve metrics on " + settings.metrics_listen + ": " + err.what());
      return 2;
    }
    exposer->RegisterCollectable(metrics.registry());
    auto ports = exposer->GetListeningPorts();
    metrics_port = ports.empty() ? 0 : ports.front();
  }
  grpc::EnableDefaultHealthCheckService(true);
  FrontService service(upstream_channel(settings), settings, metrics);
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!settings.tls_cert.empty() || !settings.tls_key.empty()) {
    if (settings.tls_cert.empty() || settings.tls_key.empty()) {
      log_line("--tls-cert and --tls-key go together");
      return 2;
    }
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({read_file(settings.tls_key), read_file(settings.tls_cert)});
    creds = grpc::SslServerCredentials(ssl);
  }
  int port = 0;
  builder.AddListeningPort(settings.listen, creds, &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // Several fronts on one machine share the port; the kernel spreads connections over them.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 1);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    log_line("could not bind the front to " + settings.listen);
    return 2;
  }
  // The one line a supervisor reads for the ports (`--listen host:0` picks a free one; a
  // metrics port of 0: none served).
  printf("serving port=%d metrics_port=%d\n", port, metrics_port);
  fflush(stdout);
  log_line("serving customers on " + settings.listen + " (port " + std::to_string(port) +
           ") for the scheduler at " + settings.scheduler +
           (metrics_port ? "; metrics on port " + std::to_string(metrics_port) : ""));

  int received = 0;
  sigwait(&signals, &received);
  log_line(std::string("stopping (") + (received == SIGTERM ? "SIGTERM" : "SIGINT") +
           "): finishing the calls in flight");
  server->GetHealthCheckService()->SetServingStatus(false);
  // Calls still open after the grace are cancelled: their customers retry (an idempotency key
  // makes that safe), as after any front's loss.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  log_line("stopped");
  // Nothing here outlives the process, and a submit whose batch is still out must not hold
  // the exit: its customer already has its answer (CANCELLED) from the shutdown.
  std::_Exit(0);
}
