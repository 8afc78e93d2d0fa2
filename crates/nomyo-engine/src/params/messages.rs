//! Reading `messages`: roles checked (`developer` read as `system`), text
//! content parts joined, tool calls and non-text parts refused.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use nomyo_backend::BackendError;

use super::{invalid, unsupported, Message};

fn parse_content(index: usize, value: Option<&Value>) -> Result<Zeroizing<String>, BackendError> {
    match value {
        None | Some(Value::Null) => Ok(Zeroizing::new(String::new())),
        Some(Value::String(s)) => Ok(Zeroizing::new(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = Zeroizing::new(String::new());
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some("text"), None) => {
                        return Err(invalid("messages", format!(
                            "messages[{index}]: a text content part needs a string `text`"
                        )))
                    }
                    _ => {
                        return Err(unsupported("messages", format!(
                            "messages[{index}]: only text content parts are supported by the embedded model"
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            "messages",
            format!("messages[{index}].content must be a string or an array of text parts"),
        )),
    }
}

pub(super) fn parse_messages(body: &Map<String, Value>) -> Result<Vec<Message>, BackendError> {
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "`messages` must be an array of messages"))?;
    if list.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| invalid("messages", format!("messages[{i}] must be an object")))?;
        let role = obj
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("messages", format!("messages[{i}].role must be a string")))?;
        let role = match role {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            _ => {
                return Err(invalid(
                    "messages",
                    format!(
                    "messages[{i}].role must be one of system, developer, user, assistant, tool"
                ),
                ))
            }
        };
        if obj.get("tool_calls").is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                "messages",
                "tool calls are not supported by the embedded model",
            ));
        }
        out.push(Message {
            role: role.to_owned(),
            content: parse_content(i, obj.get("content"))?,
        });
    }
    Ok(out)
}
