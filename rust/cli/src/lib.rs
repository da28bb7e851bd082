//! The `s3dlio` command line, as a library so the Python wheel's `s3dlio`
//! entry point runs this same code in-process.
//!
//! [`run`] parses argv, runs one command on the core's tokio runtime and
//! returns the exit code; it never exits the process and never panics on
//! I/O, so an embedding interpreter survives every failure.

mod args;
mod commands;
mod dcp;
mod error;
mod format;
mod pickle;
mod target;
mod ui;

use std::io::Write;

use clap::Parser;

pub use error::{EXIT_FAILURE, EXIT_INTEGRITY, EXIT_OK};

use args::Cli;
use error::CliError;

/// Run `s3dlio` with `args` (`args[0]` is the program name) and return its
/// exit code: 0 ok, 1 integrity failure, 2 usage error or other failure.
pub fn run<I: IntoIterator<Item = String>>(args: I) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return report_usage(e),
    };
    let result = if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking on the core runtime from inside another runtime's
        // context panics; a plain thread has no such context.
        std::thread::scope(|s| {
            s.spawn(move || execute(cli))
                .join()
                .unwrap_or_else(|_| Err(CliError::failure("internal error: command panicked")))
        })
    } else {
        execute(cli)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "s3dlio: error: {e}");
            e.code
        }
    }
}

/// Run the command as a task on the core runtime: a worker thread may
/// block in place (the core does for file reads), the caller's thread may
/// not, and a panic in the task comes back as an error instead of
/// unwinding into the caller.
fn execute(cli: Cli) -> Result<i32, CliError> {
    let rt = s3dlio_core::runtime::runtime()?;
    let task = rt.spawn(commands::dispatch(cli));
    match rt.block_on(task) {
        Ok(result) => result,
        Err(e) => Err(CliError::failure(format!("internal error: {e}"))),
    }
}

/// clap's own rendering (usage and hints), under our error prefix. Help and
/// version requests are not errors: they go to stdout with exit code 0.
fn report_usage(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(std::io::stdout().lock(), "{text}");
            EXIT_OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(std::io::stderr().lock(), "{text}");
            EXIT_FAILURE
        }
        _ => {
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let _ = write!(std::io::stderr().lock(), "s3dlio: error: {text}");
            EXIT_FAILURE
        }
    }
}
