//! One turn, from checkout to commit, with the recovery rules.
//!
//! Before the first byte goes downstream a turn may be retried invisibly
//! (once per cause): a continuation the upstream no longer holds becomes a
//! fresh turn on the same socket; a dead socket or an age-limited one becomes
//! a fresh turn on a new socket. Once bytes are out, tether never splices two
//! upstream responses into one reply: a failure becomes an SSE `error` event.
//! A client that hangs up mid-stream leaves the response to be drained to its
//! end (within `pool.drain_timeout`) so the socket is clean for the next turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::value::RawValue;

use super::record::{Route, TurnRecord};
use super::request::ParsedRequest;
use crate::App;
use crate::error::ProxyError;
use crate::http::body::{self, Body};
use crate::session::{Fingerprint, FreshReason, Plan, SessionId, SocketId, TenantId};
use crate::translate::{Mode, Outcome, Translator};
use crate::upstream::{Credentials, Frame, Lease, Relay, TurnFrames, UpstreamError};

/// The continuation a plan chose.
#[derive(Debug, Clone)]
struct Continuation {
    session: SessionId,
    parent: String,
    delta_start: usize,
    socket: SocketId,
}

/// What one upstream attempt came to.
enum Attempt {
    /// Bytes are ready for the client and more will follow.
    Streaming { first: Bytes, frames: TurnFrames, translator: Translator },
    /// The response ended before anything went downstream.
    Ended { outcome: Outcome, out: Bytes },
    /// Try again as a fresh turn on the same socket.
    RetrySameSocket(&'static str),
    /// Try again as a fresh turn on a new socket.
    RetryNewSocket(&'static str),
}

/// A turn in flight: what was asked, what was decided, what happened.
pub struct Turn<'a> {
    app: &'a Arc<App>,
    body: Bytes,
    parsed: &'a ParsedRequest<'a>,
    headers: &'a HeaderMap,
    creds: Credentials,
    tenant: TenantId,
    mode: Mode,
    cont: Option<Continuation>,
    /// A socket to use when not continuing (client-managed chaining).
    prefer: Option<SocketId>,
    /// How the turn is served.
    pub route: Route,
    record: TurnRecord,
    /// The record went out (log, metrics, events); if not by drop time, the
    /// client hung up before its answer was ready and `Drop` says so.
    emitted: bool,
    started: Instant,
    received: Instant,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.emitted {
            return;
        }
        // hyper dropped the handler: the client went away while the answer
        // was being prepared (a JSON client, or a stream before its first byte).
        self.end_without_answer(499, "client_gone");
    }
}

