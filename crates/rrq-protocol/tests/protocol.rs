//! Golden wire captures and property tests of the frame codec.

use bytes::BytesMut;
use proptest::prelude::*;
use rrq_protocol::*;

fn golden(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn decode_one(json: &str) -> Envelope {
    serde_json::from_str(json.trim()).expect("golden message parses")
}

#[test]
fn request_capture_round_trips_byte_for_byte() {
    let raw = golden("request.json");
    let msg = decode_one(&raw);
    let Envelope::Request(req) = &msg else { panic!("not a request: {msg:?}") };
    assert_eq!(req.protocol_version, "2");
    assert_eq!(req.function_name, "echo");
    assert_eq!(req.context.attempt, 1);
    assert_eq!(req.context.queue_name, "rrq:queue:default");
    assert_eq!(req.context.worker_id.as_deref(), Some("rrq_worker_12231_541cc4"));
    // The reference orchestrator's frame and ours are the same bytes.
    let ours = serde_json::to_string(&msg).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&ours).unwrap(), theirs);
    let frame = encode_frame_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(&frame[..4], &[0x00, 0x00, 0x01, 0xb6], "438-byte payload as captured");
}

#[test]
fn cancel_capture_matches_the_observed_header() {
    let raw = golden("cancel.json");
    let msg = decode_one(&raw);
    let Envelope::Cancel(c) = &msg else { panic!("not a cancel") };
    assert_eq!(c.job_id, "job-to");
    assert!(!c.hard_kill);
    let frame = encode_frame_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(&frame[..4], &[0x00, 0x00, 0x00, 0x8c]);
    assert_eq!(&frame[4..24], br#"{"type":"cancel","pa"#);
}

#[test]
fn python_runner_responses_decode() {
    let raw = golden("responses_python.jsonl");
    let outcomes: Vec<ExecutionOutcome> = raw
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match decode_one(l) {
            Envelope::Response(o) => o,
            other => panic!("not a response: {other:?}"),
        })
        .collect();
    assert_eq!(outcomes.len(), 6);
    assert_eq!(outcomes[0].status, OutcomeStatus::Success);
    assert_eq!(outcomes[1].error_kind(), Some(error_types::HANDLER_NOT_FOUND));
    assert_eq!(outcomes[2].error_message(), Some("boom: q"));
    assert_eq!(outcomes[3].status, OutcomeStatus::Retry);
    assert_eq!(outcomes[3].retry_after_seconds, Some(0.5));
    assert_eq!(outcomes[4].status, OutcomeStatus::Timeout);
    assert_eq!(outcomes[5].error_kind(), Some(error_types::CANCELLED));
}

#[test]
fn rust_runner_style_with_omitted_fields_decodes() {
    let msg = decode_one(r#"{"type":"response","payload":{"job_id":"j","request_id":"r","status":"success"}}"#);
    let Envelope::Response(o) = msg else { panic!() };
    assert_eq!(o.result, None);
    assert_eq!(o.error, None);
    // Unknown fields are ignored; payload before type is fine.
    let msg = decode_one(
        r#"{"payload":{"job_id":"j","status":"error","extra":1,"error":{"message":"m"}},"type":"response"}"#,
    );
    assert!(matches!(msg, Envelope::Response(ref o) if o.request_id.is_none()));
}

#[test]
fn bad_frames_give_clear_errors() {
    let d = FrameDecoder::new(1024);
    let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(d.decode(&mut empty), Err(FrameError::Empty)));
    let mut big = BytesMut::from(&[0u8, 0, 8, 0][..]);
    let err = d.decode(&mut big).unwrap_err();
    assert_eq!(err.to_string(), "frame of 2048 bytes exceeds the maximum of 1024 bytes");
    let mut junk = BytesMut::from(&b"\0\0\0\x03abc"[..]);
    assert!(matches!(d.decode(&mut junk), Err(FrameError::Invalid(_))));
    let mut unknown_type = BytesMut::new();
    let body = br#"{"type":"hello","payload":{}}"#;
    unknown_type.extend_from_slice(&(body.len() as u32).to_be_bytes());
    unknown_type.extend_from_slice(body);
    assert!(matches!(d.decode(&mut unknown_type), Err(FrameError::Invalid(_))));
    let mut cut = BytesMut::from(&b"\0\0\0\x10{\"ty"[..]);
    assert!(d.decode(&mut cut).unwrap().is_none());
    assert!(matches!(d.decode_eof(&mut cut), Err(FrameError::Truncated { have: 8, need: 20 })));
}

