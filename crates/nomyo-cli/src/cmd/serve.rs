//! `nomyo serve`: the secure endpoint. (Being built: issue 3.)

use clap::Args as ClapArgs;

use crate::exit::{CliError, CliResult, Code};

/// Run the secure endpoint.
#[derive(ClapArgs, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> CliResult {
    Err(CliError::new(Code::Other, "serve is not available yet"))
}
