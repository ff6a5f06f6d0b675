//! Downstream transport: the accept loop, routes and bodies.
//!
//! This module moves bytes and picks routes; it never decides delta vs
//! fresh (that is [`crate::proxy`] and [`crate::session`]).

pub mod body;
pub mod routes;
pub mod server;
