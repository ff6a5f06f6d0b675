//! The raw scan against the tree path (the reference), on tables of edge
//! cases and on generated JSON text: same digest and kind whenever the scan
//! does not decline, and no decline on ordinary items.

use proptest::prelude::*;

use super::kind::ItemKind;
use super::lex::next_special;
use super::scan::{Scratch, hash_raw_item};
use super::tree::{Node, hash_item};

fn tree(text: &str) -> Option<(u128, ItemKind)> {
    match serde_json::from_str::<Node<'_>>(text) {
        Ok(node @ Node::Obj(_)) => Some(hash_item(&node)),
        _ => None,
    }
}

fn scan(text: &str) -> Option<(u128, ItemKind)> {
    hash_raw_item(text, &mut Scratch::default())
}

/// Asserts the scan handles `text` and agrees with the tree.
#[track_caller]
fn agrees(text: &str) {
    let s = scan(text);
    assert!(s.is_some(), "declined: {text}");
    assert_eq!(s, tree(text), "{text}");
}

/// Asserts the scan declines `text` or agrees with the tree.
#[track_caller]
fn agrees_or_declines(text: &str) {
    if let Some(s) = scan(text) {
        assert_eq!(Some(s), tree(text), "{text}");
    }
}

#[test]
fn items_agree() {
    for text in [
        r#"{}"#,
        r#"{"role":"user","content":"hi"}"#,
        r#"{"content":"hi","role":"user"}"#,
        r#"{"content":"hi","type":"message","role":"assistant"}"#,
        r#"{"content":[{"type":"output_text","text":"a","annotations":[]}],"role":"assistant"}"#,
        r#"{"content":[{"type":"output_text","text":"a","logprobs":[]}],"role":"assistant","type":"message"}"#,
        r#"{"role":"assistant","content":[{"type":"output_text","text":"a"},"s",1,[{"type":"output_text"}]]}"#,
        r#"{"role":"user","content":[{"type":"output_text","text":"a"}]}"#,
        r#"{"type":"function_call","content":"x","role":"assistant"}"#,
        r#"{"type":null,"role":"user","content":"x"}"#,
        r#"{"type":null,"type":"message","role":"user","content":"x"}"#,
        r#"{"type":"message","type":"reasoning","role":"user","content":"x","id":"1"}"#,
        r#"{"type":5,"role":"user","content":"x","id":"i","status":"s"}"#,
        r#"{"role":5,"role":"user","content":"x"}"#,
        r#"{"role":"user","role":"assistant","content":[{"type":"output_text"}]}"#,
        r#"{"id":"msg_1","status":"completed","type":"message","role":"assistant","content":"a"}"#,
        r#"{"type":"reasoning","id":"rs_1","status":"x","summary":[],"content":null,"encrypted_content":"E"}"#,
        r#"{"type":"function_call_output","call_id":"c","output":"o","id":"fco","status":null}"#,
        r#"{"type":"web_search_call","action":{"query":"q","sources":null,"b":{"z":1,"a":[]}}}"#,
        r#"{"type":"x","annotations":[],"logprobs":[ ],"other":[],"n":{"annotations":[],"logprobs":[1]}}"#,
        r#"{"a":1,"a":2,"b":[1,2,{"y":null,"x":true}],"c":false,"d":-1,"e":1.5,"f":1e2,"g":-0}"#,
        r#"{"n":[0,1,10,18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809]}"#,
        r#"{"n":[1.0,1E2,1e+2,100.0,-0.0,-0,0.1,2.5e-3,123456789012345678901234567890,1e-400]}"#,
        " {\n \"role\" :\t\"user\" ,\r\n \"content\" : [ ] } ",
        r#"{"role":"us\u0065r","content":"\u00e9\/\"\\\b\f\n\r\t \ud83d\ude00 \u2028"}"#,
        r#"{"r\u006fle":"user","con\u0074ent":"x","\u00e9":"é","é":"\u00e9"}"#,
        r#"{"":"","\u0000":"\u0000"}"#,
    ] {
        agrees(text);
    }
}

