//! Where decrypted requests go: the `Backend` trait and its types, from the
//! `nomyo-backend` crate (a backend such as the embedded engine depends on
//! that crate alone, not on the server).

pub use nomyo_backend::*;