impl<'a> Turn<'a> {
    /// A turn for `parsed`, not yet planned (fresh unless [`Turn::set_plan`] says otherwise).
    pub fn new(
        app: &'a Arc<App>,
        body: Bytes,
        parsed: &'a ParsedRequest<'a>,
        headers: &'a HeaderMap,
        creds: Credentials,
        tenant: TenantId,
        (started, received): (Instant, Instant),
    ) -> Turn<'a> {
        let bytes_in = body.len();
        let record = TurnRecord {
            session: None,
            tenant: tenant.short(),
            tenant_id: tenant.0,
            route: Route::Fresh,
            reason: None,
            detail: None,
            items_in: parsed.item_count(),
            items_up: 0,
            bytes_in,
            bytes_up: 0,
            socket: None,
            socket_age: None,
            recoveries: Vec::new(),
            prepare: None,
            ttfe: None,
            total: Duration::ZERO,
            status: 200,
            outcome: "",
        };
        let mode = if parsed.stream { Mode::Sse } else { Mode::Json };
        Turn {
            app,
            body,
            parsed,
            headers,
            creds,
            tenant,
            mode,
            cont: None,
            prefer: None,
            route: Route::Fresh,
            emitted: false,
            record,
            started,
            received,
        }
    }

    /// Applies the session store's plan.
    pub fn set_plan(&mut self, plan: &Plan, unhashable: bool) {
        match plan {
            Plan::Continue { session, parent_response_id, delta_start, socket } => {
                self.set_route(Route::Continue);
                self.cont = Some(Continuation {
                    session: *session,
                    parent: parent_response_id.clone(),
                    delta_start: *delta_start,
                    socket: *socket,
                });
                self.record.session = Some(*session);
            }
            Plan::Fresh { reason } => {
                self.set_route(Route::Fresh);
                self.record.reason = Some(if unhashable { "unhashable_input" } else { reason.label() });
                self.record.detail = Some(*reason);
            }
        }
    }

    fn set_route(&mut self, route: Route) {
        self.route = route;
        self.record.route = route;
    }

    /// The client chains by itself: forward as is, on `socket` (the one
    /// holding its `previous_response_id`) when there is one.
    pub fn client_managed(&mut self, socket: Option<SocketId>) {
        self.set_route(Route::ClientManaged);
        self.prefer = socket;
    }

    /// A planned continuation turns fresh (the reason is recorded).
    fn downgrade(&mut self, reason: FreshReason) {
        if let Some(c) = self.cont.take() {
            self.app.managed.store().evict(c.session);
        }
        if self.route == Route::Continue {
            self.set_route(Route::Fresh);
        }
        self.record.reason = Some(reason.label());
        self.record.detail = Some(reason);
    }

    /// checkout -> send -> translate -> commit, with recovery.
    pub async fn run(mut self, fp: Option<Fingerprint>) -> Result<Response<Body>, ProxyError> {
        let m = &self.app.managed;
        let mut lease: Option<Lease> = None;
        let mut retries = 0u8;
        loop {
            let mut current = match lease.take() {
                Some(l) => l,
                None => match self.checkout(&mut retries).await {
                    Ok(l) => l,
                    Err(Some(resp)) => return resp,
                    Err(None) => continue,
                },
            };
            self.record.socket = Some(current.id());
            self.record.socket_age = Some(current.age());
            if let Some(c) = &self.cont {
                if current.latest_response_id() != Some(c.parent.as_str()) {
                    self.downgrade(FreshReason::ParentNotLatest);
                }
            }
            match self.attempt(&mut current).await {
                Attempt::Streaming { first, frames, translator } => {
                    return Ok(self.stream(current, fp, first, frames, translator));
                }
                Attempt::Ended { outcome, out } => return Ok(self.ended(current, fp, outcome, out)),
                Attempt::RetrySameSocket(why) if retries == 0 => {
                    retries += 1;
                    self.record.recoveries.push(why);
                    self.downgrade(FreshReason::Evicted);
                    lease = Some(current);
                }
                Attempt::RetryNewSocket(why) if retries == 0 => {
                    retries += 1;
                    self.record.recoveries.push(why);
                    // Dead already, or not to be trusted again (malformed frame).
                    current.retire();
                    if let Some(c) = &self.cont {
                        m.store().forget_socket(c.socket);
                    }
                    self.downgrade(FreshReason::SocketGone);
                }
                Attempt::RetrySameSocket(why) => {
                    drop(current);
                    return Err(self.fail(ProxyError::UpstreamFailed(format!("{why} twice in a row"))));
                }
                Attempt::RetryNewSocket(why) => {
                    current.retire();
                    return Err(self.fail(ProxyError::UpstreamFailed(format!("{why} twice in a row"))));
                }
            }
        }
    }

    /// Gets a socket: the continuation's own, or any of this tenant's.
    /// `Err(None)` means "plan changed, loop again"; `Err(Some(resp))` is the answer.
    async fn checkout(
        &mut self,
        retries: &mut u8,
    ) -> Result<Lease, Option<Result<Response<Body>, ProxyError>>> {
        let m = &self.app.managed;
        let prefer = self.cont.as_ref().map(|c| c.socket).or(self.prefer);
        let err = match m.pool.checkout(self.tenant.0, &self.creds, prefer).await {
            Ok(lease) => return Ok(lease),
            Err(e) => e,
        };
        if prefer.is_some() && !matches!(err, UpstreamError::Handshake { .. }) {
            // Taken or closed between plan and checkout: send it whole.
            self.prefer = None;
            if self.cont.is_some() {
                self.downgrade(FreshReason::SocketBusy);
            }
            return Err(None);
        }
        let fallback = self.app.config.upstream.fallback_http;
        match err {
            UpstreamError::Handshake { status, body } if status == 401 || status == 403 => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
                Err(Some(Err(self.fail(ProxyError::UpstreamStatus { status, body }))))
            }
            e if e.wants_http_fallback() && fallback => {
                m.start_fallback(self.app.config.upstream.fallback_cooldown);
                Err(Some(self.http_fallback("websocket_refused").await))
            }
            UpstreamError::PoolFull if fallback => Err(Some(self.http_fallback("pool_full").await)),
            UpstreamError::PoolFull => Err(Some(Err(self.fail(ProxyError::Overloaded)))),
            e if *retries == 0 && e.retryable_before_output() => {
                *retries += 1;
                self.record.recoveries.push("connect_failed->retry");
                Err(None)
            }
            e if fallback => {
                tracing::warn!(error = %e, "cannot reach the upstream over WebSocket; falling back to HTTP");
                m.start_fallback(self.app.config.upstream.fallback_cooldown);
                Err(Some(self.http_fallback("connect_failed").await))
            }
            e => Err(Some(Err(self.fail(ProxyError::UpstreamUnreachable(e.to_string()))))),
        }
    }

    /// Serves the turn over plain HTTPS, the client's bytes unchanged.
    pub async fn http_fallback(&mut self, reason: &'static str) -> Result<Response<Body>, ProxyError> {
        self.record.total = self.started.elapsed();
        let result =
            super::fallback::forward(self.app, self.headers, self.body.clone(), reason, &mut self.record)
                .await;
        self.emitted = true;
        result
    }

    /// send -> translate, until bytes are ready for the client or the response ends.
    async fn attempt(&mut self, lease: &mut Lease) -> Attempt {
        let delta = self.cont.as_ref().map(|c| (c.parent.as_str(), c.delta_start));
        let frame = self.parsed.create_frame(delta);
        if self.app.config.log.content {
            // Opt-in only (`log.content`). Frames never carry credentials.
            tracing::info!(target: "tether::content", frame = %frame, "upstream frame");
        }
        self.record.bytes_up = frame.len();
        self.record.items_up = match &self.cont {
            Some(c) => self.parsed.item_count() - c.delta_start,
            None => self.parsed.item_count(),
        };
        // A JSON client's answer is the terminal frame: the socket task
        // keeps the other frames to itself, and notes when the first came.
        let relay = match self.mode {
            Mode::Json => Relay::Needed,
            Mode::Sse => Relay::All,
        };
        let mut frames = match lease.send_relaying(frame, relay).await {
            Ok(f) => f,
            Err(_) => return Attempt::RetryNewSocket("socket_lost->fresh"),
        };
        let sent = Instant::now();
        self.record.prepare.get_or_insert_with(|| sent.duration_since(self.received));
        let mut translator = Translator::new(self.mode, self.parsed.previous_response_id.clone());
        loop {
            // Nothing has gone downstream yet, so any socket failure (even
            // mid-response for a JSON client) can be retried invisibly.
            let text = match frames.next().await {
                Some(Ok(text)) => text,
                Some(Err(UpstreamError::ConnectionLimit { .. })) => {
                    return Attempt::RetryNewSocket("connection_limit->fresh");
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upstream socket failed before output");
                    return Attempt::RetryNewSocket("socket_lost->fresh");
                }
                None => return Attempt::RetryNewSocket("socket_lost->fresh"),
            };
            self.record.ttfe.get_or_insert_with(|| match lease.first_frame_at() {
                // This turn's first frame (the latest turn's, and not older
                // than the send), when it was not handed on.
                Some(first) if first >= sent => first - sent,
                _ => sent.elapsed(),
            });
            let step = match translator.on_frame(&text) {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed upstream frame");
                    return Attempt::RetryNewSocket("malformed_frame->fresh");
                }
            };
            if let Some(outcome) = step.end {
                // The socket settled (idle, latest recorded) before it passed
                // the terminal frame on: the next turn may continue from it.
                return self.classify_end(outcome, step.out);
            }
            if !step.out.is_empty() {
                return Attempt::Streaming { first: step.out, frames, translator };
            }
        }
    }

    /// A response that ended before any byte went out: retry or answer.
    fn classify_end(&self, outcome: Outcome, out: Bytes) -> Attempt {
        if let Outcome::Error { code: Some(code), .. } = &outcome {
            match code.as_str() {
                "previous_response_not_found" if self.cont.is_some() => {
                    return Attempt::RetrySameSocket("previous_response_not_found->fresh");
                }
                "websocket_connection_limit_reached" => {
                    return Attempt::RetryNewSocket("connection_limit->fresh");
                }
                _ => {}
            }
        }
        Attempt::Ended { outcome, out }
    }

    /// Answers a response that ended before streaming began.
    fn ended(
        mut self,
        lease: Lease,
        fp: Option<Fingerprint>,
        outcome: Outcome,
        out: Bytes,
    ) -> Response<Body> {
        let resp = match (&outcome, self.mode) {
            (Outcome::Error { status, json_body, .. }, _) => {
                self.record.outcome = "error";
                json_response(*status, json_body.clone())
            }
            (Outcome::Failed { status, json_body }, Mode::Json) => {
                self.record.outcome = "failed";
                json_response(*status, json_body.clone())
            }
            (
                Outcome::Completed { json_body: Some(b), .. }
                | Outcome::Incomplete { json_body: Some(b), .. },
                Mode::Json,
            ) => json_response(200, b.clone()),
            _ => sse_response(body::full(out)),
        };
        self.record.status = resp.status().as_u16();
        self.respond(resp, lease, fp, outcome)
    }

    fn respond(
        mut self,
        mut resp: Response<Body>,
        lease: Lease,
        fp: Option<Fingerprint>,
        outcome: Outcome,
    ) -> Response<Body> {
        resp.headers_mut().insert("x-tether-route", HeaderValue::from_static(self.route.label()));
        self.finish(&lease, fp, &outcome);
        drop(lease);
        self.record.emit(self.app);
        self.emitted = true;
        resp
    }

    /// Streams the rest of the response to the client: the response body
    /// reads the socket's frames itself, as the connection writes them out.
    ///
    /// The terminal event is held back until the turn is committed and the
    /// socket released, so a client that fires its next request the moment
    /// it reads `response.completed` finds the new tip and an idle socket.
    /// If the client hangs up, the body is dropped with the lease and the
    /// frames: the socket task drains the response to its end
    /// (`pool.drain_timeout`) on its own.
    fn stream(
        mut self,
        lease: Lease,
        fp: Option<Fingerprint>,
        first: Bytes,
        frames: TurnFrames,
        translator: Translator,
    ) -> Response<Body> {
        let rest = Rest {
            held: Some((frames, lease)),
            translator,
            fp,
            record: self.record.clone(),
            finisher: Finisher::from_turn(&self),
        };
        // The body emits the record when the response ends.
        self.emitted = true;
        let rest = futures_util::stream::unfold(rest, |mut rest| async move {
            let out = rest.next().await?;
            Some((out, rest))
        });
        let mut resp = sse_response(body::streamed(first, rest));
        resp.headers_mut().insert("x-tether-route", HeaderValue::from_static(self.route.label()));
        resp
    }

    /// commit on completion; evict on anything else.
    fn finish(&mut self, lease: &Lease, fp: Option<Fingerprint>, outcome: &Outcome) {
        self.record.total = self.started.elapsed();
        if self.record.outcome.is_empty() {
            self.record.outcome = outcome_label(outcome);
        }
        Finisher::from_turn(self).finish(&mut self.record, lease, fp, outcome);
    }

    fn fail(&mut self, err: ProxyError) -> ProxyError {
        self.end_without_answer(err.status().as_u16(), "error");
        err
    }

    /// Ends a turn that produced no upstream answer: the continuation it may
    /// have left half-done is evicted, and the record goes out.
    fn end_without_answer(&mut self, status: u16, outcome: &'static str) {
        self.record.status = status;
        self.record.outcome = outcome;
        self.record.total = self.started.elapsed();
        if let Some(c) = self.cont.take() {
            self.app.managed.store().evict(c.session);
        }
        self.record.emit(self.app);
        self.emitted = true;
    }
}

