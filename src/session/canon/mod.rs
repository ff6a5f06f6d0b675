//! The canonical form of one input or output item, hashed without ever being
//! written out as JSON.
//!
//! The equivalence rules of DESIGN §3: object keys sorted, `null` fields and
//! empty `annotations`/`logprobs` arrays dropped (at every depth), `id` and
//! `status` dropped on message, function_call and function_call_output items,
//! message string content hashed as a single `input_text` part, assistant
//! `output_text` parts hashed as `input_text`, a message without `type`
//! hashed as `type:"message"`. Everything else is exact. The canonical value
//! is encoded as tagged, length-prefixed bytes (`encode`) and hashed with
//! XXH3-128.
//!
//! Two implementations give the same digest for every item:
//! - `scan` reads the item's raw JSON text once, writing the encoding into a
//!   reused buffer; objects are put in key order by sorting their encoded
//!   members, which are small because long strings are already digests. This
//!   is what requests use. It declines what it does not handle exactly (a
//!   non-object item, an escaped lone surrogate, an unusual number it cannot
//!   vouch for, very deep nesting, anything malformed);
//! - `tree` parses the item into a borrowed tree and walks it: the reference,
//!   used for items given as `Value`s and for every item `scan` declines.

mod encode;
mod kind;
mod lex;
mod scan;
mod tree;

#[cfg(test)]
mod tests;

pub use kind::{ItemKind, Role};
pub(crate) use scan::{Scratch, hash_raw_item};
pub(crate) use tree::{Node, hash_item};
