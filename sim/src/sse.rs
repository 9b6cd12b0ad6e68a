//! Server-sent event streams (`stream: true`): the dialect writes the frames, this module sends
//! them paced like a model generating — each frame carrying tokens waits its share of
//! `per_output_token_ms` — and keeps the request's concurrency slot until the stream ends, so
//! a stream counts as in flight for as long as a client reads it.

use crate::limiter::Slot;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// One frame of the stream, and the output tokens it carries.
pub(crate) struct Frame {
    text: String,
    tokens: u64,
}

impl Frame {
    /// `data: JSON` (OpenAI's frames carry no event name).
    pub(crate) fn data(v: &Value) -> Frame {
        Frame {
            text: format!("data: {v}\n\n"),
            tokens: 0,
        }
    }

    /// `event: NAME` and `data: JSON` (Anthropic names every event after its `type`).
    pub(crate) fn event(name: &str, v: &Value) -> Frame {
        Frame {
            text: format!("event: {name}\ndata: {v}\n\n"),
            tokens: 0,
        }
    }

    /// OpenAI's end of stream.
    pub(crate) fn done() -> Frame {
        Frame {
            text: "data: [DONE]\n\n".into(),
            tokens: 0,
        }
    }

    /// This frame, carrying `n` output tokens.
    pub(crate) fn tokens(mut self, n: u64) -> Frame {
        self.tokens = n;
        self
    }
}

/// A 200 `text/event-stream` of `frames`; frame k is sent `per_token` times the tokens of
/// frames 0..=k after the stream starts. `slot` is released when the stream ends or the client
/// goes away.
pub(crate) fn response(frames: Vec<Frame>, per_token: Duration, slot: Slot) -> Response {
    struct Pacer {
        frames: std::vec::IntoIter<Frame>,
        start: Instant,
        tokens: u64,
        per_token: Duration,
        _slot: Slot,
    }
    let pacer = Pacer {
        frames: frames.into_iter(),
        start: Instant::now(),
        tokens: 0,
        per_token,
        _slot: slot,
    };
    let stream = futures::stream::unfold(pacer, |mut p| async move {
        let f = p.frames.next()?;
        p.tokens += f.tokens;
        if !p.per_token.is_zero() && f.tokens > 0 {
            let at = p.start + p.per_token.mul_f64(p.tokens as f64);
            tokio::time::sleep_until(at).await;
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(f.text)), p))
    });
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
