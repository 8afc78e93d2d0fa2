//! Routing: which models each tier allows and which backends serve them,
//! taking turns among the ready ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nomyo_core::SecurityTier;

use crate::backend::Backend;
use crate::error::ApiError;

/// A set of model names, or every name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSet {
    /// Any model (`"*"` in the config; an upstream with an unknown list).
    Any,
    /// Exactly these.
    Only(BTreeSet<String>),
}

impl ModelSet {
    /// From config names: `"*"` anywhere means every model.
    pub fn from_names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        let set: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if set.contains("*") {
            ModelSet::Any
        } else {
            ModelSet::Only(set)
        }
    }

    /// Whether `model` is in the set.
    pub fn contains(&self, model: &str) -> bool {
        match self {
            ModelSet::Any => true,
            ModelSet::Only(s) => s.contains(model),
        }
    }
}

/// A backend as the router knows it.
pub struct NamedBackend {
    /// Name from the config (`upstream`, `llama`, `embedded`...).
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Models it serves (read once from the config or [`Backend::models`]).
    pub models: ModelSet,
}

impl std::fmt::Debug for NamedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedBackend")
            .field("name", &self.name)
            .field("models", &self.models)
            .finish()
    }
}

/// What one tier allows.
#[derive(Clone, Debug)]
pub struct TierRule {
    /// Names of the backends that may serve this tier (empty = all backends).
    pub backends: Vec<String>,
    /// Models this tier allows.
    pub models: ModelSet,
}

impl TierRule {
    /// Every backend, every model.
    pub fn any() -> Self {
        Self {
            backends: Vec::new(),
            models: ModelSet::Any,
        }
    }
}

/// The resolved tier for a request and the backend that serves it.
#[derive(Clone)]
pub struct Route {
    /// Tier actually applied.
    pub tier: SecurityTier,
    /// Backend chosen.
    pub backend: Arc<NamedBackend>,
}

struct CompiledTier {
    backends: Vec<Arc<NamedBackend>>,
    models: ModelSet,
    next: AtomicUsize,
}