#[test]
fn long_strings_agree_whatever_their_escaping() {
    for n in [255, 256, 257, 300] {
        let plain = "é".repeat(n / 2) + &"a".repeat(n % 2);
        let escaped = plain.replace('é', r"\u00e9");
        for s in [&plain, &escaped] {
            agrees(&format!(r#"{{"role":"user","content":"{s}"}}"#));
            agrees(&format!(r#"{{"role":"assistant","content":[{{"type":"output_text","text":"{s}"}}]}}"#));
            agrees(&format!(r#"{{"type":"{s}","role":"user","content":"x"}}"#));
            agrees(&format!(r#"{{"role":"{s}","role":"user","content":"x"}}"#));
            agrees(&format!(r#"{{"role":"{s}","content":"x"}}"#));
            agrees(&format!(r#"{{"{s}":1,"a":2,"{s}":3}}"#));
        }
        for shape in [r#"{"role":"user","content":"S"}"#, r#"{"role":"S","content":"x"}"#, r#"{"type":"S"}"#]
        {
            let a = shape.replace('S', &plain);
            let b = shape.replace('S', &escaped);
            assert_eq!(scan(&a), scan(&b), "{a}");
            assert_eq!(tree(&a), tree(&b), "{a}");
        }
    }
}

#[test]
fn what_the_scan_declines_the_tree_decides() {
    for text in [
        "[1]",
        r#""s""#,
        "null",
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\ud800\u0041"}"#,
        r#"{"a":"\udc00"}"#,
        r#"{"a":1e400}"#,
        r#"{"a":-}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":1} x"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"unterminated}"#,
        r#"{"a":tru}"#,
    ] {
        assert_eq!(scan(text), None, "{text}");
    }
    let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
    agrees(&deep(98));
    assert_eq!(scan(&deep(200)), None);
    agrees_or_declines(&deep(127));
    agrees_or_declines(&deep(128));
}

/// A JSON value with some control over how it is written.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// A number token, written as is.
    Num(String),
    Str(String),
    Arr(Vec<J>),
    /// Members in document order; keys may repeat.
    Obj(Vec<(String, J)>),
}

fn num() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| format!("{v:?}")),
        any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| format!("{v:e}")),
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "1.0",
            "1e2",
            "1E+2",
            "100.0",
            "-0.0",
            "0.1",
            "2.5e-3",
            "1e-400",
            "1e400",
            "18446744073709551616",
            "-9223372036854775809",
            "99999999999999999999",
        ])
        .prop_map(str::to_owned),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "message", "user", "assistant", "output_text", "input_text", "function_call",
            "function_call_output", "reasoning", "", "é",
        ]).prop_map(str::to_owned),
        4 => "[a-z \"\\\\\n/é\u{1F600}\u{7f}\u{2028}]{0,12}",
        1 => "[a-zé\"\\\\\n\u{1F600}]{250,262}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "type", "role", "content", "id", "status", "text", "annotations", "logprobs", "a", "b",
        ]).prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        num().prop_map(J::Num),
        text().prop_map(J::Str),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

fn s(v: &str) -> J {
    J::Str(v.to_owned())
}

fn one_of(v: &[&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(v.to_vec()).prop_map(str::to_owned)
}

/// A content part: `output_text`/`input_text`/other, maybe with empty or
/// full `annotations`/`logprobs`.
fn part() -> impl Strategy<Value = J> {
    let list =
        prop_oneof![Just(None), Just(Some(J::Arr(vec![]))), Just(Some(J::Arr(vec![J::Num("1".into())])))];
    (one_of(&["output_text", "input_text", "refusal"]), text(), list.clone(), list).prop_map(
        |(ty, t, a, l)| {
            let mut o = vec![("type".to_owned(), J::Str(ty)), ("text".to_owned(), J::Str(t))];
            o.extend(a.map(|a| ("annotations".to_owned(), a)));
            o.extend(l.map(|l| ("logprobs".to_owned(), l)));
            J::Obj(o)
        },
    )
}

/// Message-shaped items: `type` present, null or absent, a role, string or
/// part content, server fields, and a few other members.
fn message() -> impl Strategy<Value = J> {
    let ty =
        prop_oneof![Just(None), Just(Some(J::Null)), Just(Some(s("message"))), Just(Some(s("reasoning")))];
    let content = prop_oneof![text().prop_map(J::Str), prop::collection::vec(part(), 0..3).prop_map(J::Arr)];
    let extra = prop::collection::vec((key(), json()), 0..3);
    let role = one_of(&["user", "assistant", "developer", "system"]);
    (ty, role, content, any::<(bool, bool)>(), extra).prop_map(|(ty, role, content, (id, status), extra)| {
        let mut o: Vec<(String, J)> = ty.map(|t| ("type".to_owned(), t)).into_iter().collect();
        o.push(("role".to_owned(), J::Str(role)));
        o.push(("content".to_owned(), content));
        if id {
            o.push(("id".to_owned(), s("msg_1")));
        }
        if status {
            o.push(("status".to_owned(), s("completed")));
        }
        o.extend(extra);
        J::Obj(o)
    })
}

fn item() -> impl Strategy<Value = J> {
    prop_oneof![
        2 => prop::collection::vec((key(), json()), 0..8).prop_map(J::Obj),
        1 => message(),
    ]
}

/// A tiny generator for the writing choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

fn ws(out: &mut String, r: &mut Rng) {
    if r.one_in(3) {
        out.push_str([" ", "\n  ", "\t", "\r\n"][(r.next() % 4) as usize]);
    }
}

fn write_str(out: &mut String, s: &str, r: &mut Rng, lone_surrogates: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str(if r.one_in(4) { r"\u0022" } else { "\\\"" }),
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(if r.one_in(2) { r"\n" } else { r"\u000a" }),
            '/' if r.one_in(2) => out.push_str(r"\/"),
            c if lone_surrogates && c == '\u{1F600}' && r.one_in(3) => out.push_str(r"\ud83d"),
            c if r.one_in(5) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(out: &mut String, j: &J, r: &mut Rng, lone_surrogates: bool) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => write_str(out, s, r, lone_surrogates),
        J::Arr(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(out, r);
                write(out, v, r, lone_surrogates);
                ws(out, r);
            }
            out.push(']');
        }
        J::Obj(o) => {
            out.push('{');
            // Any member order, unless keys repeat (their order matters).
            let mut order: Vec<&(String, J)> = o.iter().collect();
            let unique = o.iter().enumerate().all(|(i, (k, _))| o[..i].iter().all(|(k2, _)| k2 != k));
            if unique {
                for i in (1..order.len()).rev() {
                    order.swap(i, (r.next() % (i as u64 + 1)) as usize);
                }
            }
            for (i, (k, v)) in order.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(out, r);
                write_str(out, k, r, lone_surrogates);
                ws(out, r);
                out.push(':');
                ws(out, r);
                write(out, v, r, lone_surrogates);
                ws(out, r);
            }
            out.push('}');
        }
    }
}

fn render(j: &J, seed: u64, lone_surrogates: bool) -> String {
    let mut out = String::new();
    write(&mut out, j, &mut Rng(seed), lone_surrogates);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The word-at-a-time search finds what a plain one finds.
    #[test]
    fn next_special_finds_the_first(s in prop::collection::vec(prop::sample::select(b"ab\"\\\xff\x80".to_vec()), 0..200),
                                   plain in 0usize..160) {
        let mut s = s;
        s.splice(0..0, std::iter::repeat_n(b'x', plain));
        prop_assert_eq!(next_special(&s), s.iter().position(|c| matches!(c, b'"' | b'\\')));
    }

    /// Any generated item, however written (whitespace, escapes, member
    /// order): the scan gives the tree's digest and kind, and two writings
    /// of one item hash alike.
    #[test]
    fn scan_equals_tree(j in item(), a in any::<u64>(), b in any::<u64>()) {
        let (x, y) = (render(&j, a, false), render(&j, b, false));
        let tx = tree(&x);
        prop_assert_eq!(scan(&x), tx, "{}", x);
        prop_assert_eq!(scan(&y), tree(&y), "{}", y);
        prop_assert_eq!(tx, tree(&y));
    }

    /// With lone surrogates written in: declined or equal.
    #[test]
    fn scan_declines_or_equals_tree(j in item(), a in any::<u64>()) {
        let x = render(&j, a, true);
        agrees_or_declines(&x);
    }
}
