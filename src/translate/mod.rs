//! Pure translation of upstream WebSocket frames into what the downstream
//! client expects: SSE events (`stream:true`) or one final JSON body.
//!
//! Frames pass through byte-for-byte, except those carrying the Response
//! object, whose `previous_response_id` is set back to the client's own value
//! (tether chains upstream with its own). A [`Translator`] serves one
//! response; it tells the caller when the turn ended and how ([`Outcome`]).
//! No I/O happens here.

mod errors;
mod frame;
#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

pub use errors::{FrameError, error_body_from_frame, sse_error_event, sse_error_event_seq, status_for_code};
use frame::{Head, ResponseView, rewrite_response, splice};
pub(crate) use frame::{leading, leading_type, unescaped_string};

/// Frame types that end a response and must carry the Response object.
const TERMINAL: [&str; 3] = ["response.completed", "response.failed", "response.incomplete"];

/// Whether a frame of this `type` ends the response it belongs to: one of
/// the [`TERMINAL`] types, or a request-scoped `error`.
pub fn ends_response(kind: &str) -> bool {
    kind == "error" || TERMINAL.contains(&kind)
}

/// What the downstream client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `stream:true`: every frame becomes one SSE event.
    Sse,
    /// `stream:false`: nothing until the end, then the final Response JSON.
    Json,
}

/// Why a frame could not be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    /// The frame is not a JSON object with a string `type`, or a field the
    /// translation needs has the wrong shape.
    #[error("malformed upstream frame: {0}")]
    Malformed(String),
    /// A frame arrived after the terminal one.
    #[error("upstream frame after the end of the response")]
    AfterEnd,
}

/// The result of one frame.
#[derive(Debug)]
pub struct Step {
    /// Bytes to write downstream now (SSE mode); empty in JSON mode.
    pub out: Bytes,
    /// Set when this frame ended the turn.
    pub end: Option<Outcome>,
}

/// How a turn ended.
#[derive(Debug)]
pub enum Outcome {
    /// `response.completed`: a safe parent for the next delta.
    Completed {
        /// The new response's id.
        response_id: String,
        /// The Response's `output` items, as the upstream sent them.
        output: Vec<Box<RawValue>>,
        /// JSON mode: the final Response (rewritten); `None` in SSE mode.
        json_body: Option<Bytes>,
    },
    /// `response.incomplete`: delivered to the client, but not a safe parent.
    Incomplete {
        /// The response's id.
        response_id: String,
        /// JSON mode: the final Response (rewritten); `None` in SSE mode.
        json_body: Option<Bytes>,
    },
    /// `response.failed`: the status and error body chosen from its error code.
    /// In SSE mode the step's `out` also holds the event; a caller that has
    /// written nothing downstream yet may answer with `status` and
    /// `json_body` instead.
    Failed {
        /// HTTP status for a JSON client (or before any SSE byte went out).
        status: u16,
        /// `{"error":{…}}`.
        json_body: Bytes,
    },
    /// A request-scoped `error` frame (flat or nested shape). As for
    /// `Failed`, `out` holds the SSE event; before any byte went downstream
    /// the caller answers with `status` and `json_body` instead.
    Error {
        /// The frame's status, 500 when absent.
        status: u16,
        /// The error code, e.g. `previous_response_not_found`.
        code: Option<String>,
        /// `{"error":{…}}`.
        json_body: Bytes,
    },
}

/// Translates the frames of one upstream response.
#[derive(Debug)]
pub struct Translator {
    mode: Mode,
    client_prev: Option<String>,
    last_seq: Option<u64>,
    ended: bool,
}

impl Translator {
    /// A translator for one response; `client_previous_response_id` is the
    /// value the client sent (usually `None`), restored in every Response.
    pub fn new(mode: Mode, client_previous_response_id: Option<String>) -> Self {
        Self { mode, client_prev: client_previous_response_id, last_seq: None, ended: false }
    }

    /// The highest `sequence_number` seen so far.
    pub fn last_sequence_number(&self) -> Option<u64> {
        self.last_seq
    }

    /// An SSE `error` event numbered after the last event delivered, for a
    /// failure tether detects itself mid-stream.
    pub fn sse_error_event(&self, message: &str, code: Option<&str>) -> Bytes {
        sse_error_event_seq(message, code, self.last_seq.map(|n| n + 1))
    }

