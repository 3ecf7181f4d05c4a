//! What every plt binary does around its own commands, so that each `main` says only what
//! is its own:
//!
//! - [`Binary::config`]: loads the configuration (defaults, `<env>.yaml`, `PLT_` variables,
//!   `*_FILE` secrets) and the binary's own checks; a bad key or value is printed as
//!   `<binary>: <key>: <reason>` and the process exits 2 before doing anything.
//! - [`ConfigCommand`]: `<binary> config print`, the effective configuration with secrets
//!   redacted.
//! - [`Binary::exit`]: a command that failed is logged (when logging is set up) and printed
//!   with its causes, and the process exits 1.

use crate::{
    ConfigError, Loaded,
    config::{ConfigSource, Validate},
};
use serde::{Serialize, de::DeserializeOwned};
use std::{fmt::Display, process::ExitCode};

/// Exit code of a configuration error.
pub const EXIT_CONFIG: u8 = 2;

/// `config` subcommands, shared by every binary.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Print,
}

impl ConfigCommand {
    pub fn run<S: Serialize>(self, cfg: &Loaded<S>) -> ExitCode {
        match self {
            ConfigCommand::Print => print!("{}", cfg.to_yaml()),
        }
        ExitCode::SUCCESS
    }
}

/// A binary, by the name it reports itself with.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    name: &'static str,
}

impl Binary {
    pub const fn new(name: &'static str) -> Self {
        Self { name }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Loads section `section` and the kernel's sections from the environment's
    /// configuration, then runs `check` (the shared sections this process uses, rules that
    /// depend on the environment). `Err` is the exit code, after the error was printed.
    pub fn config<S>(
        &self,
        section: &'static str,
        check: impl FnOnce(&Loaded<S>) -> Result<(), ConfigError>,
    ) -> Result<Loaded<S>, ExitCode>
    where
        S: DeserializeOwned + Serialize + Validate,
    {
        ConfigSource::from_env()
            .load(section)
            .and_then(|cfg| check(&cfg).map(|()| cfg))
            .map_err(|e| {
                eprintln!("{}: {e}", self.name);
                ExitCode::from(EXIT_CONFIG)
            })
    }

    /// The exit code of a command's outcome: a failure is logged and printed with its
    /// causes (`{:#}`), exit code 1.
    pub fn exit<E: Display>(&self, outcome: Result<ExitCode, E>) -> ExitCode {
        match outcome {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{} failed", self.name);
                eprintln!("{}: {e:#}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}
