//! translate (under construction).
