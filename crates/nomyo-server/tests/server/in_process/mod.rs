//! The router driven in-process with `tower::ServiceExt::oneshot`: the v1
//! round trip and `_metadata`, policy (401/403/404/409), limits
//! (413/429/503/504), backends and upstreams, the ops routes, rotation.

#![allow(clippy::unwrap_used)]

mod backends;
mod exchange;
mod limits;
mod ops;
mod policy;
