//! One module per verb; each returns its exit code or a [`CliError`].

use s3dlio_core::store::StoreOptions;

use crate::args::{Cli, Command};
use crate::error::CliResult;
use crate::ui::Ui;

mod cp;
mod info;
mod ls;
mod orbax;
mod rm;
mod stat;
mod verify;

/// What every command gets besides its own arguments.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ui: Ui,
    pub store: StoreOptions,
}

pub async fn dispatch(cli: Cli) -> CliResult<i32> {
    let store = StoreOptions {
        direct_fallback: cli.global.direct_fallback,
        // Remote stores take their settings from the environment (AWS_*).
        ..Default::default()
    };
    let quiet = cli.global.quiet;
    let ctx = |json: bool| Ctx {
        ui: Ui::new(json, quiet),
        store: store.clone(),
    };
    match cli.command {
        Command::Ls(a) => ls::run(&ctx(a.json), a).await,
        Command::Stat(a) => stat::run(&ctx(a.json), a).await,
        Command::Cp(a) => cp::run(&ctx(a.json), a).await,
        Command::Rm(a) => rm::run(&ctx(a.json), a).await,
        Command::Info(a) => info::run(&ctx(a.json), a).await,
        Command::Verify(a) => verify::run(&ctx(a.json), a).await,
    }
}
