//! The client against a scriptable v1 server double over real sockets. What
//! the tests share: a client of the double, the request they send, and the
//! client key a request carried.
#![allow(clippy::unwrap_used)]

mod client_keys;
mod exchange;
mod failures;
mod trust;
mod urls;

use crate::common::{self, local_client, Double};

use nomyo_client::{ChatMessage, ChatRequest, ClientBuilder};
use nomyo_core::v1;

fn builder(d: &Double) -> ClientBuilder {
    local_client(&d.url())
}

fn hello() -> ChatRequest {
    ChatRequest::new("test-model").message(ChatMessage::user("hello there"))
}

fn header_key(r: &common::Recorded) -> nomyo_core::PublicKey {
    v1::decode_public_key_header(r.headers["x-public-key"].to_str().unwrap()).unwrap()
}
