//! `cvlanctl`: the CloudVLAN command-line client, a shell over the cvlan-api REST API
//! (`/api/v1`, proto3 canonical JSON). It holds no logic the server also has: validation beyond
//! parsing the command line is left to the server, whose messages are shown as they are.
#![allow(clippy::print_stdout)]

mod cli;
mod client;
mod commands;
mod config;
mod output;
mod parse;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<commands::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
