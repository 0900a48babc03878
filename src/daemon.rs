//! placeholder
use std::path::Path;
/// Runs config mode.
pub fn run(_cli: &crate::cli::Cli, _cfg: &Path) -> i32 {
    0
}