#[test]
fn oversize_outgoing_message_is_refused_and_leaves_buffer_intact() {
    let msg = Envelope::Cancel(CancelRequest::new("x".repeat(200), None));
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = encode_frame(&msg, &mut buf, 64).unwrap_err();
    assert!(matches!(err, FrameError::Oversize { max: 64, .. }));
    assert_eq!(&buf[..], b"keep");
}

fn arb_request() -> impl Strategy<Value = ExecutionRequest> {
    (
        "[a-z0-9-]{1,40}",
        "[a-z0-9-]{1,40}",
        "\\PC{0,20}",
        1u32..100,
        proptest::option::of("[0-9T:.Z-]{1,30}"),
        proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,12}", 0..4),
        proptest::option::of(proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,12}", 0..3)),
    )
        .prop_map(|(req, job, func, attempt, deadline, params, trace)| ExecutionRequest {
            protocol_version: PROTOCOL_VERSION.into(),
            request_id: req,
            job_id: job.clone(),
            function_name: func,
            params: params.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
            context: ExecutionContext {
                job_id: job,
                attempt,
                enqueue_time: "2026-11-28T00:00:00Z".into(),
                queue_name: "rrq:queue:default".into(),
                deadline,
                trace_context: trace,
                correlation_context: None,
                worker_id: Some("w".into()),
            },
        })
}

fn arb_outcome() -> impl Strategy<Value = ExecutionOutcome> {
    (
        "[a-z0-9-]{1,20}",
        proptest::option::of("[a-z0-9-]{1,20}"),
        prop_oneof![
            Just(OutcomeStatus::Success),
            Just(OutcomeStatus::Retry),
            Just(OutcomeStatus::Timeout),
            Just(OutcomeStatus::Error)
        ],
        proptest::option::of(any::<i64>()),
        proptest::option::of("\\PC{0,30}"),
        proptest::option::of(0.0f64..1e6),
    )
        .prop_map(|(job_id, request_id, status, result, msg, after)| ExecutionOutcome {
            job_id,
            request_id,
            status,
            result: result.map(serde_json::Value::from),
            error: msg.map(OutcomeError::message),
            retry_after_seconds: after,
        })
}

proptest! {
    #[test]
    fn frames_round_trip(reqs in proptest::collection::vec(arb_request(), 1..4), outs in proptest::collection::vec(arb_outcome(), 0..4), split in 0usize..64) {
        let messages: Vec<Envelope> = reqs.into_iter().map(Envelope::Request)
            .chain(outs.into_iter().map(Envelope::Response)).collect();
        let mut wire = BytesMut::new();
        for m in &messages { encode_frame(m, &mut wire, DEFAULT_MAX_FRAME_BYTES).unwrap(); }
        // Feed the bytes in two arbitrary pieces, as TCP may deliver them.
        let split = split.min(wire.len());
        let tail = wire.split_off(split);
        let d = FrameDecoder::default();
        let mut buf = wire;
        let mut got = Vec::new();
        while let Some(m) = d.decode(&mut buf).unwrap() { got.push(m); }
        buf.extend_from_slice(&tail);
        while let Some(m) = d.decode_eof(&mut buf).unwrap() { got.push(m); }
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = FrameDecoder::new(256);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = d.decode_eof(&mut buf);
    }

    #[test]
    fn arbitrary_json_payloads_never_panic(body in "\\PC{0,200}") {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len().max(1) as u32).to_be_bytes());
        buf.extend_from_slice(body.as_bytes());
        let _ = d.decode(&mut buf);
    }
}

#[test]
fn the_default_limit_is_16_mib_judged_from_the_header_alone() {
    assert_eq!(DEFAULT_MAX_FRAME_BYTES, 16 * 1024 * 1024);
    let d = FrameDecoder::default();
    assert_eq!(d.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
    // Exactly 16 MiB announced: the decoder waits for the rest.
    let mut at_limit = BytesMut::from(&(16_777_216_u32).to_be_bytes()[..]);
    assert!(d.decode(&mut at_limit).unwrap().is_none());
    // One byte more: refused from the 4 header bytes, without any payload.
    let mut over = BytesMut::from(&(16_777_217_u32).to_be_bytes()[..]);
    assert!(matches!(d.decode(&mut over), Err(FrameError::Oversize { .. })), "16 MiB + 1 is refused");
}

fn frame_of(json: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&u32::try_from(json.len()).unwrap().to_be_bytes());
    buf.extend_from_slice(json.as_bytes());
    buf
}

