//! `GET /v1/models`: OpenAI's model list, with the tiers that allow each
//! model (a nomyo-rs extension).

use serde::{Deserialize, Serialize};

use super::Extra;

/// `GET` path of the model list (docs/CLI.md §11.1).
pub const MODELS_PATH: &str = "/v1/models";
/// `"object"` of a model entry.
pub const MODEL_OBJECT: &str = "model";
/// `"object"` of the list.
pub const LIST_OBJECT: &str = "list";
/// `"owned_by"` of the models a nomyo-rs server lists.
pub const OWNED_BY: &str = "nomyo";

fn model_object() -> String {
    MODEL_OBJECT.to_owned()
}

fn list_object() -> String {
    LIST_OBJECT.to_owned()
}

fn owned_by() -> String {
    OWNED_BY.to_owned()
}

/// One entry of `GET /v1/models`. A list from an endpoint that leaves out
/// `object`, `created` or `owned_by` reads with OpenAI's defaults
/// (`model`, 0, `nomyo`), and is written back with them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The model id to put in a chat request's `model`.
    pub id: String,
    /// Always `model`.
    #[serde(default = "model_object")]
    pub object: String,
    /// Unix seconds (0 when the endpoint does not say).
    #[serde(default)]
    pub created: u64,
    /// Who owns it.
    #[serde(default = "owned_by")]
    pub owned_by: String,
    /// The tiers that allow it (a nomyo-rs server extension; empty from
    /// other endpoints, and then not written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_tiers: Vec<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Model {
    /// An entry for `id`, allowed on `security_tiers`.
    pub fn new(id: impl Into<String>, security_tiers: Vec<String>) -> Self {
        Self {
            id: id.into(),
            object: model_object(),
            created: 0,
            owned_by: owned_by(),
            security_tiers,
            extra: Extra::new(),
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new(String::new(), Vec::new())
    }
}

/// The answer of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    #[serde(default = "list_object")]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// A list of `data`.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: list_object(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_with_openai_defaults_and_write_openai_shape() {
        let list: ModelList = serde_json::from_str(
            r#"{"data":[{"id":"a","security_tiers":["high"],"context_length":8192},{"id":"b","object":"model","created":7,"owned_by":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(list.object, "list");
        let a = &list.data[0];
        assert_eq!(
            (a.object.as_str(), a.created, a.owned_by.as_str()),
            ("model", 0, "nomyo")
        );
        assert_eq!(a.security_tiers, ["high"]);
        assert_eq!(a.extra["context_length"], 8192);
        assert_eq!(
            (list.data[1].created, list.data[1].owned_by.as_str()),
            (7, "x")
        );
        let written = serde_json::to_value(&list).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"object": "list", "data": [
                {"id": "a", "object": "model", "created": 0, "owned_by": "nomyo",
                 "security_tiers": ["high"], "context_length": 8192},
                {"id": "b", "object": "model", "created": 7, "owned_by": "x"}]})
        );
        assert_eq!(
            serde_json::to_value(ModelList::new(vec![Model::new(
                "m",
                vec!["standard".into()]
            )]))
            .unwrap(),
            serde_json::json!({"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                "owned_by": "nomyo", "security_tiers": ["standard"]}]})
        );
    }
}
