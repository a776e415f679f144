#include "qkvctl/task_progress.h"

#include "absl/strings/str_cat.h"
#include "qkvctl/format.h"
#include "qkvctl/table.h"

namespace qkvshare::qkvctl {

void TaskProgress::NewLine() {
  if (!at_line_start_) out_ << "\n";
  at_line_start_ = true;
}

void TaskProgress::Line(const std::string& text) {
  NewLine();
  out_ << text << "\n";
}

void TaskProgress::OnEvent(const v1::TaskEvent& e) {
  next_seq_ = e.seq() + 1;
  if (json_) {
    out_ << MessageJson(e, /*pretty=*/false);
  }
  auto hop_name = [&](int hop) {
    std::string agent =
        hop >= 0 && hop < static_cast<int>(hop_agents_.size()) ? hop_agents_[hop] : "";
    return absl::StrCat("hop ", hop + 1, "/", num_hops_, agent.empty() ? "" : " ", agent);
  };
  switch (e.event_case()) {
    case v1::TaskEvent::kQueued:
      if (!json_ && e.queued().position() > 0) {
        Line(absl::StrCat("[task ", e.task_id(), " queued: ", e.queued().position(),
                          " tasks ahead]"));
      }
      break;
    case v1::TaskEvent::kHopStarted: {
      const auto& h = e.hop_started();
      num_hops_ = h.num_hops();
      if (h.hop() >= static_cast<int>(hop_agents_.size())) hop_agents_.resize(h.hop() + 1);
      hop_agents_[h.hop()] = h.agent();
      if (!json_) Line(absl::StrCat("[", hop_name(h.hop()), "]"));
      break;
    }
    case v1::TaskEvent::kToken:
      if (!json_ && !e.token().text().empty()) {
        out_ << e.token().text();
        at_line_start_ = e.token().text().back() == '\n';
      }
      break;
    case v1::TaskEvent::kCardBuilt: {
      const auto& c = e.card_built();
      if (!json_) {
        Line(absl::StrCat("[card ", c.card_id().substr(0, 12), ": ", c.tokens(), " tokens, ",
                          FormatBytes(c.bytes()), ", ", FormatFixed(c.avg_bits(), 2),
                          " bits, built in ", FormatFixed(c.build_ms(), 1), " ms]"));
      }
      break;
    }
    case v1::TaskEvent::kHandoff: {
      const v1::HandoffStats& s = e.handoff().stats();
      if (json_) break;
      std::string text =
          absl::StrCat("[handoff to hop ", e.handoff().hop() + 1, ": ", HandoffModeName(s.mode()));
      if (s.mode() == v1::HANDOFF_MODE_REPREFILL) {
        absl::StrAppend(&text, ", re-prefilled ", s.reprefill_tokens(), " tokens");
      } else {
        absl::StrAppend(&text, ", ", FormatBytes(s.card_bytes()), ", injected in ",
                        FormatFixed(s.inject_ms(), 1), " ms");
      }
      if (!s.fallback_reason().empty()) {
        absl::StrAppend(&text, " (", HandoffModeName(s.requested_mode()),
                        " requested: ", s.fallback_reason(), ")");
      }
      Line(text + "]");
      break;
    }
    case v1::TaskEvent::kHopFinished: {
      const v1::HopResult& r = e.hop_finished().result();
      hops_.push_back(r);
      if (!json_) {
        Line(absl::StrCat("[", hop_name(e.hop_finished().hop()), ": ", r.generated_tokens(),
                          " tokens, ", FormatFixed(r.decode_tokens_per_s(), 1), " tok/s, TTFT ",
                          FormatFixed(r.ttft_ms(), 1), " ms, stop ", StopReasonName(r), "]"));
      }
      break;
    }
    case v1::TaskEvent::kFinished:
    case v1::TaskEvent::kFailed:
    case v1::TaskEvent::kCancelled: {
      const v1::TaskEvent::TaskEnded& end =
          e.event_case() == v1::TaskEvent::kFinished ? e.finished()
          : e.event_case() == v1::TaskEvent::kFailed ? e.failed()
                                                     : e.cancelled();
      final_state_ = e.event_case() == v1::TaskEvent::kFinished ? v1::TASK_STATE_FINISHED
                     : e.event_case() == v1::TaskEvent::kFailed ? v1::TASK_STATE_FAILED
                                                                : v1::TASK_STATE_CANCELLED;
      reason_ = end.reason();
      if (!json_) {
        Line(absl::StrCat("[task ", e.task_id(), " ", TaskStateName(final_state_),
                          reason_.empty() ? "" : ": " + reason_, "]"));
      }
      break;
    }
    case v1::TaskEvent::EVENT_NOT_SET:
      break;
  }
  out_.flush();
}

}  // namespace qkvshare::qkvctl
