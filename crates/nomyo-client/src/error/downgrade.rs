//! What a refused downgrade was ([`Downgrade`]), why the server is known to
//! do better ([`KnownBy`]), and the message that says both.

use std::path::PathBuf;

/// What [`Error::Downgrade`](super::Error::Downgrade) refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Downgrade {
    /// A v2 key list without `Nomyo-Keys-Signature`.
    UnsignedKeyList,
    /// `/.well-known/hpke-keys` answered 404 (protocol auto would fall back
    /// to v1).
    NoV2Keys,
    /// A key list signed by an RSA key for a server on record only with
    /// unsigned v2 keys (the signing key would be trusted on first use).
    NewSigningKey,
}

/// Why a server is known to do better than its answer ([`Error::Downgrade`](super::Error::Downgrade)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KnownBy {
    /// A pin: the pinned server key must sign the v2 key list.
    Pin,
    /// This client verified a signed key list from the server earlier.
    SignedListSeen,
    /// The server's line in the known-servers file.
    Record {
        /// The file.
        file: PathBuf,
        /// The line (1-based).
        line: usize,
    },
}

pub(super) fn downgrade_message(origin: &str, refused: &Downgrade, known_by: &KnownBy) -> String {
    let what = match refused {
        Downgrade::UnsignedKeyList => "its v2 key list arrived WITHOUT the server's signature",
        Downgrade::NoV2Keys => {
            "it no longer publishes protocol v2 keys (/.well-known/hpke-keys answered 404)"
        }
        Downgrade::NewSigningKey => "its v2 key list is signed by an RSA key that is not on record",
    };
    let known = match (known_by, refused) {
        (KnownBy::Pin, Downgrade::NoV2Keys) => {
            "but its key is pinned, and protocol auto falls back to v1 (whose answers a middleman \
             who terminates TLS can read) only when asked to explicitly"
                .to_owned()
        }
        (KnownBy::Pin, _) => {
            "but its key is pinned, and a pinned server key must sign the v2 key list".to_owned()
        }
        (KnownBy::SignedListSeen, _) => {
            "but it sent a signed key list earlier in this session".to_owned()
        }
        (KnownBy::Record { file, line }, Downgrade::UnsignedKeyList) => format!(
            "but {}:{line} records this server with a key that signs its v2 key lists",
            file.display()
        ),
        (KnownBy::Record { file, line }, Downgrade::NoV2Keys) => format!(
            "but {}:{line} records that it speaks protocol v2; refusing to fall back to v1, \
             whose answers a middleman who terminates TLS can read",
            file.display()
        ),
        (KnownBy::Record { file, line }, Downgrade::NewSigningKey) => format!(
            "and {}:{line} records this server only with unsigned v2 keys, so that key would be trusted on first use",
            file.display()
        ),
    };
    let recover = match (known_by, refused) {
        (KnownBy::Pin, Downgrade::NoV2Keys) => " If this server speaks only protocol v1 (a NOMYO endpoint), choose it explicitly: --protocol v1.".to_owned(),
        (KnownBy::Pin, _) => " If this server really does not sign its keys, pin its key config instead (nomyo fingerprint --server URL lists it).".to_owned(),
        (KnownBy::SignedListSeen, _) => String::new(),
        (KnownBy::Record { file, line }, Downgrade::NoV2Keys) => format!(
            " If the operator has really turned v2 off, choose protocol v1 explicitly (--protocol v1), or delete line {line} of {} and try again.",
            file.display()
        ),
        (KnownBy::Record { file, line }, _) => format!(
            " If you have verified the change with the operator, delete line {line} of {} and try again.",
            file.display()
        ),
    };
    format!(
        "SECURITY CHECK FAILED for {origin}: {what}, {known}. Someone between you and the server may be \
         substituting keys or downgrading the protocol; nothing was sent.{recover}"
    )
}
