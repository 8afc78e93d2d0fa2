//! # nomyo-server
//!
//! The secure endpoint as a library: `app(state) -> Router`, its policy and
//! key store, and the [`backend::Backend`] trait that inference backends
//! (an OpenAI-compatible upstream, the embedded engine) implement.

pub mod backend;
