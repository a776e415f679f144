#include "qkvctl/testing/fake_daemon.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "qkvshare/v1/admin.grpc.pb.h"
#include "qkvshare/v1/cards.grpc.pb.h"
#include "qkvshare/v1/catalog.grpc.pb.h"
#include "qkvshare/v1/tasks.grpc.pb.h"

namespace qkvshare::qkvctl::testing {

namespace {

constexpr int64_t kT0 = 1'800'000'000'000;  // event clock, unix ms

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status NotFound(const std::string& what) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, what);
}

std::string PseudoRandomBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

v1::CardInfo CardInfoFor(const std::string& id, const std::string& parent, int64_t bytes) {
  v1::CardInfo c;
  c.set_id(id);
  c.set_parent_id(parent);
  c.set_bytes(bytes);
  c.set_chain_bytes(bytes + (parent.empty() ? 0 : 300000));
  c.set_tokens(18);
  c.set_context_tokens(parent.empty() ? 18 : 36);
  c.set_avg_bits(4.02);
  c.set_mode("quantized");
  c.set_policy("adaptive");
  c.set_budget_bits(4);
  c.set_refs(parent.empty() ? 1 : 0);
  c.set_age_ms(65'000);
  c.set_source_agent(parent.empty() ? "writer" : "continuer");
  c.set_hop(parent.empty() ? 0 : 1);
  c.set_fingerprint(std::string(64, 'a'));
  c.set_shm_name("/qkvshare.default." + id);
  for (int l = 0; l < 5; ++l) {
    c.add_layer_k_bytes(1000 + l);
    c.add_layer_v_bytes(2000 + l);
  }
  for (int b = 0; b <= 16; ++b) {
    c.add_k_bits_histogram(b == 4 ? 12 : b == 8 ? 6 : 0);
    c.add_v_bits_histogram(b == 4 ? 16 : b == 2 ? 2 : 0);
  }
  c.set_created_unix_ms(kT0);
  return c;
}

}  // namespace

