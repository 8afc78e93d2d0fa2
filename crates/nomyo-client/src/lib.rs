//! # nomyo-client
//!
//! The NOMYO client library (in progress).
