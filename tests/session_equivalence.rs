//! Table tests: one row per equivalence rule of DESIGN §3, equal and not equal.

use serde_json::value::RawValue;
use tether::session::{ChainSeed, ItemKind, Role, TenantId, fingerprint};

fn item_hash(json: &str) -> u128 {
    let raw = RawValue::from_string(json.to_owned()).expect("valid JSON");
    let seed = ChainSeed { tenant: TenantId(7), model: "m", store: false };
    let fp = fingerprint(&seed, &[&raw]).expect("an object");
    fp.item_hash(0).expect("one item")
}

fn kind(json: &str) -> ItemKind {
    let raw = RawValue::from_string(json.to_owned()).expect("valid JSON");
    let seed = ChainSeed { tenant: TenantId(7), model: "m", store: false };
    fingerprint(&seed, &[&raw]).expect("an object").kind(0)
}

/// (rule, a, b): a and b must hash equal.
const EQUAL: &[(&str, &str, &str)] = &[
    (
        "key order",
        r#"{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}"#,
        r#"{"arguments":"{}","name":"f","call_id":"c1","type":"function_call"}"#,
    ),
    ("whitespace", r#"{"role":"user","content":"hi"}"#, "{ \"role\" : \"user\",\n \"content\" : \"hi\" }"),
    ("string escapes", r#"{"role":"user","content":"é/"}"#, r#"{"role":"user","content":"\u00e9\/"}"#),
    (
        "null field dropped",
        r#"{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"E"}"#,
        r#"{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"E","content":null}"#,
    ),
    (
        "nested null dropped",
        r#"{"type":"web_search_call","action":{"query":"q"}}"#,
        r#"{"type":"web_search_call","action":{"query":"q","sources":null}}"#,
    ),
    (
        "empty annotations dropped",
        r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a"}]}"#,
        r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a","annotations":[]}]}"#,
    ),
    (
        "empty logprobs dropped",
        r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a"}]}"#,
        r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a","logprobs":[]}]}"#,
    ),
    (
        "message id/status dropped",
        r#"{"type":"message","role":"assistant","content":"a"}"#,
        r#"{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":"a"}"#,
    ),
    (
        "client msg id dropped",
        r#"{"type":"message","role":"user","content":"a"}"#,
        r#"{"type":"message","id":"msg_0b7c1e2a-5d1e-4c1a-9b7e-2f1d3c4b5a69","role":"user","content":"a"}"#,
    ),
    (
        "function_call id/status dropped",
        r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}"#,
        r#"{"type":"function_call","id":"fc_9","status":"completed","call_id":"c","name":"f","arguments":"{}"}"#,
    ),
    (
        "function_call_output id/status dropped",
        r#"{"type":"function_call_output","call_id":"c","output":"ok"}"#,
        r#"{"type":"function_call_output","id":"fco_1","status":"completed","call_id":"c","output":"ok"}"#,
    ),
    (
        "string == one input_text part",
        r#"{"role":"user","content":"hi"}"#,
        r#"{"role":"user","content":[{"type":"input_text","text":"hi"}]}"#,
    ),
    (
        "assistant string == output_text part",
        r#"{"role":"assistant","content":"hi"}"#,
        r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[],"logprobs":[]}]}"#,
    ),
    (
        "assistant output_text == input_text",
        r#"{"role":"assistant","content":[{"type":"input_text","text":"a"},{"type":"output_text","text":"b"}]}"#,
        r#"{"role":"assistant","content":[{"type":"output_text","text":"a"},{"type":"input_text","text":"b"}]}"#,
    ),
    (
        "missing type == message",
        r#"{"role":"developer","content":"sys"}"#,
        r#"{"type":"message","role":"developer","content":"sys"}"#,
    ),
    (
        "null type == missing type",
        r#"{"type":null,"role":"user","content":"x"}"#,
        r#"{"type":"message","role":"user","content":"x"}"#,
    ),
];