/// What the commit phase needs, owned, so a streaming task can run it.
struct Finisher {
    app: std::sync::Arc<crate::App>,
    session: Option<SessionId>,
    continued: bool,
    commit: bool,
    started: Instant,
}

impl Finisher {
    fn from_turn(turn: &Turn<'_>) -> Finisher {
        Finisher {
            app: turn.app.clone(),
            session: turn.cont.as_ref().map(|c| c.session),
            continued: turn.cont.is_some(),
            commit: turn.route != Route::ClientManaged,
            started: turn.started,
        }
    }

    fn finish(&self, record: &mut TurnRecord, lease: &Lease, fp: Option<Fingerprint>, outcome: &Outcome) {
        let Outcome::Completed { response_id, output, .. } = outcome else {
            return self.evict();
        };
        let (true, Some(mut fp)) = (self.commit, fp) else { return };
        let items: Vec<&RawValue> = output.iter().map(|b| &**b).collect();
        if fp.extend_memo(&items, &self.app.managed.memo).is_err() {
            return self.evict();
        }
        let mut store = self.app.managed.store();
        let session = store.commit(self.session, &fp, response_id, lease.id(), Instant::now());
        let saved = record.bytes_in.saturating_sub(record.bytes_up) as u64;
        store.record_turn(session, self.continued, if self.continued { saved } else { 0 });
        record.session = Some(session);
    }