/// The routing table: tiers → (allowed models, backends).
pub struct Routing {
    backends: Vec<Arc<NamedBackend>>,
    tiers: BTreeMap<SecurityTier, CompiledTier>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("backends", &self.backends)
            .field("tiers", &self.tiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Routing {
    /// Builds the table. `tiers == None` enables every tier for every backend
    /// and model; otherwise tiers absent from the map are disabled (403).
    pub fn new(
        backends: Vec<NamedBackend>,
        tiers: Option<BTreeMap<SecurityTier, TierRule>>,
    ) -> Result<Self, String> {
        if backends.is_empty() {
            return Err("no inference backend configured".into());
        }
        let mut seen = BTreeSet::new();
        for b in &backends {
            if !seen.insert(b.name.clone()) {
                return Err(format!("two backends are named '{}'", b.name));
            }
        }
        let backends: Vec<Arc<NamedBackend>> = backends.into_iter().map(Arc::new).collect();
        let rules = tiers.unwrap_or_else(|| {
            SecurityTier::ALL
                .into_iter()
                .map(|t| (t, TierRule::any()))
                .collect()
        });
        let mut compiled = BTreeMap::new();
        for (tier, rule) in rules {
            let chosen = if rule.backends.is_empty() {
                backends.clone()
            } else {
                let mut v = Vec::new();
                for name in &rule.backends {
                    let b = backends.iter().find(|b| &b.name == name).ok_or_else(|| {
                        format!("tier '{tier}' names backend '{name}', which is not configured")
                    })?;
                    v.push(Arc::clone(b));
                }
                v
            };
            compiled.insert(
                tier,
                CompiledTier {
                    backends: chosen,
                    models: rule.models,
                    next: AtomicUsize::new(0),
                },
            );
        }
        Ok(Self {
            backends,
            tiers: compiled,
        })
    }

    /// All backends.
    pub fn backends(&self) -> &[Arc<NamedBackend>] {
        &self.backends
    }

    /// Whether a model is served by some backend (a backend with an unknown
    /// list serves every name).
    pub fn is_known(&self, model: &str) -> bool {
        self.backends.iter().any(|b| b.models.contains(model))
    }

    fn tier_serves(&self, tier: SecurityTier, model: &str) -> bool {
        self.tiers.get(&tier).is_some_and(|t| {
            t.models.contains(model) && t.backends.iter().any(|b| b.models.contains(model))
        })
    }

    /// Picks the tier and backend for `model`.
    ///
    /// - no backend serves `model` → 404 `UnknownModel`;
    /// - with a requested tier: the tier must allow the model and have a
    ///   backend serving it, else 403 `ModelForbidden`;
    /// - without one: the lowest tier that allows the model (the reference
    ///   client's "server default based on the model"), else 403;
    /// - the backends of that tier that serve the model take turns; those not
    ///   ready are skipped; none ready → 503.
    pub fn route(&self, model: &str, requested: Option<SecurityTier>) -> Result<Route, ApiError> {
        if !self.is_known(model) {
            return Err(ApiError::UnknownModel);
        }
        let tier = match requested {
            Some(t) if self.tier_serves(t, model) => t,
            Some(_) => return Err(ApiError::ModelForbidden),
            None => SecurityTier::ALL
                .into_iter()
                .find(|t| self.tier_serves(*t, model))
                .ok_or(ApiError::ModelForbidden)?,
        };
        let compiled = self.tiers.get(&tier).ok_or(ApiError::ModelForbidden)?;
        let candidates: Vec<&Arc<NamedBackend>> = compiled
            .backends
            .iter()
            .filter(|b| b.models.contains(model))
            .collect();
        let start = compiled.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..candidates.len() {
            let b = candidates[(start + i) % candidates.len()];
            if b.backend.is_ready() {
                return Ok(Route {
                    tier,
                    backend: Arc::clone(b),
                });
            }
        }
        Err(ApiError::BackendUnavailable {
            retry_after: Some(Duration::from_secs(5)),
        })
    }

    /// Model ids a caller may use, each with the tiers that allow it (for
    /// `GET /v1/models`). Only concrete names are listed: a backend that
    /// accepts any name contributes names only where a tier lists them.
    pub fn listing(&self, only: Option<SecurityTier>) -> BTreeMap<String, BTreeSet<SecurityTier>> {
        let mut names = BTreeSet::new();
        for b in &self.backends {
            if let ModelSet::Only(s) = &b.models {
                names.extend(s.iter().cloned());
            }
        }
        for t in self.tiers.values() {
            if let ModelSet::Only(s) = &t.models {
                names.extend(s.iter().cloned());
            }
        }
        let mut out = BTreeMap::new();
        for name in names {
            let tiers: BTreeSet<SecurityTier> = SecurityTier::ALL
                .into_iter()
                .filter(|t| only.is_none_or(|o| o == *t))
                .filter(|t| self.tier_serves(*t, &name))
                .collect();
            if !tiers.is_empty() {
                out.insert(name, tiers);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, ChatRequest};
    use serde_json::Value;

    struct Dummy(bool);
    #[async_trait::async_trait]
    impl Backend for Dummy {
        fn name(&self) -> &str {
            "dummy"
        }
        fn models(&self) -> Vec<String> {
            vec![]
        }
        fn is_ready(&self) -> bool {
            self.0
        }
        async fn chat(&self, _r: ChatRequest) -> Result<Value, BackendError> {
            Err(BackendError::Timeout)
        }
    }

    fn nb(name: &str, models: &[&str], ready: bool) -> NamedBackend {
        NamedBackend {
            name: name.into(),
            backend: Arc::new(Dummy(ready)),
            models: ModelSet::from_names(models.iter().copied()),
        }
    }

    #[test]
    fn routing_rules() {
        let mut tiers = BTreeMap::new();
        tiers.insert(
            SecurityTier::Standard,
            TierRule {
                backends: vec![],
                models: ModelSet::Any,
            },
        );
        tiers.insert(
            SecurityTier::High,
            TierRule {
                backends: vec!["b".into()],
                models: ModelSet::from_names(["small"]),
            },
        );
        let r = Routing::new(
            vec![nb("a", &["small", "big"], true), nb("b", &["small"], true)],
            Some(tiers),
        )
        .unwrap();
        assert!(matches!(r.route("nope", None), Err(ApiError::UnknownModel)));
        assert_eq!(r.route("big", None).unwrap().tier, SecurityTier::Standard);
        assert!(matches!(
            r.route("big", Some(SecurityTier::High)),
            Err(ApiError::ModelForbidden)
        ));
        assert!(matches!(
            r.route("small", Some(SecurityTier::Maximum)),
            Err(ApiError::ModelForbidden)
        ));
        let route = r.route("small", Some(SecurityTier::High)).unwrap();
        assert_eq!(route.backend.name, "b");
        let l = r.listing(None);
        assert_eq!(l["small"].len(), 2);
        assert_eq!(
            l["big"].iter().copied().collect::<Vec<_>>(),
            vec![SecurityTier::Standard]
        );
        assert!(!r.listing(Some(SecurityTier::High)).contains_key("big"));
    }

    #[test]
    fn not_ready_backends_give_503_and_bad_names_are_refused() {
        let r = Routing::new(vec![nb("a", &["m"], false)], None).unwrap();
        assert!(matches!(
            r.route("m", None),
            Err(ApiError::BackendUnavailable { .. })
        ));
        let mut tiers = BTreeMap::new();
        tiers.insert(
            SecurityTier::High,
            TierRule {
                backends: vec!["missing".into()],
                models: ModelSet::Any,
            },
        );
        assert!(Routing::new(vec![nb("a", &["m"], true)], Some(tiers)).is_err());
        assert!(Routing::new(vec![nb("a", &[], true), nb("a", &[], true)], None).is_err());
    }
}