#[test]
fn requests_with_unknown_members_decode() {
    let json = r#"{"type":"request","extra":1,"payload":{"protocol_version":"2","request_id":"r","job_id":"j",
        "function_name":"f","params":{},"future_field":[1,2],"context":{"job_id":"j","attempt":1,
        "enqueue_time":"2026-12-04T20:00:00Z","queue_name":"rrq:queue:default","deadline":null,
        "trace_context":null,"correlation_context":null,"worker_id":null,"priority_hint":"high"}}}"#;
    let Some(Envelope::Request(req)) = FrameDecoder::default().decode(&mut frame_of(json)).unwrap() else {
        panic!("a request")
    };
    assert_eq!((req.request_id.as_str(), req.context.queue_name.as_str()), ("r", "rrq:queue:default"));
    let cancel = r#"{"type":"cancel","payload":{"protocol_version":"2","job_id":"j","hard_kill":false,"why":"x"}}"#;
    assert!(matches!(FrameDecoder::default().decode(&mut frame_of(cancel)).unwrap(), Some(Envelope::Cancel(_))));
}

#[test]
fn requests_decode_without_optional_fields_and_not_without_required_ones() {
    let full: serde_json::Value = serde_json::from_str(
        r#"{"type":"request","payload":{"protocol_version":"2","request_id":"r","job_id":"j","function_name":"f",
        "params":{"a":1},"context":{"job_id":"j","attempt":3,"enqueue_time":"2026-12-04T20:00:00Z",
        "queue_name":"q","deadline":"2026-12-04T20:05:00Z","trace_context":{"traceparent":"t"},
        "correlation_context":{"k":"v"},"worker_id":"w"}}}"#,
    )
    .unwrap();
    let decode = |v: &serde_json::Value| FrameDecoder::default().decode(&mut frame_of(&v.to_string()));
    // Optional: absent gives the documented default.
    let mut minimal = full.clone();
    for key in ["protocol_version", "params"] {
        minimal["payload"].as_object_mut().unwrap().remove(key);
    }
    for key in ["deadline", "trace_context", "correlation_context", "worker_id"] {
        minimal["payload"]["context"].as_object_mut().unwrap().remove(key);
    }
    let Ok(Some(Envelope::Request(req))) = decode(&minimal) else { panic!("the minimal request decodes") };
    assert_eq!(req.protocol_version, "2", "a missing protocol_version is \"2\"");
    assert!(req.params.is_empty(), "missing params are {{}}");
    assert_eq!((req.context.deadline, req.context.trace_context, req.context.worker_id), (None, None, None));
    // Required: absent is an error.
    for (parent, key) in [
        (None, "payload"),
        (Some("payload"), "request_id"),
        (Some("payload"), "job_id"),
        (Some("payload"), "function_name"),
        (Some("payload"), "context"),
    ] {
        let mut broken = full.clone();
        let holder = match parent {
            None => &mut broken,
            Some(p) => &mut broken[p],
        };
        holder.as_object_mut().unwrap().remove(key);
        assert!(matches!(decode(&broken), Err(FrameError::Invalid(_))), "without {key}");
    }
    for key in ["job_id", "attempt", "enqueue_time", "queue_name"] {
        let mut broken = full.clone();
        broken["payload"]["context"].as_object_mut().unwrap().remove(key);
        assert!(matches!(decode(&broken), Err(FrameError::Invalid(_))), "without context.{key}");
    }
}

#[test]
fn an_error_object_without_a_message_is_refused() {
    let with = r#"{"type":"response","payload":{"job_id":"j","request_id":"r","status":"error","error":{"message":"m","type":null}}}"#;
    assert!(matches!(FrameDecoder::default().decode(&mut frame_of(with)), Ok(Some(Envelope::Response(_)))));
    let without =
        r#"{"type":"response","payload":{"job_id":"j","request_id":"r","status":"error","error":{"type":"x"}}}"#;
    assert!(matches!(FrameDecoder::default().decode(&mut frame_of(without)), Err(FrameError::Invalid(_))));
}
