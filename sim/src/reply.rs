//! What a request asks its answer to be — plain text, JSON (to a schema or not) or a call to
//! one of its tools — and the answers themselves, each a deterministic function of the text
//! [`text::generate`] would write for that request, so a plain request's answer never changes.

use crate::schema::{self, Words};
use crate::server::Parsed;
use crate::text::{self, fnv1a, SplitMix};
use serde_json::{json, Value};

/// The shape of the answer a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// Ordinary text.
    Text,
    /// A JSON text: an object valid against the schema, or `{"answer": TEXT}` without one.
    Json(Option<Value>),
    /// A call to the tool `name`, with arguments valid against its parameters' schema.
    Tool { name: String, schema: Value },
}

/// Which tool, if any, the request lets or makes the model call, in either API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    /// Never call a tool (OpenAI `"none"`, Anthropic `{"type": "none"}`).
    None,
    /// The model decides (the default when tools are given).
    Auto,
    /// Some tool must be called (OpenAI `"required"`, Anthropic `{"type": "any"}`).
    Required,
    /// This tool must be called.
    Named(String),
}

/// The reply to a request offering `tools` (name and parameters' schema, in order) under
/// `choice`: a call to the named tool or else the first one — except under `Auto` right after a
/// tool result, when the model answers as `otherwise` says (so a client's tool loop ends).
/// `Err` names a tool that `choice` asks for but `tools` lacks.
pub(crate) fn with_tools(
    tools: Vec<(String, Value)>,
    choice: ToolChoice,
    after_tool_result: bool,
    otherwise: Reply,
) -> Result<Reply, String> {
    let pick = match choice {
        ToolChoice::None => return Ok(otherwise),
        ToolChoice::Auto if after_tool_result => return Ok(otherwise),
        ToolChoice::Named(name) => match tools.into_iter().find(|(n, _)| *n == name) {
            Some(t) => t,
            None => return Err(name),
        },
        ToolChoice::Auto | ToolChoice::Required => match tools.into_iter().next() {
            Some(t) => t,
            None => return Ok(otherwise),
        },
    };
    Ok(Reply::Tool {
        name: pick.0,
        schema: pick.1,
    })
}

/// What an answer holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// Plain text.
    Text(String),
    /// A JSON text (JSON mode).
    Json(String),
    /// A tool call; `input` is always an object.
    Tool { name: String, input: Value },
}

/// One answer (one choice, for OpenAI's `n`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub body: Body,
    /// Output tokens: a word of plain text, four characters of JSON.
    pub output_tokens: u64,
    /// True when `max_tokens` cut a plain answer short (JSON and tool calls are never cut).
    pub truncated: bool,
}

/// Answer number `choice` (from 0) to `req`; choice 0 is the answer of a request without `n`.
pub(crate) fn answer(req: &Parsed, seed: u64, choice: u64) -> Answer {
    let gen = text::generate(&req.model, &req.texts, seed, req.max_tokens, choice);
    let structured = |body: Body, json: &str| Answer {
        output_tokens: json_tokens(json),
        body,
        truncated: false,
    };
    match &req.reply {
        Reply::Text => Answer {
            body: Body::Text(gen.text),
            output_tokens: gen.output_tokens,
            truncated: gen.truncated,
        },
        Reply::Json(schema) => {
            let v = match schema {
                Some(s) => schema::fill(s, &mut Words::new(&gen.text)),
                None => json!({ "answer": gen.text }),
            };
            let text = v.to_string();
            structured(Body::Json(text.clone()), &text)
        }
        Reply::Tool { name, schema } => {
            let input = match schema::fill(schema, &mut Words::new(&gen.text)) {
                v @ Value::Object(_) => v,
                _ => json!({}),
            };
            let args = input.to_string();
            structured(
                Body::Tool {
                    name: name.clone(),
                    input,
                },
                &args,
            )
        }
    }
}

impl Answer {
    /// The pieces a stream sends, one token each, which put together give the answer's text
    /// (or its tool call's arguments as JSON): words with their leading space, or four
    /// characters of JSON.
    pub(crate) fn deltas(&self) -> Vec<String> {
        match &self.body {
            Body::Text(t) => words_with_spaces(t),
            Body::Json(t) => json_pieces(t),
            Body::Tool { input, .. } => json_pieces(&input.to_string()),
        }
    }
}

/// An id for tool call `index` of the answer with id suffix `id`, unique like `id`.
pub(crate) fn tool_call_id(id: &str, index: usize) -> String {
    let i = (index as u64).to_le_bytes();
    text::hex_id(&mut SplitMix::new(fnv1a(&[id.as_bytes(), &i])))
}

fn json_tokens(json: &str) -> u64 {
    (json.chars().count() as u64).div_ceil(4).max(1)
}

fn words_with_spaces(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in t.match_indices(' ') {
        if i > start {
            out.push(t[start..i].to_string());
            start = i;
        }
    }
    out.push(t[start..].to_string());
    out
}

fn json_pieces(t: &str) -> Vec<String> {
    let chars: Vec<char> = t.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_put_together_give_the_text_one_token_each() {
        let a = Answer {
            body: Body::Text("the model answers".into()),
            output_tokens: 3,
            truncated: false,
        };
        assert_eq!(a.deltas(), ["the", " model", " answers"]);
        let j = Answer {
            body: Body::Json(r#"{"a":"é b"}"#.into()),
            output_tokens: 3,
            truncated: false,
        };
        assert_eq!(j.deltas().concat(), r#"{"a":"é b"}"#);
        assert_eq!(j.deltas().len() as u64, json_tokens(r#"{"a":"é b"}"#));
    }

    #[test]
    fn named_tool_must_exist_and_auto_after_a_tool_result_answers_in_text() {
        let tools = || vec![("a".to_string(), json!({})), ("b".to_string(), json!({}))];
        let call = |n: &str| Reply::Tool {
            name: n.into(),
            schema: json!({}),
        };
        assert_eq!(
            with_tools(tools(), ToolChoice::Auto, false, Reply::Text),
            Ok(call("a"))
        );
        assert_eq!(
            with_tools(tools(), ToolChoice::Named("b".into()), true, Reply::Text),
            Ok(call("b"))
        );
        assert_eq!(
            with_tools(tools(), ToolChoice::Named("c".into()), false, Reply::Text),
            Err("c".into())
        );
        assert_eq!(
            with_tools(tools(), ToolChoice::Auto, true, Reply::Text),
            Ok(Reply::Text)
        );
        assert_eq!(
            with_tools(tools(), ToolChoice::None, false, Reply::Text),
            Ok(Reply::Text)
        );
    }
}
