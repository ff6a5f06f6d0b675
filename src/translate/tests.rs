//! Table tests for the translator: every frame kind, both modes, the
//! `previous_response_id` rewrite, both error shapes, malformed frames.

use super::*;

fn resp(id: &str, status: &str, prev: &str, output: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"response","status":"{status}","previous_response_id":{prev},"output":{output},"usage":null}}"#
    )
}

fn frame(kind: &str, seq: u64, response: &str) -> String {
    format!(r#"{{"type":"{kind}","sequence_number":{seq},"response":{response}}}"#)
}

fn sse(kind: &str, data: &str) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap_or("<non-utf8>")
}

const PASS_THROUGH: &[&str] = &[
    r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}"#,
    r#"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}"#,
    r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi \"there\"\n"}"#,
    r#"{"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi"}"#,
    r#"{"type":"response.content_part.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hi","annotations":[]}}"#,
    r#"{"type":"response.output_item.done","sequence_number":7,"output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[]}}"#,
    r#"{"type":"response.function_call_arguments.delta","sequence_number":8,"item_id":"fc_1","output_index":1,"delta":"{\"cmd\":"}"#,
    r#"{"type":"response.function_call_arguments.done","sequence_number":9,"item_id":"fc_1","output_index":1,"arguments":"{\"cmd\":\"ls\"}"}"#,
    r#"{"type":"response.reasoning_summary_text.delta","sequence_number":10,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"x"}"#,
    r#"{"type":"response.some_future_event","sequence_number":11,"whatever":{"nested":[1,2,3]}}"#,
    r#"{"type":"response.output_text.annotation.added","sequence_number":12,"annotation":{"type":"url_citation"}}"#,
    r#"{"type":"response.odd_sequence","sequence_number":"13"}"#,
    r#"{"type":"response.escaped\u002etype","sequence_number":14}"#,
];

