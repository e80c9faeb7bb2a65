//! `bulkhead rotate-key` and `bulkhead jwks`: `up`'s key folder.

use std::path::PathBuf;

use bulkhead::keys;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The `up` data folder.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: PathBuf,
}

pub fn rotate(args: &RotateArgs) -> anyhow::Result<()> {
    let kid = keys::rotate(&args.data_dir.join("keys"))?;
    println!(
        "new signing key {kid}: published within {} s, signing after {} s",
        keys::KEY_REFRESH.as_secs(),
        keys::KEY_GRACE.as_secs()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct JwksArgs {
    /// The `up` data folder.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: PathBuf,
}

pub fn jwks(args: &JwksArgs) -> anyhow::Result<()> {
    let ring = keys::load_ring(&args.data_dir.join("keys"), keys::KEY_GRACE)?;
    println!("{}", serde_json::json!({ "keys": ring.public_jwks() }));
    Ok(())
}
