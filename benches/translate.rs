//! Translation benchmarks: one upstream frame in, what the client gets out.
//!
//! The terminal `response.completed` frame is shaped like the service's: it
//! echoes the whole Response (instructions, tools, usage) with its output, so
//! it runs to tens of KB on an agent turn, where `tether-bench overhead`'s
//! emulator frame (no instructions, no tools) is 1.2 KB. A delta frame is the
//! common case of a streamed answer.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tether::translate::{Mode, Outcome, Translator};

/// A `response.completed` frame: ~12 KB of instructions, 24 tools, an output
/// of a reasoning item, 6 function calls and a message.
fn completed_frame() -> String {
    let instructions = "You are a coding agent. Follow the repository's conventions. ".repeat(200);
    let tools: Vec<_> = (0..24)
        .map(|i| {
            json!({"type": "function", "name": format!("tool_{i}"), "strict": false,
                   "description": format!("Tool number {i}: reads, edits or runs something in the workspace."),
                   "parameters": {"type": "object", "properties": {
                       "path": {"type": "string", "description": "A path relative to the workspace root."},
                       "content": {"type": "string", "description": "Text to write, or a command line."}},
                       "required": ["path"]}})
        })
        .collect();
    let mut output = vec![json!({"id": "rs_1", "type": "reasoning", "summary": [],
                                 "encrypted_content": "gAAAAA".repeat(400)})];
    for i in 0..6 {
        output.push(json!({"id": format!("fc_{i}"), "type": "function_call", "status": "completed",
                           "call_id": format!("call_{i}"), "name": "tool_1",
                           "arguments": format!("{{\"path\":\"src/file_{i}.rs\",\"content\":\"fn main() {{\\n    println!(\\\"{i}\\\");\\n}}\\n\"}}")}));
    }
    output.push(json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                    "text": "I changed the six files; the tests pass. ".repeat(20)}]}));
    let response = json!({"id": "resp_0123456789abcdef", "object": "response", "created_at": 1_764_000_000,
        "status": "completed", "error": null, "incomplete_details": null, "instructions": instructions,
        "max_output_tokens": null, "model": "gpt-5", "output": output, "parallel_tool_calls": true,
        "previous_response_id": "resp_upstream_parent", "reasoning": {"effort": "medium", "summary": null},
        "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": tools, "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": 41_000, "input_tokens_details": {"cached_tokens": 40_000},
                  "output_tokens": 900, "output_tokens_details": {"reasoning_tokens": 500}, "total_tokens": 41_900}});
    // The servers' layout: type first, then the sequence number.
    format!(r#"{{"type":"response.completed","sequence_number":97,"response":{response}}}"#)
}

fn delta_frame() -> String {
    r#"{"type":"response.output_text.delta","content_index":0,"delta":"tokio","item_id":"msg_1","logprobs":[],"output_index":1,"sequence_number":12}"#.to_owned()
}

fn translation(c: &mut Criterion) {
    let completed = completed_frame();
    let delta = delta_frame();
    for (name, frame) in [("completed", &completed), ("delta", &delta)] {
        let mut g = c.benchmark_group(format!("translate_{name}"));
        g.throughput(Throughput::Bytes(frame.len() as u64));
        for (mode_name, mode) in [("json", Mode::Json), ("sse", Mode::Sse)] {
            g.bench_function(mode_name, |b| {
                b.iter(|| {
                    // The client sent no previous_response_id: the rewrite
                    // runs, as on every continued turn.
                    let mut t = Translator::new(mode, None);
                    let step = t.on_frame(black_box(frame)).expect("a valid frame");
                    if name == "completed" {
                        assert!(matches!(step.end, Some(Outcome::Completed { .. })));
                    }
                    step
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, translation);
criterion_main!(benches);
