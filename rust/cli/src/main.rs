//! The `s3dlio` binary: a thin shell around [`s3dlio_cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // args_os: a non-UTF-8 argument must become an error message, not a panic.
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let code = s3dlio_cli::run(args);
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