#[test]
fn non_response_frames_pass_through_byte_for_byte() {
    for f in PASS_THROUGH {
        let mut t = Translator::new(Mode::Sse, None);
        let step = t.on_frame(f).expect("valid frame");
        let kind = serde_json::from_str::<serde_json::Value>(f).expect("json")["type"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert_eq!(text(&step.out), sse(&kind, f), "{f}");
        assert!(step.end.is_none());
        let mut j = Translator::new(Mode::Json, None);
        let step = j.on_frame(f).expect("valid frame");
        assert!(step.out.is_empty() && step.end.is_none());
    }
}

#[test]
fn response_frames_unchanged_when_prev_matches() {
    let kinds = ["response.created", "response.in_progress", "response.queued"];
    for (client, upstream) in [(None, "null"), (Some("resp_c"), "\"resp_c\"")] {
        for kind in kinds {
            let f = frame(kind, 0, &resp("resp_1", "in_progress", upstream, "[]"));
            let mut t = Translator::new(Mode::Sse, client.map(str::to_owned));
            let step = t.on_frame(&f).expect("valid");
            assert_eq!(text(&step.out), sse(kind, &f));
            assert!(step.end.is_none());
        }
    }
}

#[test]
fn response_frames_rewrite_prev_back_to_client_value() {
    let cases: &[(Option<&str>, &str, &str)] = &[
        (None, "\"resp_tether\"", "null"),
        (Some("resp_c"), "\"resp_tether\"", "\"resp_c\""),
        (Some("resp_c"), "null", "\"resp_c\""),
        (Some("we\"ird"), "null", r#""we\"ird""#),
    ];
    for (client, upstream, want) in cases {
        for kind in ["response.created", "response.in_progress", "response.queued"] {
            let f = frame(kind, 1, &resp("resp_1", "in_progress", upstream, "[]"));
            let expect = frame(kind, 1, &resp("resp_1", "in_progress", want, "[]"));
            let mut t = Translator::new(Mode::Sse, client.map(str::to_owned));
            let step = t.on_frame(&f).expect("valid");
            assert_eq!(text(&step.out), sse(kind, &expect), "{kind} {upstream}");
        }
    }
}

#[test]
fn nested_previous_response_id_elsewhere_is_untouched() {
    // An output item that happens to contain the same key must not be edited.
    let output = r#"[{"type":"message","previous_response_id":"resp_x"}]"#;
    let f = frame("response.completed", 9, &resp("resp_2", "completed", "\"resp_tether\"", output));
    let expect = frame("response.completed", 9, &resp("resp_2", "completed", "null", output));
    let mut t = Translator::new(Mode::Sse, None);
    let step = t.on_frame(&f).expect("valid");
    assert_eq!(text(&step.out), sse("response.completed", &expect));
}

#[test]
fn missing_prev_field_is_inserted_only_when_client_sent_one() {
    let f = r#"{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}"#;
    let mut t = Translator::new(Mode::Sse, None);
    assert_eq!(text(&t.on_frame(f).expect("valid").out), sse("response.created", f));
    let mut t = Translator::new(Mode::Sse, Some("resp_c".into()));
    let want = r#"{"type":"response.created","response":{"previous_response_id":"resp_c","id":"resp_1","status":"in_progress"}}"#;
    assert_eq!(text(&t.on_frame(f).expect("valid").out), sse("response.created", want));
}

#[test]
fn completed_in_both_modes() {
    let output = r#"[{"id":"msg_1","type":"message","content":[{"type":"output_text","text":"Hi"}]},{"id":"fc_1","type":"function_call","call_id":"c1","name":"f","arguments":"{}"}]"#;
    let r = resp("resp_2", "completed", "\"resp_1\"", output);
    let f = frame("response.completed", 9, &r);
    let rewritten = resp("resp_2", "completed", "null", output);
    for mode in [Mode::Sse, Mode::Json] {
        let mut t = Translator::new(mode, None);
        let step = t.on_frame(&f).expect("valid");
        match (mode, step.end) {
            (_, Some(Outcome::Completed { response_id, output: items, json_body })) => {
                assert_eq!(response_id, "resp_2");
                assert_eq!(items.len(), 2);
                assert!(items[1].get().contains("\"fc_1\""));
                match mode {
                    Mode::Sse => {
                        assert!(json_body.is_none());
                        let expect = frame("response.completed", 9, &rewritten);
                        assert_eq!(text(&step.out), sse("response.completed", &expect));
                    }
                    Mode::Json => {
                        assert!(step.out.is_empty());
                        assert_eq!(json_body.as_ref().map(text), Some(rewritten.as_str()));
                    }
                }
            }
            (_, other) => panic!("unexpected {other:?}"),
        }
        assert_eq!(t.on_frame(&f).err(), Some(TranslateError::AfterEnd));
    }
}

#[test]
fn incomplete_in_both_modes() {
    let r = resp("resp_3", "incomplete", "null", "[]");
    let f = frame("response.incomplete", 4, &r);
    for mode in [Mode::Sse, Mode::Json] {
        let mut t = Translator::new(mode, None);
        let step = t.on_frame(&f).expect("valid");
        match step.end {
            Some(Outcome::Incomplete { response_id, json_body }) => {
                assert_eq!(response_id, "resp_3");
                assert_eq!(json_body.is_some(), mode == Mode::Json);
                if mode == Mode::Json {
                    assert_eq!(json_body.as_ref().map(text), Some(r.as_str()));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn failed_maps_code_to_status() {
    let cases = [
        ("rate_limit_exceeded", 429),
        ("server_error", 500),
        ("invalid_prompt", 400),
        ("server_is_overloaded", 503),
        ("something_new", 500),
    ];
    for (code, status) in cases {
        let f = format!(
            r#"{{"type":"response.failed","sequence_number":3,"response":{{"id":"resp_f","status":"failed","previous_response_id":null,"error":{{"code":"{code}","message":"boom"}},"output":[]}}}}"#
        );
        for mode in [Mode::Sse, Mode::Json] {
            let mut t = Translator::new(mode, None);
            let step = t.on_frame(&f).expect("valid");
            assert_eq!(step.out.is_empty(), mode == Mode::Json);
            match step.end {
                Some(Outcome::Failed { status: s, json_body }) => {
                    assert_eq!(s, status, "{code}");
                    let v: serde_json::Value = serde_json::from_slice(&json_body).expect("json body");
                    assert_eq!(v["error"]["code"], code);
                    assert_eq!(v["error"]["message"], "boom");
                    assert!(v["error"]["type"].is_string());
                    assert!(v["error"].get("param").is_some());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let f = r#"{"type":"response.failed","response":{"id":"resp_f","error":null}}"#;
    let step = Translator::new(Mode::Json, None).on_frame(f).expect("valid");
    assert!(matches!(step.end, Some(Outcome::Failed { status: 500, .. })));
}

#[test]
fn error_frames_nested_and_flat() {
    let nested = r#"{"type":"error","status":400,"error":{"type":"invalid_request_error","code":"previous_response_not_found","message":"Previous response with id 'resp_x' not found.","param":"previous_response_id"}}"#;
    let flat = r#"{"type":"error","sequence_number":7,"code":"server_error","message":"oops","param":null}"#;
    // Downstream, both become the flat event a plain-HTTP stream carries.
    let nested_sse = r#"{"code":"previous_response_not_found","message":"Previous response with id 'resp_x' not found.","param":"previous_response_id","type":"error"}"#;
    let flat_sse =
        r#"{"code":"server_error","message":"oops","param":null,"sequence_number":7,"type":"error"}"#;
    let cases = [
        (nested, 400, Some("previous_response_not_found"), "invalid_request_error", nested_sse),
        (flat, 500, Some("server_error"), "server_error", flat_sse),
    ];
    for (f, status, code, kind, downstream) in cases {
        for mode in [Mode::Sse, Mode::Json] {
            let mut t = Translator::new(mode, None);
            let step = t.on_frame(f).expect("valid");
            match mode {
                Mode::Sse => assert_eq!(text(&step.out), sse("error", downstream)),
                Mode::Json => assert!(step.out.is_empty()),
            }
            match step.end {
                Some(Outcome::Error { status: s, code: c, json_body }) => {
                    assert_eq!(s, status);
                    assert_eq!(c.as_deref(), code);
                    let v: serde_json::Value = serde_json::from_slice(&json_body).expect("json");
                    assert_eq!(v["error"]["type"], kind);
                    assert_eq!(v["error"]["code"], code.unwrap_or_default());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let e = error_body_from_frame(nested).expect("valid");
    assert_eq!(e.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&e.body).expect("json");
    assert_eq!(v["error"]["param"], "previous_response_id");
    // A nested frame after numbered events is numbered next.
    let mut t = Translator::new(Mode::Sse, None);
    t.on_frame(r#"{"type":"response.output_text.delta","sequence_number":4,"delta":"x"}"#).expect("delta");
    let step = t.on_frame(nested).expect("error");
    assert!(text(&step.out).contains(r#""sequence_number":5"#), "{}", text(&step.out));
}

#[test]
fn malformed_frames_are_errors() {
    let bad = [
        "",
        "not json",
        "[1,2]",
        r#"{"no_type":1}"#,
        r#"{"type":5}"#,
        r#"{"type":"response.completed","response":{"id":"r","output":{"not":"array"}}}"#,
        r#"{"type":"response.completed","response":{"status":"completed"}}"#,
        r#"{"type":"response.created","response":"string"}"#,
        r#"{"type":"response.output_text.delta""#,
        r#"{"type":"response.completed"}"#,
        r#"{"type":"response.failed","response":null}"#,
    ];
    for f in bad {
        let mut t = Translator::new(Mode::Sse, None);
        assert!(matches!(t.on_frame(f), Err(TranslateError::Malformed(_))), "{f}");
    }
}

#[test]
fn multi_line_frames_become_multiple_data_lines() {
    let f = "{\"type\":\"response.output_text.delta\",\n\"delta\":\"x\"}";
    let mut t = Translator::new(Mode::Sse, None);
    let out = t.on_frame(f).expect("valid").out;
    assert_eq!(
        text(&out),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\ndata: \"delta\":\"x\"}\n\n"
    );
}

#[test]
fn sse_error_event_shape_and_sequence() {
    let b = sse_error_event("upstream connection lost", Some("upstream_closed"));
    let s = text(&b);
    let data =
        s.strip_prefix("event: error\ndata: ").and_then(|d| d.strip_suffix("\n\n")).expect("sse framing");
    let v: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "upstream_closed");
    assert_eq!(v["message"], "upstream connection lost");
    assert!(v["param"].is_null());
    let mut t = Translator::new(Mode::Sse, None);
    t.on_frame(PASS_THROUGH[2]).expect("valid");
    let b = t.sse_error_event("lost", None);
    assert!(text(&b).contains("\"sequence_number\":5"));
}

#[test]
fn status_table() {
    assert_eq!(status_for_code(None), 500);
    assert_eq!(status_for_code(Some("insufficient_quota")), 429);
    assert_eq!(status_for_code(Some("context_length_exceeded")), 400);
}

/// A frame in the servers' layout (type, sequence number, then the Response
/// last) is read in place; the same frame in any other layout is parsed
/// whole. Both give the same outcome, sequence number and Response text.
#[test]
fn the_servers_layout_and_any_other_translate_alike() {
    let output = r#"[{"id":"m","type":"message","content":[{"type":"output_text","text":"a \"b\"\n"}]},{"id":"f","type":"function_call"}]"#;
    let r = resp("resp_1", "completed", "\"resp_up\"", output);
    let kinds = ["response.created", "response.completed", "response.incomplete", "response.failed"];
    for kind in kinds {
        let servers = frame(kind, 7, &r);
        let reordered = format!(r#"{{"response":{r},"sequence_number":7,"type":"{kind}"}}"#);
        // The Response is not last: the short path's parse refuses it.
        let trailing = format!(r#"{{"type":"{kind}","sequence_number":7,"response":{r},"x":1}}"#);
        assert!(leading(&servers).is_some() && leading(&reordered).is_none() && leading(&trailing).is_some());
        for client in [None, Some("resp_c")] {
            for mode in [Mode::Json, Mode::Sse] {
                let run = |f: &str| {
                    let mut t = Translator::new(mode, client.map(str::to_owned));
                    let step = t.on_frame(f).expect(f);
                    (format!("{:?}", step.end), t.last_sequence_number(), step.out)
                };
                let (a, b, c) = (run(&servers), run(&reordered), run(&trailing));
                assert_eq!((&a.0, a.1), (&b.0, b.1), "{kind} {mode:?} {client:?}");
                assert_eq!((&a.0, a.1), (&c.0, c.1), "{kind} {mode:?} {client:?}");
                if mode == Mode::Sse {
                    let want = client.map_or("null".to_owned(), |c| format!("\"{c}\""));
                    let sent = resp("resp_1", "completed", &want, output);
                    assert_eq!(text(&a.2), sse(kind, &frame(kind, 7, &sent)));
                }
            }
        }
    }
    // Malformed in the servers' layout: refused as the whole parse refuses it.
    for bad in [
        r#"{"type":"response.completed","sequence_number":7,"response":{"id":"r","output":[}}"#,
        r#"{"type":"response.completed","sequence_number":07,"response":{"id":"r","output":[]}}"#,
        "{\"type\":\"response.comp\nleted\",\"response\":{\"id\":\"r\",\"output\":[]}}",
    ] {
        let err = Translator::new(Mode::Json, None).on_frame(bad).expect_err(bad);
        assert!(matches!(err, TranslateError::Malformed(_)), "{bad}");
    }
}
