//! Where `bulkhead up` keeps its Postgres cluster.
//!
//! Under the data folder (`<data>/postgres`) when the server can reach it there.
//! Run as root, the server runs as the `postgres` OS user; when the data folder
//! is out of that user's reach (a checkout in root's home folder, a 0700
//! temporary folder), the cluster lives in [`SHARED_ROOT`]`/<id>` instead: `<id>`
//! is kept in `<data>/cluster-id`, and a `data-dir` file beside the cluster names
//! the data folder it belongs to. A cluster there whose data folder is gone (or
//! names another cluster) and which is not running is removed at the next
//! start, so deleting the data folder still starts afresh.
//!
//! The cluster's root folder belongs to root, not to the `postgres` OS user, so
//! that user cannot plant a link we would follow; a data folder whose
//! `cluster-id` someone else wrote, or that names a cluster another data folder
//! still claims, is refused.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Where clusters of data folders the `postgres` OS user cannot reach live.
pub const SHARED_ROOT: &str = "/var/lib/bulkhead/clusters";

/// Where the cluster of `data_dir` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterHome {
    /// `<data>/postgres`.
    InDataDir(PathBuf),
    /// Under [`SHARED_ROOT`]: the data folder is out of the server's reach.
    Shared(PathBuf),
}

impl ClusterHome {
    /// The cluster's root folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        match self {
            Self::InDataDir(root) | Self::Shared(root) => root,
        }
    }
}

/// Creates `data_dir` if needed and finds (or makes) the home of its cluster.
///
/// # Errors
/// When a folder or file cannot be made or read.
pub fn locate(data_dir: &Path) -> anyhow::Result<ClusterHome> {
    locate_in(data_dir, Path::new(SHARED_ROOT))
}

fn locate_in(data_dir: &Path, shared_root: &Path) -> anyhow::Result<ClusterHome> {
    fs::create_dir_all(data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let local = data_dir.join("postgres");
    let id_file = data_dir.join("cluster-id");
    if bulkhead_postgres::server_can_reach(&local) && !id_file.exists() {
        return Ok(ClusterHome::InDataDir(local));
    }
    let id = match fs::read_to_string(&id_file) {
        Ok(text) => {
            // A cluster id planted by someone else would hand us their cluster.
            let owner = fs::symlink_metadata(&id_file)?.uid();
            if owner != nix::unistd::geteuid().as_raw() {
                anyhow::bail!(
                    "{} is not ours (owner uid {owner}): remove it to start afresh",
                    id_file.display()
                );
            }
            uuid::Uuid::parse_str(text.trim())
                .map_err(|_| anyhow::anyhow!("{} is not a cluster id", id_file.display()))?
                .simple()
                .to_string()
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            fs::write(&id_file, &id)?;
            id
        }
        Err(err) => return Err(err.into()),
    };
    fs::create_dir_all(shared_root)?;
    // The postgres OS user must pass through the folders above its cluster
    // (whatever root's umask made of them).
    for dir in shared_root.ancestors().take(2) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    sweep(shared_root);
    let root = shared_root.join(&id);
    if let Some(other) = claimant(&root, &id).filter(|other| *other != data_dir) {
        anyhow::bail!(
            "cluster {id} belongs to {}, which still names it: remove {} to start afresh",
            other.display(),
            id_file.display()
        );
    }
    fs::create_dir_all(&root)?;
    // The cluster's root folder is ours (Cluster::start keeps it so): only we
    // write the claim. Replace, never follow, whatever is there.
    let claim = root.join("data-dir");
    match fs::remove_file(&claim) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&claim)?
        .write_all(data_dir.as_os_str().as_encoded_bytes())?;
    Ok(ClusterHome::Shared(root))
}

/// The data folder that names the cluster at `root` (with id `id`) as its own:
/// the folder its claim names, if that folder's `cluster-id` is `id`.
fn claimant(root: &Path, id: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(fs::read_to_string(root.join("data-dir")).ok()?);
    let claim = fs::read_to_string(dir.join("cluster-id")).ok()?;
    (claim.trim() == id).then_some(dir)
}

/// Removes the clusters under `shared_root` that no data folder claims any more
/// and that are not running. Best effort: what cannot be removed stays.
fn sweep(shared_root: &Path) {
    let Ok(entries) = fs::read_dir(shared_root) else {
        return;
    };
    for entry in entries.flatten() {
        let root = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        let claimed = claimant(&root, &id).is_some();
        if claimed || running(&root) {
            continue;
        }
        tracing::info!(cluster = %root.display(), "removing a cluster whose data folder is gone");
        let _ = fs::remove_dir_all(&root);
    }
}

/// Whether the cluster at `root` has a live postmaster.
fn running(root: &Path) -> bool {
    fs::read_to_string(root.join("data/postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reachable_data_folder_keeps_its_cluster_and_an_unclaimed_shared_one_is_swept() {
        let scratch = tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o755))
            .tempdir_in("/tmp")
            .expect("dir");
        let data = scratch.path().join("data");
        let home = locate_in(&data, &scratch.path().join("shared")).expect("home");
        assert_eq!(
            home,
            ClusterHome::InDataDir(data.canonicalize().expect("c").join("postgres"))
        );

        // A shared cluster whose data folder named another id: swept.
        let shared = scratch.path().join("shared");
        let stale = shared.join("0123456789abcdef0123456789abcdef");
        fs::create_dir_all(&stale).expect("stale");
        fs::write(stale.join("data-dir"), data.as_os_str().as_encoded_bytes()).expect("w");
        sweep(&shared);
        assert!(!stale.exists(), "an unclaimed, stopped cluster is removed");

        // One its data folder still claims: kept.
        fs::write(data.join("cluster-id"), "fedcba9876543210fedcba9876543210").expect("w");
        let kept = shared.join("fedcba9876543210fedcba9876543210");
        fs::create_dir_all(&kept).expect("kept");
        fs::write(
            kept.join("data-dir"),
            data.canonicalize()
                .expect("c")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .expect("w");
        sweep(&shared);
        assert!(kept.exists(), "a claimed cluster stays");
        // And a data folder with a cluster id keeps using the shared home.
        let home = locate_in(&data, &shared).expect("home");
        assert_eq!(home, ClusterHome::Shared(kept.clone()));

        // Another data folder given that id (copied) is refused: the cluster
        // belongs to the first, which still names it.
        let thief = scratch.path().join("thief");
        fs::create_dir_all(&thief).expect("thief");
        fs::copy(data.join("cluster-id"), thief.join("cluster-id")).expect("copy");
        let err = locate_in(&thief, &shared).expect_err("not its cluster");
        assert!(err.to_string().contains("belongs to"), "{err}");
        assert_eq!(
            claimant(&kept, "fedcba9876543210fedcba9876543210"),
            Some(data.canonicalize().expect("c"))
        );
    }
}
