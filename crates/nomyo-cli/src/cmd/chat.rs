//! `nomyo chat`: one encrypted chat completion. (Being built: issue 4.)

use clap::Args as ClapArgs;

use crate::exit::{CliError, CliResult, Code};

/// One end-to-end encrypted chat completion.
#[derive(ClapArgs, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> CliResult {
    Err(CliError::new(Code::Other, "chat is not available yet"))
}