    fn evict(&self) {
        if let Some(s) = self.session {
            self.app.managed.store().evict(s);
        }
    }
}

/// How many bytes of events already arrived a streamed answer gathers into
/// one chunk for the client.
const CHUNK: usize = 64 * 1024;

/// The rest of a streamed response, read by its body. Until the end the
/// frames and the lease are held; once they are gone, so is the turn.
struct Rest {
    held: Option<(TurnFrames, Lease)>,
    translator: Translator,
    fp: Option<Fingerprint>,
    record: TurnRecord,
    finisher: Finisher,
}

impl Rest {
    /// The next bytes for the client; `None` once the response is over
    /// (the record went out). Waits for the next event, then takes with it
    /// the events whose frames have already arrived (up to [`CHUNK`]): a
    /// burst goes to the client as one chunk, one write, and an event that
    /// arrives alone goes out alone, at once.
    async fn next(&mut self) -> Option<Bytes> {
        let mut parts: Vec<Bytes> = Vec::new();
        let mut len = 0;
        loop {
            let frame = if parts.is_empty() {
                self.held.as_mut()?.0.next().await
            } else {
                match self.held.as_mut().and_then(|(frames, _)| frames.ready()) {
                    Some(frame) => frame,
                    None => break,
                }
            };
            let (out, done) = self.take(frame);
            if !out.is_empty() {
                len += out.len();
                parts.push(out);
            }
            if done || len >= CHUNK {
                break;
            }
        }
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Bytes::from(parts.concat())),
        }
    }

    /// One frame in: the bytes it gives the client (maybe none), and whether
    /// the response is over (ended, committed, released, recorded).
    fn take(&mut self, frame: Option<Result<Frame, UpstreamError>>) -> (Bytes, bool) {
        let step = match frame {
            Some(Ok(text)) => match self.translator.on_frame(&text) {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed upstream frame mid-stream");
                    return (self.end(None, true), true);
                }
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream socket failed mid-stream");
                return (self.end(None, false), true);
            }
            None => return (self.end(None, false), true),
        };
        match step.end {
            Some(outcome) => (self.end(Some((outcome, step.out)), false), true),
            None => (step.out, false),
        }
    }

    /// Commits (or evicts), releases the socket (retires it after a
    /// malformed frame), emits the record; then the last bytes: the terminal
    /// event, or an SSE `error` event when the upstream was lost.
    fn end(&mut self, ended: Option<(Outcome, Bytes)>, malformed: bool) -> Bytes {
        let Some((frames, lease)) = self.held.take() else {
            return Bytes::new();
        };
        self.record.outcome = ended.as_ref().map_or("upstream_lost", |(o, _)| outcome_label(o));
        match &ended {
            Some((o, _)) => self.finisher.finish(&mut self.record, &lease, self.fp.take(), o),
            None => self.finisher.evict(),
        }
        self.close(frames, lease, malformed);
        match ended {
            Some((_, last)) => last,
            None => self
                .translator
                .sse_error_event("The upstream connection was lost mid-response.", Some("upstream_error")),
        }
    }

    /// Lets go of the frames (the socket task drains what is left), then of
    /// the socket (retired, if it is not to be trusted again); the record goes out.
    fn close(&mut self, frames: TurnFrames, lease: Lease, retire: bool) {
        drop(frames);
        if retire {
            lease.retire();
        } else {
            drop(lease);
        }
        self.record.total = self.finisher.started.elapsed();
        self.record.emit(&self.finisher.app);
    }
}

impl Drop for Rest {
    fn drop(&mut self) {
        // Dropped before its end: the client hung up mid-stream.
        let Some((frames, lease)) = self.held.take() else { return };
        self.record.outcome = "client_gone";
        self.finisher.evict();
        self.close(frames, lease, false);
    }
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Completed { .. } => "completed",
        Outcome::Incomplete { .. } => "incomplete",
        Outcome::Failed { .. } => "failed",
        Outcome::Error { .. } => "error",
    }
}

fn json_response(status: u16, body: Bytes) -> Response<Body> {
    body::json(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), body)
}

fn sse_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
