//! The timed steps a transport plays for one response: each event after
//! its delay (per-request latency, prefill, decode, slow frames), with the
//! turn's faults woven in (drop, close, error, `response.failed`, malformed).

use std::time::Duration;

use serde_json::{Value, json};

use super::cost::CostModel;
use super::error::ApiError;
use super::turn::Turn;

/// What a transport does next, after waiting `delay`.
pub(crate) struct Step {
    pub delay: Duration,
    pub action: Action,
}

/// One step of a response on the wire.
pub(crate) enum Action {
    /// The turn's event with this index, which is also its `sequence_number`
    /// ([`Turn::event_text`]).
    Event(usize),
    /// A frame that is not JSON.
    Malformed,
    /// An error in place of the next event; the turn ends failed.
    Error(ApiError),
    /// A `response.failed` event (with its `sequence_number`); the turn ends failed.
    Failed(Value),
    /// Drop the socket; the turn ends failed.
    Drop,
    /// Close with this code; the turn ends failed.
    Close(u16),
}

impl Turn {
    /// The timed steps a transport plays, faults included.
    pub fn steps(&self, cost: &CostModel) -> Vec<Step> {
        let f = &self.faults;
        let mut steps = Vec::new();
        let mut carry = self.before_first;
        let mut first_token = f.first_token;
        for (n, event) in self.events.iter().enumerate() {
            let n32 = u32::try_from(n).unwrap_or(u32::MAX);
            let ttft = if event.tokens > 0 { std::mem::take(&mut first_token) } else { Duration::ZERO };
            let delay = std::mem::take(&mut carry) + f.slow + ttft + cost.decode(event.tokens);
            let mut push = |action| steps.push(Step { delay, action });
            if f.drop_after == Some(n32) {
                push(Action::Drop);
                return steps;
            }
            if let Some((code, _)) = f.close.filter(|(_, after)| *after == n32) {
                push(Action::Close(code));
                return steps;
            }
            if let Some((_, status, code)) = f.error_at.as_ref().filter(|(at, _, _)| *at == n32) {
                push(Action::Error(ApiError::with_status(*status, code)));
                return steps;
            }
            if f.failed_at == Some(n32) {
                push(Action::Failed(self.failed_event(n)));
                return steps;
            }
            if f.malformed_at == Some(n32) {
                steps.push(Step { delay: Duration::ZERO, action: Action::Malformed });
            }
            steps.push(Step { delay, action: Action::Event(n) });
        }
        if let Some((code, _)) = f.close {
            steps.push(Step { delay: Duration::ZERO, action: Action::Close(code) });
        } else if f.drop_after.is_some() {
            steps.push(Step { delay: Duration::ZERO, action: Action::Drop });
        }
        steps
    }

    /// The text of event `n`, numbered `n`.
    pub fn event_text(&self, n: usize) -> String {
        super::events::event_text(&self.events[n].json, n)
    }

    /// Whether event `n` is `response.completed`.
    pub fn completes(&self, n: usize) -> bool {
        self.events[n].json["type"] == "response.completed"
    }

    fn failed_event(&self, sequence_number: usize) -> Value {
        let mut response = self.completed.clone();
        response["status"] = json!("failed");
        response["output"] = json!([]);
        response["usage"] = Value::Null;
        response["error"] = json!({"code": "server_error", "message": "Emulated failure."});
        json!({"type": "response.failed", "response": response, "sequence_number": sequence_number})
    }
}