std::vector<v1::TaskEvent> ScriptTask(const std::string& id, const std::vector<std::string>& agents,
                                      v1::TaskState outcome, v1::Task* task) {
  std::vector<v1::TaskEvent> events;
  auto next = [&]() -> v1::TaskEvent& {
    v1::TaskEvent& e = events.emplace_back();
    e.set_seq(static_cast<int64_t>(events.size()) - 1);
    e.set_time_unix_ms(kT0 + 10 * e.seq());
    e.set_task_id(id);
    return e;
  };
  task->set_id(id);
  task->set_num_hops(static_cast<int>(agents.size()));
  task->set_created_unix_ms(kT0);
  task->set_started_unix_ms(kT0);
  next().mutable_queued()->set_position(0);
  std::vector<std::string> words = absl::StrSplit(kFakeHopText, ' ');
  const int n = static_cast<int>(agents.size());
  for (int hop = 0; hop < n; ++hop) {
    bool last = hop + 1 == n;
    auto* started = next().mutable_hop_started();
    started->set_hop(hop);
    started->set_num_hops(n);
    started->set_agent(agents[hop]);
    v1::HopResult r;
    r.set_index(hop);
    r.set_agent(agents[hop]);
    r.set_model("stories");
    if (hop > 0) {
      v1::HandoffStats* in = r.mutable_handoff_in();
      in->set_requested_mode(v1::HANDOFF_MODE_CARD);
      if (agents[hop] == "stranger") {
        in->set_mode(v1::HANDOFF_MODE_REPREFILL);
        in->set_fallback_reason("fingerprint mismatch: agent stranger runs another model");
        in->set_reprefill_tokens(18 * hop);
      } else {
        in->set_mode(v1::HANDOFF_MODE_CARD);
        in->set_card_id(absl::StrFormat("%02dcafe%026d", hop, 0));
        in->set_card_bytes(12345 * hop);
        in->set_chain_bytes(12345 * hop * (hop + 1) / 2);
        in->set_card_tokens(18);
        in->set_context_tokens(18 * hop);
        in->set_avg_bits(4.02);
        in->set_fp16_bytes(46080 * hop);
        in->set_build_ms(1.2);
        in->set_inject_ms(0.8);
      }
      v1::TaskEvent& h = next();
      h.mutable_handoff()->set_hop(hop);
      *h.mutable_handoff()->mutable_stats() = *in;
    }
    int tokens = static_cast<int>(words.size());
    if (last && outcome != v1::TASK_STATE_FINISHED) tokens = 2;
    std::string text;
    for (int t = 0; t < tokens; ++t) {
      auto* tok = next().mutable_token();
      tok->set_hop(hop);
      tok->set_id(100 + t);
      tok->set_index(t);
      tok->set_text(t == 0 ? words[t] : " " + words[t]);
      text += tok->text();
    }
    if (last && outcome != v1::TASK_STATE_FINISHED) {
      v1::TaskEvent& end = next();
      v1::TaskEvent::TaskEnded* ended =
          outcome == v1::TASK_STATE_FAILED ? end.mutable_failed() : end.mutable_cancelled();
      ended->set_state(outcome);
      ended->set_reason(
          outcome == v1::TASK_STATE_FAILED
              ? absl::StrCat("hop ", hop + 1, " (", agents[hop], "): agent error: out of memory")
              : "cancelled by client");
      task->set_state(outcome);
      task->set_reason(ended->reason());
      task->set_ended_unix_ms(end.time_unix_ms());
      task->set_num_events(static_cast<int64_t>(events.size()));
      return events;
    }
    r.set_output(text);
    r.set_prefill_tokens(10);
    r.set_generated_tokens(tokens);
    r.set_ttft_ms(4.5 + hop);
    r.set_prefill_ms(2);
    r.set_decode_tokens_per_s(250.0 - 10 * hop);
    r.set_stop(v1::STOP_REASON_MAX_NEW_TOKENS);
    r.set_stop_reason("max_new_tokens");
    r.set_total_ms(40);
    if (!last) {
      auto* card = next().mutable_card_built();
      card->set_hop(hop);
      card->set_card_id(absl::StrFormat("%02dcafe%026d", hop + 1, 0));
      card->set_tokens(18);
      card->set_bytes(12345 * (hop + 1));
      card->set_avg_bits(4.02);
      card->set_build_ms(1.2);
    }
    auto* finished = next().mutable_hop_finished();
    finished->set_hop(hop);
    *finished->mutable_result() = r;
    *task->add_hops() = r;
    task->set_output(text);
  }
  v1::TaskEvent& end = next();
  end.mutable_finished()->set_state(v1::TASK_STATE_FINISHED);
  end.mutable_finished()->set_output(task->output());
  task->set_state(v1::TASK_STATE_FINISHED);
  task->set_ended_unix_ms(end.time_unix_ms());
  task->set_num_events(static_cast<int64_t>(events.size()));
  return events;
}

