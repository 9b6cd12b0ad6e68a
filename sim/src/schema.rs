//! JSON values that satisfy a JSON schema, for `json_schema` answers and tool-call arguments.
//! Deliberately simple and deterministic: an object gets its `required` properties only, an
//! array one item (or `minItems`), a string a few words of the generated text, a number 1
//! (clamped to `minimum`/`maximum`), a boolean `true`; `const`, `enum`, local `$ref`s and the
//! first non-null alternative of `anyOf`/`oneOf`/`allOf` are followed, which covers the schemas
//! Pydantic and zod emit.

use serde_json::{Map, Value};

/// Nesting beyond this (a recursive `$ref`) is answered with `null`.
const MAX_DEPTH: usize = 16;

/// Arrays get at most this many items, whatever `minItems` says.
const MAX_ITEMS: u64 = 4;

/// Words for string values, handed out three at a time and cycling, so a string's value is a
/// function of the prompt like the text of a plain answer.
pub(crate) struct Words<'a> {
    words: Vec<&'a str>,
    next: usize,
}

impl<'a> Words<'a> {
    /// The words of `text` (a generated answer).
    pub(crate) fn new(text: &'a str) -> Words<'a> {
        Words {
            words: text.split_whitespace().collect(),
            next: 0,
        }
    }

    fn take(&mut self, n: usize) -> String {
        if self.words.is_empty() {
            return "text".into();
        }
        let out: Vec<&str> = (0..n)
            .map(|k| self.words[(self.next + k) % self.words.len()])
            .collect();
        self.next = (self.next + n) % self.words.len();
        out.join(" ")
    }
}

/// A value valid against `schema` (`$ref`s resolve against `schema` itself).
pub(crate) fn fill(schema: &Value, words: &mut Words) -> Value {
    value(schema, schema, words, 0)
}

fn value(s: &Value, root: &Value, words: &mut Words, depth: usize) -> Value {
    let Some(obj) = s.as_object() else {
        return Value::Null;
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        return match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => value(target, root, words, depth + 1),
            None => Value::Null,
        };
    }
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = obj.get(key).and_then(Value::as_array) {
            let pick = alts.iter().find(|a| a.get("type") != Some(&"null".into()));
            if let Some(alt) = pick.or(alts.first()) {
                return value(alt, root, words, depth + 1);
            }
        }
    }
    match type_of(obj) {
        "object" => {
            let props = obj.get("properties").and_then(Value::as_object);
            let mut out = Map::new();
            let required = obj.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let sub = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                // A property without a schema accepts anything; a string is as good as any.
                let v = if sub.is_null() {
                    Value::String(words.take(3))
                } else {
                    value(sub, root, words, depth + 1)
                };
                out.insert(name.to_string(), v);
            }
            Value::Object(out)
        }
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = obj
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            let n = min.min(max).min(MAX_ITEMS);
            let items = obj.get("items");
            (0..n)
                .map(|_| match items {
                    Some(i) if i.is_object() => value(i, root, words, depth + 1),
                    _ => Value::String(words.take(3)),
                })
                .collect()
        }
        "string" => Value::String(string(obj, words)),
        "integer" => Value::from(number(obj).round() as i64),
        "number" => Value::from(number(obj)),
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

/// The schema's type: the first non-null one of a list, else guessed from its keywords.
fn type_of(obj: &Map<String, Value>) -> &str {
    match obj.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("items") => "array",
        _ => "string",
    }
}

fn string(obj: &Map<String, Value>, words: &mut Words) -> String {
    let s = match obj.get("format").and_then(Value::as_str) {
        Some("date-time") => "2025-01-01T00:00:00Z".to_string(),
        Some("date") => "2025-01-01".to_string(),
        Some("time") => "00:00:00".to_string(),
        Some("email") => "sim@example.com".to_string(),
        Some("uri" | "url") => "https://example.com/".to_string(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_string(),
        _ => words.take(3),
    };
    match obj.get("maxLength").and_then(Value::as_u64) {
        Some(max) => s.chars().take(max as usize).collect(),
        None => s,
    }
}

fn number(obj: &Map<String, Value>) -> f64 {
    let mut x = 1.0;
    if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
        x = f64::max(x, min);
    }
    if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
        x = f64::min(x, max);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_gets_its_required_properties_with_values_of_their_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"}, "days": {"type": "integer", "minimum": 3},
                "temp": {"type": "number"}, "metric": {"type": "boolean"},
                "unit": {"enum": ["c", "f"]}, "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": ["string", "null"]}, "optional": {"type": "string"}
            },
            "required": ["city", "days", "temp", "metric", "unit", "tags", "note"]
        });
        let v = fill(&schema, &mut Words::new("one two three four"));
        assert_eq!(
            v,
            json!({"city": "one two three", "days": 3, "temp": 1.0, "metric": true, "unit": "c",
                   "tags": ["four one two"], "note": "three four one"})
        );
    }

    #[test]
    fn refs_and_optional_alternatives_are_followed_and_recursion_ends() {
        let schema = json!({
            "$defs": {
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}},
                         "required": ["next"]},
                "Point": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
            },
            "type": "object",
            "properties": {
                "p": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Point"}]},
                "n": {"$ref": "#/$defs/Node"}
            },
            "required": ["p", "n"]
        });
        let v = fill(&schema, &mut Words::new("w"));
        assert_eq!(v["p"], json!({"x": 1}));
        let mut node = &v["n"];
        while node.is_object() {
            node = &node["next"];
        }
        assert!(node.is_null());
    }
}
