//! The scripted, deterministic model: from a context and a script, the
//! output items (tool calls, then a final answer, optionally preceded by a
//! reasoning item).
//!
//! Output depends only on the context in the oracle's normal form, the
//! script, the request's tool names and whether encrypted reasoning was
//! asked for, so the same context gives the same output over HTTP and
//! WebSocket. `call_id`s, reasoning ids and `encrypted_content` derive from
//! the context hash; `msg_`/`fc_` item ids are unique per response.

use serde_json::{Value, json};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::oracle::Normal;
use super::script::Script;
use super::validate::kind;

/// Reasoning tokens billed for a reasoning item.
pub(crate) const REASONING_TOKENS: u64 = 16;

/// What the model produced.
pub(crate) struct Generated {
    pub output: Vec<Value>,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

/// Inputs to the model besides the context.
pub(crate) struct Ask<'a> {
    pub script: Script,
    pub tools: Option<&'a Value>,
    pub encrypted_reasoning: bool,
}

/// Hash of a context in normal form (`normal`: the context's).
pub(crate) fn context_hash(normal: &Normal) -> u64 {
    xxh3_64(normal.array_text().as_bytes())
}

/// Runs the script over `context`, whose [`context_hash`] is `h`; `new_id`
/// mints unique item ids.
pub(crate) fn generate(
    context: &[Value],
    h: u64,
    ask: &Ask<'_>,
    mut new_id: impl FnMut(&str) -> String,
) -> Generated {
    let script = ask.script;
    let mut output = Vec::new();
    let mut reasoning_tokens = 0;
    let mut bytes = 0usize;
    if script.reasoning {
        let mut item =
            json!({"id": format!("rs_{h:016x}"), "type": "reasoning", "summary": [], "status": "completed"});
        if ask.encrypted_reasoning {
            let secret = xxh3_128(format!("reasoning:{h}").as_bytes());
            item["encrypted_content"] = Value::from(format!("gAAAAA{secret:032x}{h:016x}"));
        }
        output.push(item);
        reasoning_tokens = REASONING_TOKENS;
    }
    let done = tool_outputs_since_last_user(context);
    if done < script.tools {
        let names = tool_names(ask.tools);
        for i in 0..script.parallel.min(script.tools - done) {
            let name = names
                .get(((done + i) as usize) % names.len().max(1))
                .cloned()
                .unwrap_or_else(|| "exec_command".to_owned());
            let seed = h ^ u64::from(i + 1);
            let arguments = json!({ "cmd": filler(seed, script.args.saturating_sub(10)) }).to_string();
            bytes += arguments.len();
            output.push(json!({
                "id": new_id("fc"), "type": "function_call", "status": "completed",
                "arguments": arguments, "call_id": format!("call_{h:016x}{i:02}"), "name": name,
            }));
        }
    } else {
        let text = filler(h, script.answer);
        bytes += text.len();
        output.push(json!({
            "id": new_id("msg"), "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }));
    }
    Generated { output, output_tokens: super::cost::tokens(bytes) + reasoning_tokens, reasoning_tokens }
}

fn tool_outputs_since_last_user(context: &[Value]) -> u32 {
    let mut n = 0;
    for item in context.iter().rev() {
        match kind(item) {
            "message" if item.get("role").and_then(Value::as_str) == Some("user") => break,
            "function_call_output" => n += 1,
            _ => {}
        }
    }
    n
}

fn tool_names(tools: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(tools)) = tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            t.get("name").or_else(|| t.get("function").and_then(|f| f.get("name"))).and_then(Value::as_str)
        })
        .map(str::to_owned)
        .collect()
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "cargo", "delta", "echo", "fn", "grep", "hyper", "ident", "json", "kernel", "lambda",
    "mutex", "node", "option", "parse", "query", "rust", "socket", "tokio", "unwrap", "vector", "while",
    "xor", "yield", "zero",
];

/// Deterministic ASCII text of exactly `len` bytes.
pub(crate) fn filler(seed: u64, len: usize) -> String {
    let mut out = String::with_capacity(len + 8);
    let mut state = seed | 1;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(script: &str) -> Ask<'static> {
        Ask { script: script.parse().expect("script"), tools: None, encrypted_reasoning: true }
    }

    #[test]
    fn tools_then_answer() {
        let user = json!({"role":"user","content":"go"});
        let mut ids = 0;
        let mut id = |p: &str| {
            ids += 1;
            format!("{p}_{ids}")
        };
        let first = generate(
            std::slice::from_ref(&user),
            context_hash(&Normal::of(std::slice::from_ref(&user))),
            &ask("tools=1,args=50"),
            &mut id,
        );
        assert_eq!(first.output.len(), 1);
        let call = &first.output[0];
        assert_eq!(call["type"], "function_call");
        assert_eq!(call["name"], "exec_command");
        assert!(call["arguments"].as_str().is_some_and(|a| a.len() == 50));
        let again = generate(
            std::slice::from_ref(&user),
            context_hash(&Normal::of(std::slice::from_ref(&user))),
            &ask("tools=1,args=50"),
            &mut id,
        );
        assert_eq!(again.output[0]["call_id"], call["call_id"]);
        let out = json!({"type":"function_call_output","call_id":call["call_id"],"output":"ok"});
        let context = [user, call.clone(), out];
        let second = generate(
            &context,
            context_hash(&Normal::of(&context)),
            &ask("tools=1,answer=30,reasoning=1"),
            &mut id,
        );
        assert_eq!(second.output[0]["type"], "reasoning");
        assert!(second.output[0]["encrypted_content"].is_string());
        assert_eq!(second.output[1]["content"][0]["text"].as_str().map(str::len), Some(30));
    }
}