FakeDaemon::State FakeDaemon::DefaultState() {
  State s;
  v1::Status& st = s.status;
  st.set_version("0.1.0-fake");
  st.set_metrics_listen("127.0.0.1:9464");
  st.set_instance("default");
  st.set_uptime_ms(3'723'000);
  st.set_listen("unix:///run/qkvshare/qkvshared.sock");
  st.set_agents(4);
  st.set_agents_busy(1);
  st.set_queued_tasks(2);
  st.set_running_tasks(1);
  st.set_queue_capacity(16);
  st.set_store_bytes(3 << 20);
  st.set_store_quota_bytes(256 << 20);
  st.set_store_cards(2);
  st.set_workflows(2);
  st.set_state("serving");
  st.set_pid(4242);

  s.stats.set_tasks_submitted(7);
  s.stats.set_tasks_finished(5);
  s.stats.set_tasks_failed(1);
  s.stats.set_tokens_generated(1234);
  s.stats.set_cards_built(9);
  s.stats.mutable_hop_ttft_ms()->set_count(15);
  s.stats.mutable_hop_ttft_ms()->set_mean(5.25);
  s.stats.mutable_hop_ttft_ms()->set_p99(9.5);

  for (const char* name : {"writer", "continuer", "ender", "stranger"}) {
    v1::AgentInfo* a = s.agents.add_agents();
    a->set_name(name);
    a->set_model(std::string(name) == "stranger" ? "other" : "stories");
    a->set_model_dir("/usr/local/share/qkvshare/models/stories260K");
    a->set_dtype("f32");
    a->set_state(std::string(name) == "writer" ? "busy" : "idle");
    a->set_kv_cache_bytes(1 << 20);
    a->set_weight_bytes(1'050'000);
    a->set_fingerprint(std::string(name) == "stranger" ? std::string(64, 'b')
                                                       : std::string(64, 'a'));
    a->set_role("");
    a->set_context_limit(512);
    a->set_hops_run(3);
  }
  v1::WorkflowInfo* story = s.workflows.add_workflows();
  story->set_name("story");
  story->set_description("writer -> continuer -> ender, 4-bit adaptive cards");
  story->set_file("/etc/qkvshare/workflows/story.yaml");
  for (const char* agent : {"writer", "continuer", "ender"}) {
    auto* h = story->add_hops();
    h->set_agent(agent);
    h->set_handoff_mode(v1::HANDOFF_MODE_CARD);
    h->set_handoff_bits(4);
    h->set_handoff_policy(v1::BIT_POLICY_ADAPTIVE);
  }
  v1::WorkflowInfo* pair = s.workflows.add_workflows();
  pair->set_name("pair");
  pair->set_description("writer -> stranger (falls back to re-prefill)");
  pair->add_hops()->set_agent("writer");
  pair->add_hops()->set_agent("stranger");
  s.reload_result = {"pair", "story"};

  v1::Task t;
  s.events["t-000001"] =
      ScriptTask("t-000001", {"writer", "continuer", "ender"}, v1::TASK_STATE_FINISHED, &t);
  t.set_workflow("story");
  t.set_input("Once upon a time");
  s.tasks.push_back(t);

  Card c1{CardInfoFor("c1", "", 300000), PseudoRandomBytes(300000, 1)};
  Card c2{CardInfoFor("c2", "c1", 4096), PseudoRandomBytes(4096, 2)};
  s.cards["c1"] = c1;
  s.cards["c2"] = c2;
  return s;
}

