//! Test support for services in this repository: their configuration as the binaries load
//! it, from the repository's `config/`, with a test's variables on top.

pub mod collectors;
pub mod smtp;

use crate::{
    Loaded,
    config::{ConfigSource, Validate},
};
use serde::{Serialize, de::DeserializeOwned};
use std::path::PathBuf;

#[path = "test_ca.rs"]
mod test_ca;
pub use test_ca::{CertFiles, TestCa};

/// The repository's `config/` folder.
pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// Section `section` and the kernel's sections from the repository's `config/`, with
/// `vars` (`PLT_…` names) applied on top. Panics on a configuration error: a test's
/// configuration is part of the test.
pub fn config<S, K, V>(section: &'static str, vars: impl IntoIterator<Item = (K, V)>) -> Loaded<S>
where
    S: DeserializeOwned + Serialize + Validate,
    K: ToString,
    V: ToString,
{
    let source = ConfigSource {
        dir: config_dir(),
        vars: vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sections: Vec::new(),
    };
    match source.load(section) {
        Ok(cfg) => cfg,
        Err(e) => panic!("test configuration of {section}: {e}"),
    }
}
