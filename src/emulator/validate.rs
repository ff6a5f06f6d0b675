//! Request validation like the real service: item shapes, tool-call
//! pairing over the whole reconstructed context, and the `store:false`
//! rule for reasoning items.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::error::ApiError;

const KNOWN_KINDS: &[&str] = &[
    "message",
    "function_call",
    "function_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "reasoning",
    "item_reference",
    "compaction",
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "code_interpreter_call",
    "image_generation_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
];

const ROLES: &[&str] = &["user", "assistant", "system", "developer"];

/// The request's `input` as a list of items (a string becomes one user message).
pub(crate) fn input_items(body: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    match body.get("input") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"type":"message","role":"user","content":text})]),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_item(i, item)?;
            }
            Ok(items.clone())
        }
        Some(_) => Err(ApiError::input("Invalid type for 'input': expected a string or an array of items.")),
    }
}

fn check_item(i: usize, item: &Value) -> Result<(), ApiError> {
    let Some(map) = item.as_object() else {
        return Err(ApiError::input(format!("Invalid type for 'input[{i}]': expected an object.")));
    };
    let kind = match map.get("type") {
        None if map.contains_key("role") => "message",
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(ApiError::input(format!("Missing required parameter: 'input[{i}].type'.")));
        }
    };
    if !KNOWN_KINDS.contains(&kind) {
        return Err(ApiError::invalid(
            format!("Invalid value: '{kind}'. Supported values are: {}.", KNOWN_KINDS.join(", ")),
            Some("input"),
            Some("invalid_value"),
        ));
    }
    let need_str = |key: &str| -> Result<(), ApiError> {
        match map.get(key) {
            Some(Value::String(_)) => Ok(()),
            _ => Err(ApiError::input(format!("Missing or invalid 'input[{i}].{key}': expected a string."))),
        }
    };
    match kind {
        "message" => {
            need_str("role")?;
            let role = map.get("role").and_then(Value::as_str).unwrap_or_default();
            if !ROLES.contains(&role) {
                return Err(ApiError::input(format!("Invalid value for 'input[{i}].role': '{role}'.")));
            }
            match map.get("content") {
                Some(Value::String(_)) => Ok(()),
                Some(Value::Array(parts)) if parts.iter().all(is_part) => Ok(()),
                _ => Err(ApiError::input(format!(
                    "Invalid 'input[{i}].content': expected a string or content parts."
                ))),
            }
        }
        "function_call" | "custom_tool_call" => {
            need_str("call_id")?;
            need_str("name")?;
            need_str(if kind == "function_call" { "arguments" } else { "input" })
        }
        "function_call_output" | "custom_tool_call_output" => {
            need_str("call_id")?;
            match map.get("output") {
                Some(Value::String(_) | Value::Array(_)) => Ok(()),
                _ => Err(ApiError::input(format!("Missing or invalid 'input[{i}].output'."))),
            }
        }
        "reasoning" => match map.get("summary") {
            Some(Value::Array(_)) => Ok(()),
            _ => Err(ApiError::input(format!("Missing required parameter: 'input[{i}].summary'."))),
        },
        "item_reference" => need_str("id"),
        _ => Ok(()),
    }
}

fn is_part(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str).is_some()
}

/// `store:false` cannot resend reasoning items without `encrypted_content`.
pub(crate) fn check_reasoning(input: &[Value], store: bool) -> Result<(), ApiError> {
    if store {
        return Ok(());
    }
    for item in input {
        if kind(item) == "reasoning" && item.get("encrypted_content").and_then(Value::as_str).is_none() {
            let id = item.get("id").and_then(Value::as_str).unwrap_or("?");
            return Err(ApiError::input(format!(
                "Item with id '{id}' not found. Items are not persisted when `store` is set to false. \
                 Try again with `store` set to true, or remove this item from your input."
            )));
        }
    }
    Ok(())
}

/// Every call needs its output and every output its call, by `call_id`.
pub(crate) fn check_pairing(context: &[Value]) -> Result<(), ApiError> {
    let mut open: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for item in context {
        let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        match kind(item) {
            "function_call" | "custom_tool_call" => {
                seen.insert(call_id.clone());
                open.push(call_id);
            }
            "function_call_output" | "custom_tool_call_output" => {
                if !seen.contains(&call_id) {
                    return Err(ApiError::input(format!(
                        "No tool call found for function call output with call_id {call_id}."
                    )));
                }
                open.retain(|c| c != &call_id);
            }
            _ => {}
        }
    }
    match open.first() {
        Some(call_id) => Err(ApiError::input(format!("No tool output found for function call {call_id}."))),
        None => Ok(()),
    }
}

/// An item's `type` (a message may omit it).
pub(crate) fn kind(item: &Value) -> &str {
    match item.get("type").and_then(Value::as_str) {
        Some(kind) => kind,
        None if item.get("role").is_some() => "message",
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_rules() {
        let call = json!({"type":"function_call","call_id":"a","name":"f","arguments":"{}"});
        let out = json!({"type":"function_call_output","call_id":"a","output":"x"});
        assert!(check_pairing(&[call.clone(), out.clone()]).is_ok());
        assert!(check_pairing(std::slice::from_ref(&call)).is_err());
        assert!(check_pairing(std::slice::from_ref(&out)).is_err());
        assert!(check_pairing(&[out, call]).is_err());
    }
}
