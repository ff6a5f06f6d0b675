//! tether: a local sidecar for the OpenAI Responses API.
//!
//! Agent apps make ordinary stateless `POST /v1/responses` calls, each one
//! carrying the whole conversation. tether recognises which conversation a call
//! continues, keeps one long-lived upstream WebSocket per live conversation, and
//! sends upstream only what is new since the last turn. See
//! `docs/ARCHITECTURE.md` for the design.
//!
//! Module map:
//! - [`config`]: the validated configuration (file, env, CLI).
//! - [`http`]: the downstream transport (accept loop, routes, bodies).
//! - [`proxy`]: the request pipeline for `POST /v1/responses`.
//! - [`session`]: pure fingerprinting and the session store (delta vs fresh).
//! - [`translate`]: pure translation of upstream frames to SSE or JSON.
//! - [`upstream`]: upstream sockets, the pool and the HTTP client.
//! - [`emulator`]: an in-process stand-in for the real service.

pub mod config;
pub mod emulator;
pub mod error;
pub mod session;
pub mod translate;
pub mod upstream;
