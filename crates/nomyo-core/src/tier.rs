//! Security tiers (docs/PROTOCOL.md §9, `X-Security-Tier`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{echo, Error};

/// Request header naming the tier, in both protocols (lower case, as HTTP/2
/// sends header names).
pub const HEADER_SECURITY_TIER: &str = "x-security-tier";

/// The three security tiers the seed defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityTier {
    /// General secure inference.
    Standard,
    /// Sensitive business data.
    High,
    /// Maximum isolation (PHI, classified data).
    Maximum,
}

impl SecurityTier {
    /// All tiers, lowest first.
    pub const ALL: [SecurityTier; 3] = [Self::Standard, Self::High, Self::Maximum];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::High => "high",
            Self::Maximum => "maximum",
        }
    }
}

impl fmt::Display for SecurityTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecurityTier {
    type Err = Error;
    /// Exact, case-sensitive names, as the reference client checks them.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "standard" => Ok(Self::Standard),
            "high" => Ok(Self::High),
            "maximum" => Ok(Self::Maximum),
            other => Err(Error::BadTier(echo(other))),
        }
    }
}
