//! The `tether` binary: CLI -> config -> telemetry -> serve.
fn main() {}