class FakeDaemon::Services final : public v1::AdminService::Service,
                                   public v1::CatalogService::Service,
                                   public v1::TaskService::Service,
                                   public v1::CardService::Service {
 public:
  explicit Services(FakeDaemon* d) : d_(d) {}

  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::Status* out) override {
    absl::MutexLock lock(&d_->mu_);
    *out = d_->state_.status;
    return grpc::Status::OK;
  }
  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest*, v1::Stats* out) override {
    absl::MutexLock lock(&d_->mu_);
    *out = d_->state_.stats;
    return grpc::Status::OK;
  }
  grpc::Status ListAgents(grpc::ServerContext*, const v1::ListAgentsRequest*,
                          v1::ListAgentsResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    *out = d_->state_.agents;
    return grpc::Status::OK;
  }
  grpc::Status ListWorkflows(grpc::ServerContext*, const v1::ListWorkflowsRequest*,
                             v1::ListWorkflowsResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    *out = d_->state_.workflows;
    return grpc::Status::OK;
  }
  grpc::Status ReloadWorkflows(grpc::ServerContext*, const v1::ReloadWorkflowsRequest*,
                               v1::ReloadWorkflowsResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    if (!d_->state_.reload_error.ok()) return ToGrpc(d_->state_.reload_error);
    for (const std::string& w : d_->state_.reload_result) out->add_workflows(w);
    return grpc::Status::OK;
  }

  grpc::Status SubmitTask(grpc::ServerContext*, const v1::SubmitTaskRequest* req,
                          v1::SubmitTaskResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    State& s = d_->state_;
    if (!s.submit_error.ok()) return ToGrpc(s.submit_error);
    const v1::WorkflowInfo* wf = nullptr;
    for (const v1::WorkflowInfo& w : s.workflows.workflows()) {
      if (w.name() == req->workflow()) wf = &w;
    }
    if (wf == nullptr) return NotFound(absl::StrCat("unknown workflow \"", req->workflow(), "\""));
    if (req->input().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "input is empty");
    }
    if (req->handoff_override().has_bits()) {
      double b = req->handoff_override().bits();
      if (!((b >= 2 && b <= 8) || b == 16)) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("handoff bits ", b, " must be in [2, 8] or exactly 16"));
      }
    }
    s.submitted.push_back(*req);
    std::string id = absl::StrFormat("t-%06d", s.tasks.size() + 1);
    std::vector<std::string> agents;
    for (const auto& h : wf->hops()) agents.push_back(h.agent());
    v1::Task task;
    s.events[id] = ScriptTask(id, agents, s.next_outcome, &task);
    task.set_workflow(req->workflow());
    task.set_label(req->label());
    task.set_input(req->input());
    s.tasks.insert(s.tasks.begin(), task);
    out->set_task_id(id);
    return grpc::Status::OK;
  }

  grpc::Status WatchTask(grpc::ServerContext*, const v1::WatchTaskRequest* req,
                         grpc::ServerWriter<v1::TaskEvent>* writer) override {
    std::vector<v1::TaskEvent> events;
    {
      absl::MutexLock lock(&d_->mu_);
      auto it = d_->state_.events.find(req->task_id());
      if (it == d_->state_.events.end()) {
        return NotFound(absl::StrCat("unknown task ", req->task_id()));
      }
      events = it->second;
    }
    for (const v1::TaskEvent& e : events) {
      if (e.seq() < req->from_seq()) continue;
      if (req->skip_tokens() && e.has_token()) continue;
      if (!writer->Write(e)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status GetTask(grpc::ServerContext*, const v1::GetTaskRequest* req,
                       v1::Task* out) override {
    absl::MutexLock lock(&d_->mu_);
    for (const v1::Task& t : d_->state_.tasks) {
      if (t.id() == req->task_id()) {
        *out = t;
        return grpc::Status::OK;
      }
    }
    return NotFound(absl::StrCat("unknown task ", req->task_id()));
  }

  grpc::Status ListTasks(grpc::ServerContext*, const v1::ListTasksRequest* req,
                         v1::ListTasksResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    for (const v1::Task& t : d_->state_.tasks) {
      if (req->limit() > 0 && out->tasks_size() >= req->limit()) break;
      v1::Task* copy = out->add_tasks();
      *copy = t;
      for (v1::HopResult& h : *copy->mutable_hops()) h.clear_output();
      copy->clear_output();
    }
    return grpc::Status::OK;
  }

  grpc::Status CancelTask(grpc::ServerContext*, const v1::CancelTaskRequest* req,
                          v1::Task* out) override {
    absl::MutexLock lock(&d_->mu_);
    for (v1::Task& t : d_->state_.tasks) {
      if (t.id() != req->task_id()) continue;
      d_->state_.cancelled.push_back(t.id());
      if (t.state() == v1::TASK_STATE_QUEUED || t.state() == v1::TASK_STATE_RUNNING) {
        t.set_state(v1::TASK_STATE_CANCELLED);
        t.set_reason("cancelled by client");
      }
      *out = t;
      return grpc::Status::OK;
    }
    return NotFound(absl::StrCat("unknown task ", req->task_id()));
  }

  grpc::Status ListCards(grpc::ServerContext*, const v1::ListCardsRequest*,
                         v1::ListCardsResponse* out) override {
    absl::MutexLock lock(&d_->mu_);
    for (const auto& [id, card] : d_->state_.cards) *out->add_cards() = card.info;
    out->set_store_bytes(d_->state_.status.store_bytes());
    out->set_quota_bytes(d_->state_.status.store_quota_bytes());
    return grpc::Status::OK;
  }

  grpc::Status GetCard(grpc::ServerContext*, const v1::GetCardRequest* req,
                       v1::CardInfo* out) override {
    absl::MutexLock lock(&d_->mu_);
    auto it = d_->state_.cards.find(req->id());
    if (it == d_->state_.cards.end()) return NotFound(absl::StrCat("unknown card ", req->id()));
    *out = it->second.info;
    return grpc::Status::OK;
  }

  grpc::Status ExportCard(grpc::ServerContext*, const v1::ExportCardRequest* req,
                          grpc::ServerWriter<v1::CardChunk>* writer) override {
    std::string bytes;
    {
      absl::MutexLock lock(&d_->mu_);
      auto it = d_->state_.cards.find(req->id());
      if (it == d_->state_.cards.end()) return NotFound(absl::StrCat("unknown card ", req->id()));
      bytes = it->second.bytes;
    }
    constexpr size_t kChunk = 64 << 10;
    v1::CardChunk chunk;
    for (size_t off = 0; off < bytes.size(); off += kChunk) {
      chunk.set_data(bytes.substr(off, kChunk));
      if (!writer->Write(chunk)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status ImportCard(grpc::ServerContext*, grpc::ServerReader<v1::CardChunk>* reader,
                          v1::CardInfo* out) override {
    std::string bytes;
    v1::CardChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    if (bytes.empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "card file is empty (0 bytes)");
    }
    absl::MutexLock lock(&d_->mu_);
    State& s = d_->state_;
    std::string id = absl::StrCat("imported-", ++s.imported);
    Card card{CardInfoFor(id, "", static_cast<int64_t>(bytes.size())), bytes};
    s.cards[id] = card;
    *out = card.info;
    return grpc::Status::OK;
  }

  grpc::Status DeleteCard(grpc::ServerContext*, const v1::DeleteCardRequest* req,
                          v1::DeleteCardResponse*) override {
    absl::MutexLock lock(&d_->mu_);
    State& s = d_->state_;
    auto it = s.cards.find(req->id());
    if (it == s.cards.end()) return NotFound(absl::StrCat("unknown card ", req->id()));
    for (const auto& [id, card] : s.cards) {
      if (card.info.parent_id() == req->id()) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("card ", req->id(), " is the parent of card ", id));
      }
    }
    s.cards.erase(it);
    s.deleted.push_back(req->id());
    return grpc::Status::OK;
  }

 private:
  FakeDaemon* d_;
};

FakeDaemon::FakeDaemon() : socket_path_(dir_.File("qkvshared.sock")) {}

absl::StatusOr<std::unique_ptr<FakeDaemon>> FakeDaemon::Start() {
  std::unique_ptr<FakeDaemon> d(new FakeDaemon());
  {
    absl::MutexLock lock(&d->mu_);
    d->state_ = DefaultState();
  }
  d->services_ = std::make_unique<Services>(d.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(d->address(), grpc::InsecureServerCredentials());
  builder.RegisterService(static_cast<v1::AdminService::Service*>(d->services_.get()));
  builder.RegisterService(static_cast<v1::CatalogService::Service*>(d->services_.get()));
  builder.RegisterService(static_cast<v1::TaskService::Service*>(d->services_.get()));
  builder.RegisterService(static_cast<v1::CardService::Service*>(d->services_.get()));
  d->server_ = builder.BuildAndStart();
  if (d->server_ == nullptr) {
    return absl::InternalError(absl::StrCat("FakeDaemon: cannot listen on ", d->address()));
  }
  return d;
}

FakeDaemon::~FakeDaemon() { Shutdown(); }

void FakeDaemon::Shutdown() {
  if (server_ != nullptr) {
    server_->Shutdown();
    server_->Wait();
    server_.reset();
  }
}

void FakeDaemon::Update(const std::function<void(State&)>& f) {
  absl::MutexLock lock(&mu_);
  f(state_);
}

FakeDaemon::State FakeDaemon::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

}  // namespace qkvshare::qkvctl::testing
