//! `bulkhead`: run the suite on a laptop (`up`), one service in deployment
//! (`serve`), migrations (`migrate`), the first admin (`bootstrap`), keys
//! (`rotate-key`, `jwks`) or a break-glass token (`token`). Each subcommand lives
//! in its own module of `cli/`.

mod cli;

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::Cli::parse().run().await
}