/// (rule, a, b): a and b must hash differently.
const DIFFERENT: &[(&str, &str, &str)] = &[
    ("text", r#"{"role":"user","content":"hi"}"#, r#"{"role":"user","content":"hj"}"#),
    ("role", r#"{"role":"user","content":"hi"}"#, r#"{"role":"developer","content":"hi"}"#),
    (
        "arguments exact",
        r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\":1}"}"#,
        r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\": 1}"}"#,
    ),
    (
        "call_id",
        r#"{"type":"function_call_output","call_id":"c1","output":"ok"}"#,
        r#"{"type":"function_call_output","call_id":"c2","output":"ok"}"#,
    ),
    (
        "phase kept",
        r#"{"type":"message","role":"assistant","content":"a"}"#,
        r#"{"type":"message","role":"assistant","content":"a","phase":"commentary"}"#,
    ),
    (
        "phase value",
        r#"{"type":"message","role":"assistant","content":"a","phase":"final_answer"}"#,
        r#"{"type":"message","role":"assistant","content":"a","phase":"commentary"}"#,
    ),
    (
        "reasoning id kept",
        r#"{"type":"reasoning","id":"rs_1","summary":[]}"#,
        r#"{"type":"reasoning","id":"rs_2","summary":[]}"#,
    ),
    (
        "reasoning without id",
        r#"{"type":"reasoning","id":"rs_1","summary":[]}"#,
        r#"{"type":"reasoning","summary":[]}"#,
    ),
    (
        "encrypted_content kept",
        r#"{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"E"}"#,
        r#"{"type":"reasoning","id":"rs_1","summary":[]}"#,
    ),
    (
        "reasoning status kept",
        r#"{"type":"reasoning","id":"rs_1","summary":[]}"#,
        r#"{"type":"reasoning","id":"rs_1","summary":[],"status":"completed"}"#,
    ),
    (
        "user output_text != input_text",
        r#"{"role":"user","content":[{"type":"input_text","text":"a"}]}"#,
        r#"{"role":"user","content":[{"type":"output_text","text":"a"}]}"#,
    ),
    (
        "non-empty annotations kept",
        r#"{"role":"assistant","content":[{"type":"output_text","text":"a"}]}"#,
        r#"{"role":"assistant","content":[{"type":"output_text","text":"a","annotations":[{"type":"url_citation","url":"u"}]}]}"#,
    ),
    (
        "two parts != joined string",
        r#"{"role":"user","content":"ab"}"#,
        r#"{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]}"#,
    ),
    (
        "empty other array kept",
        r#"{"type":"reasoning","id":"r","summary":[]}"#,
        r#"{"type":"reasoning","id":"r"}"#,
    ),
    (
        "custom_tool_call id kept",
        r#"{"type":"custom_tool_call","id":"ctc_1","call_id":"c","name":"f","input":"x"}"#,
        r#"{"type":"custom_tool_call","call_id":"c","name":"f","input":"x"}"#,
    ),
    ("unknown kind exact", r#"{"type":"x_item","id":"a"}"#, r#"{"type":"x_item","id":"b"}"#),
    (
        "missing type on non-message",
        r#"{"call_id":"c","output":"ok"}"#,
        r#"{"type":"function_call_output","call_id":"c","output":"ok"}"#,
    ),
    ("integer vs float", r#"{"type":"computer_call","x":1}"#, r#"{"type":"computer_call","x":1.0}"#),
    ("string vs number", r#"{"type":"computer_call","x":"1"}"#, r#"{"type":"computer_call","x":1}"#),
    ("nesting vs flat", r#"{"type":"t","a":{"b":"c"}}"#, r#"{"type":"t","a":["b","c"]}"#),
    ("key/value boundary", r#"{"type":"t","ab":"c"}"#, r#"{"type":"t","a":"bc"}"#),
    (
        "image detail",
        r#"{"role":"user","content":[{"type":"input_image","image_url":"u","detail":"auto"}]}"#,
        r#"{"role":"user","content":[{"type":"input_image","image_url":"u","detail":"high"}]}"#,
    ),
];

#[test]
fn long_strings_hash_by_value_whatever_their_escaping() {
    let plain = r"x\u00e9y ".repeat(200);
    let text = plain.replace("\\u00e9", "é");
    let escaped = format!(r#"{{"role":"user","content":"{plain}"}}"#);
    let raw = format!(r#"{{"role":"user","content":"{text}"}}"#);
    let parts = format!(r#"{{"role":"user","content":[{{"type":"input_text","text":"{plain}"}}]}}"#);
    assert_eq!(item_hash(&escaped), item_hash(&raw));
    assert_eq!(item_hash(&escaped), item_hash(&parts));
    let assistant = format!(r#"{{"role":"assistant","content":"{text}"}}"#);
    let assistant_parts = format!(
        r#"{{"role":"assistant","content":[{{"type":"output_text","text":"{plain}","annotations":[]}}]}}"#
    );
    assert_eq!(item_hash(&assistant), item_hash(&assistant_parts));
    let other = format!(r#"{{"role":"user","content":"{text}!"}}"#);
    assert_ne!(item_hash(&raw), item_hash(&other));
    // 256 vs 257 bytes: both sides of the threshold still differ from each other.
    let a = format!(r#"{{"role":"user","content":"{}"}}"#, "a".repeat(256));
    let b = format!(r#"{{"role":"user","content":"{}"}}"#, "a".repeat(257));
    assert_ne!(item_hash(&a), item_hash(&b));
}

#[test]
fn equal_rows() {
    for (rule, a, b) in EQUAL {
        assert_eq!(item_hash(a), item_hash(b), "rule `{rule}` should be equal");
    }
}

#[test]
fn different_rows() {
    for (rule, a, b) in DIFFERENT {
        assert_ne!(item_hash(a), item_hash(b), "rule `{rule}` should differ");
    }
}

#[test]
fn kinds() {
    assert_eq!(kind(r#"{"role":"user","content":"x"}"#), ItemKind::Message(Role::User));
    assert_eq!(
        kind(r#"{"type":"message","role":"assistant","content":"x"}"#),
        ItemKind::Message(Role::Assistant)
    );
    assert_eq!(kind(r#"{"type":"function_call"}"#), ItemKind::FunctionCall);
    assert_eq!(kind(r#"{"type":"function_call_output"}"#), ItemKind::FunctionCallOutput);
    assert_eq!(kind(r#"{"type":"reasoning"}"#), ItemKind::Reasoning);
    assert_eq!(kind(r#"{"type":"web_search_call"}"#), ItemKind::Other);
    assert_eq!(ItemKind::FunctionCallOutput.label(), "function_call_output");
}

#[test]
fn non_objects_are_rejected() {
    let seed = ChainSeed { tenant: TenantId(1), model: "m", store: true };
    let a = RawValue::from_string(r#"{"role":"user","content":"x"}"#.into()).expect("json");
    let b = RawValue::from_string("[1]".into()).expect("json");
    let err = fingerprint(&seed, &[&a, &b]).expect_err("not an object");
    assert_eq!(err.to_string(), "input item 1 is not a JSON object");
}
