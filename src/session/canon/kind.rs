//! What kind of item a canonical hash belongs to: for diagnostics, and for
//! the rules that depend on it (which fields are server-assigned, whether
//! `content` is message content).

use std::fmt;

/// The role of a message item, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `user`
    User,
    /// `assistant`
    Assistant,
    /// `system`
    System,
    /// `developer`
    Developer,
    /// Any other or missing role.
    Other,
}

/// The kind of an item, as shown in diagnostics (never its content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A message (explicit `type:"message"` or a bare `{role, content}`).
    Message(Role),
    /// `function_call`
    FunctionCall,
    /// `function_call_output`
    FunctionCallOutput,
    /// `custom_tool_call`
    CustomToolCall,
    /// `custom_tool_call_output`
    CustomToolCallOutput,
    /// `reasoning`
    Reasoning,
    /// `item_reference`
    ItemReference,
    /// `compaction`
    Compaction,
    /// Any other item type (hosted tools, unknown kinds).
    Other,
    /// No item at this index (one side is shorter).
    Missing,
}

impl ItemKind {
    /// A stable snake_case label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ItemKind::Message(Role::User) => "message:user",
            ItemKind::Message(Role::Assistant) => "message:assistant",
            ItemKind::Message(Role::System) => "message:system",
            ItemKind::Message(Role::Developer) => "message:developer",
            ItemKind::Message(Role::Other) => "message:other",
            ItemKind::FunctionCall => "function_call",
            ItemKind::FunctionCallOutput => "function_call_output",
            ItemKind::CustomToolCall => "custom_tool_call",
            ItemKind::CustomToolCallOutput => "custom_tool_call_output",
            ItemKind::Reasoning => "reasoning",
            ItemKind::ItemReference => "item_reference",
            ItemKind::Compaction => "compaction",
            ItemKind::Other => "other",
            ItemKind::Missing => "missing",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

fn role_of(role: Option<&str>) -> Role {
    match role {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        _ => Role::Other,
    }
}

/// The kind of an object item from its `type` (`None` when absent or null;
/// `Some("")` stands for a `type` that is not a string) and its `role` (the
/// first `role` field that is a string).
pub(crate) fn kind_of(ty: Option<&str>, role: Option<&str>) -> ItemKind {
    match ty {
        Some("message") => ItemKind::Message(role_of(role)),
        None if role.is_some() => ItemKind::Message(role_of(role)),
        Some("function_call") => ItemKind::FunctionCall,
        Some("function_call_output") => ItemKind::FunctionCallOutput,
        Some("custom_tool_call") => ItemKind::CustomToolCall,
        Some("custom_tool_call_output") => ItemKind::CustomToolCallOutput,
        Some("reasoning") => ItemKind::Reasoning,
        Some("item_reference") => ItemKind::ItemReference,
        Some("compaction") => ItemKind::Compaction,
        _ => ItemKind::Other,
    }
}

/// How an item's `content` fields are hashed, which depends on its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRule {
    /// Not a message: exactly.
    Plain,
    /// A message: a string is one `input_text` part.
    Message,
    /// An assistant message: also, `output_text` parts are `input_text`.
    Assistant,
}

impl ContentRule {
    /// The rule for an item of `kind` whose role is `role`.
    pub(crate) fn of(kind: ItemKind, role: Option<&str>) -> ContentRule {
        match kind {
            ItemKind::Message(_) if role == Some("assistant") => ContentRule::Assistant,
            ItemKind::Message(_) => ContentRule::Message,
            _ => ContentRule::Plain,
        }
    }
}

/// Whether items of `kind` carry server-assigned `id`/`status` fields that
/// the canonical form drops.
pub(crate) fn drops_server_fields(kind: ItemKind) -> bool {
    matches!(kind, ItemKind::Message(_) | ItemKind::FunctionCall | ItemKind::FunctionCallOutput)
}
