//! Reading the structured options: `stop` sequences, `response_format`
//! (text, any JSON object, or a JSON schema kept as text for the grammar),
//! and `logit_bias`.

use serde_json::{Map, Value};

use nomyo_backend::BackendError;

use super::{invalid, OutputFormat, MAX_STOP_LEN, MAX_STOP_SEQUENCES};

pub(super) fn parse_stop(body: &Map<String, Value>) -> Result<Vec<String>, BackendError> {
    let list: Vec<&Value> = match body.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(_)) => vec![&body["stop"]],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            return Err(invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if list.len() > MAX_STOP_SEQUENCES {
        return Err(invalid(
            "stop",
            format!("`stop` may hold at most {MAX_STOP_SEQUENCES} sequences"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let s = v
            .as_str()
            .ok_or_else(|| invalid("stop", "`stop` must be a string or an array of strings"))?;
        if s.is_empty() || s.len() > MAX_STOP_LEN {
            return Err(invalid(
                "stop",
                format!("each `stop` sequence must be 1 to {MAX_STOP_LEN} bytes long"),
            ));
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

pub(super) fn parse_format(body: &Map<String, Value>) -> Result<OutputFormat, BackendError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    let kind = rf
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("response_format", "`response_format.type` must be a string"))?;
    match kind {
        "text" => Ok(OutputFormat::Text),
        "json_object" => Ok(OutputFormat::JsonObject),
        "json_schema" => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object() || s.is_boolean())
                .ok_or_else(|| {
                    invalid(
                        "response_format",
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    )
                })?;
            Ok(OutputFormat::JsonSchema(schema.to_string()))
        }
        _ => Err(invalid(
            "response_format",
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

pub(super) fn parse_logit_bias(body: &Map<String, Value>) -> Result<Vec<(i32, f32)>, BackendError> {
    let Some(map) = body.get("logit_bias").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let map = map
        .as_object()
        .ok_or_else(|| invalid("logit_bias", "`logit_bias` must map token ids to numbers"))?;
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let id: i32 = k
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid("logit_bias", "`logit_bias` keys must be token ids"))?;
        let bias = v
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                invalid(
                    "logit_bias",
                    "`logit_bias` values must be numbers from -100 to 100",
                )
            })?;
        out.push((id, bias as f32));
    }
    Ok(out)
}