    /// One upstream text frame in. Returns what to write downstream (SSE
    /// bytes, empty in JSON mode) and whether the turn ended.
    pub fn on_frame(&mut self, frame: &str) -> Result<Step, TranslateError> {
        if self.ended {
            return Err(TranslateError::AfterEnd);
        }
        // A frame carrying the Response in the servers' layout, Response
        // last: read its head in place and parse the Response once (a parse
        // of the whole frame would scan it twice, tens of KB at the end of a
        // turn). Any other layout, or one that does not parse so, is parsed
        // whole below, with the same result.
        if let Some(head) = leading(frame)
            && let Ok(view) = serde_json::from_str::<ResponseView<'_>>(head.response)
        {
            self.note_sequence_number(head.sequence_number);
            let (text, end) = self.response_frame(frame, head.kind, head.response, view)?;
            return Ok(self.step(head.kind, &text, end));
        }
        let head: Head<'_> =
            serde_json::from_str(frame).map_err(|e| TranslateError::Malformed(e.to_string()))?;
        let frame_seq = head.sequence_number.and_then(|raw| raw.get().parse::<u64>().ok());
        let next_seq = frame_seq.or(self.last_seq.map(|n| n + 1));
        self.note_sequence_number(frame_seq);
        let kind = head.kind.as_ref();
        let (text, end) = match head.response {
            Some(resp) => {
                let view: ResponseView<'_> = serde_json::from_str(resp.get())
                    .map_err(|e| TranslateError::Malformed(format!("response object: {e}")))?;
                self.response_frame(frame, kind, resp.get(), view)?
            }
            None if kind == "error" => {
                // A WebSocket error frame is nested and carries `status`; a
                // plain-HTTP stream shows the flat `error` event, numbered
                // after the last event, which is what SDKs expect.
                let e = error_body_from_frame(frame)?;
                let out = match self.mode {
                    Mode::Sse => flat_error_event(&e.body, next_seq),
                    Mode::Json => Bytes::new(),
                };
                self.ended = true;
                let end = Outcome::Error { status: e.status, code: e.code, json_body: e.body };
                return Ok(Step { out, end: Some(end) });
            }
            None if TERMINAL.contains(&kind) => {
                return Err(TranslateError::Malformed(format!("{kind} without a response object")));
            }
            None => (std::borrow::Cow::Borrowed(frame), None),
        };
        Ok(self.step(kind, &text, end))
    }

    fn note_sequence_number(&mut self, n: Option<u64>) {
        if n.is_some() {
            self.last_seq = n;
        }
    }

    /// The step for a frame whose (possibly rewritten) `text` goes out.
    fn step(&mut self, kind: &str, text: &str, end: Option<Outcome>) -> Step {
        self.ended = end.is_some();
        let out = match self.mode {
            Mode::Sse => sse_event(kind, text),
            Mode::Json => Bytes::new(),
        };
        Step { out, end }
    }

    /// A frame carrying a Response: rewrite it, and read the outcome when the
    /// frame is terminal. `resp` is the Response's text inside `frame`,
    /// `view` its parse.
    fn response_frame<'f>(
        &self,
        frame: &'f str,
        kind: &str,
        resp: &'f str,
        view: ResponseView<'f>,
    ) -> Result<(std::borrow::Cow<'f, str>, Option<Outcome>), TranslateError> {
        let new_resp = rewrite_response(resp, &view, self.client_prev.as_deref());
        let text = match &new_resp {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(frame),
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(splice(frame, resp, s)),
        };
        let json_body = || match self.mode {
            Mode::Json => Some(Bytes::copy_from_slice(new_resp.as_bytes())),
            Mode::Sse => None,
        };
        let id = || -> Result<String, TranslateError> {
            view.id
                .as_deref()
                .map(str::to_owned)
                .ok_or_else(|| TranslateError::Malformed(format!("{kind} without response.id")))
        };
        let end = match kind {
            "response.completed" => {
                let output = match view.output {
                    Some(raw) => serde_json::from_str::<Vec<Box<RawValue>>>(raw.get())
                        .map_err(|e| TranslateError::Malformed(format!("response.output: {e}")))?,
                    None => Vec::new(),
                };
                Some(Outcome::Completed { response_id: id()?, output, json_body: json_body() })
            }
            "response.incomplete" => Some(Outcome::Incomplete { response_id: id()?, json_body: json_body() }),
            "response.failed" => {
                let (status, json_body) = errors::failed_body(view.error.map(RawValue::get));
                Some(Outcome::Failed { status, json_body })
            }
            _ => None,
        };
        Ok((text, end))
    }
}

/// `event: <type>\ndata: <text>\n\n`. A frame with line breaks (not compact
/// JSON) gets one `data:` line per line, which SSE joins back with `\n`.
fn sse_event(kind: &str, text: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(kind.len() + text.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\n");
    for line in text.split('\n') {
        b.put_slice(b"data: ");
        b.put_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        b.put_slice(b"\n");
    }
    b.put_slice(b"\n");
    b.freeze()
}

/// The plain-HTTP `error` event for an API error body
/// (`{"error":{message, code, param}}`), numbered `seq` (the frame's own, else after the last event).
fn flat_error_event(body: &[u8], seq: Option<u64>) -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = v["error"].take();
    errors::flat_error_event(e["message"].clone(), e["code"].clone(), e["param"].clone(), seq)
}
