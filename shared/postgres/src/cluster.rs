//! Finding the binaries, `initdb`, start and stop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a cluster could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "PostgreSQL server binaries not found (looked for initdb on PATH and under \
         /usr/lib/postgresql/*/bin). Install them: on Debian/Ubuntu `apt-get install postgresql`; \
         for tests you may instead set BULKHEAD_TEST_DATABASE_URL to a superuser URL of a running server"
    )]
    BinariesNotFound,
    /// Running as root, but there is no `postgres` OS user to run the server as.
    #[error(
        "running as root and no `postgres` OS user exists: create one (`useradd -r postgres`) or run as an ordinary user"
    )]
    NoPostgresUser,
    /// The data folder cannot be used by the server's OS user.
    #[error(
        "the data folder {0} is not reachable by the `postgres` OS user: choose another with --data-dir (e.g. /var/tmp/bulkhead)"
    )]
    Unreachable(PathBuf),
    /// The server's Unix socket path would be longer than the system allows.
    #[error(
        "the cluster folder {0} is too deep: its Unix socket path would pass 107 bytes; choose a shorter folder"
    )]
    TooDeep(PathBuf),
    /// A folder the cluster needs is something else (a link, a file).
    #[error("{0} must be a folder, not a link or a file: remove it")]
    NotAFolder(PathBuf),
    /// A command failed; its output says why.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command that failed.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Trade durability for speed (`fsync=off`, no `synchronous_commit`): tests only.
    pub ephemeral: bool,
    /// `max_connections`.
    pub max_connections: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            ephemeral: false,
            max_connections: 200,
        }
    }
}

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

/// The superuser `initdb` creates (`-U`), whatever OS user runs the server.
pub const SUPERUSER: &str = "postgres";
const PORT: u16 = 5432;

impl Cluster {
    /// Starts the cluster kept under `root` (creating it with `initdb` when `root`
    /// holds none yet); a cluster already running there is reused.
    ///
    /// # Errors
    /// [`PgError`] saying what is missing or which command failed.
    pub fn start(root: &Path, options: &ClusterOptions) -> Result<Self, PgError> {
        let bin_dir = find_bin_dir()?;
        let run_as = server_user()?;
        fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(io(format!("resolving {}", root.display())))?;
        if run_as.is_some() && !reachable_by_others(&root) {
            return Err(PgError::Unreachable(root));
        }
        // sun_path holds 108 bytes with its NUL; Postgres adds "/.s.PGSQL.5432".
        let socket = root.join("socket").join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > 107 {
            return Err(PgError::TooDeep(root));
        }
        let cluster = Self {
            root,
            bin_dir,
            run_as,
        };
        // The root stays ours (0755): the server's OS user writes only inside
        // its own folders, so it can plant nothing (a symlink, say) in the root
        // that we would follow later as root.
        if cluster.run_as.is_some() {
            std::os::unix::fs::chown(&cluster.root, Some(0), Some(0))
                .map_err(io(format!("chown {}", cluster.root.display())))?;
            fs::set_permissions(&cluster.root, fs::Permissions::from_mode(0o755))
                .map_err(io("setting permissions"))?;
        }
        for dir in [cluster.data_dir(), cluster.socket_dir(), cluster.log_dir()] {
            // Never follow a link there (chown and chmod would, as root).
            match fs::symlink_metadata(&dir) {
                Ok(meta) if !meta.is_dir() => return Err(PgError::NotAFolder(dir)),
                Ok(_) => {}
                Err(_) => {
                    fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
                }
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io("setting permissions"))?;
            cluster.chown(&dir)?;
        }
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.initdb(options)?;
        }
        if !cluster.is_running() {
            cluster.pg_ctl(
                &["start", "-w", "-t", "60", "-l"],
                Some(&cluster.log_file()),
            )?;
        }
        Ok(cluster)
    }

    /// The folder holding the data, socket and log.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder holding the server's Unix socket.
    #[must_use]
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The folder of the server's log (the server's OS user writes it).
    fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The server's log file.
    #[must_use]
    pub fn log_file(&self) -> PathBuf {
        self.log_dir().join("postgres.log")
    }

    /// A connection URL for `role` to database `database` over the Unix socket.
    #[must_use]
    pub fn url(&self, role: &str, database: &str) -> String {
        socket_url(&self.root, role, database)
    }

    /// The superuser's URL to `database`.
    #[must_use]
    pub fn admin_url(&self, database: &str) -> String {
        self.url(SUPERUSER, database)
    }

    /// The `psql` command an operator can paste.
    #[must_use]
    pub fn psql_hint(&self, database: &str) -> String {
        format!(
            "psql -h {} -p {PORT} -U {SUPERUSER} {database}",
            self.socket_dir().display()
        )
    }

    /// The postmaster's pid, read from its pid file.
    #[must_use]
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the server (fast shutdown: active sessions are ended).
    ///
    /// # Errors
    /// [`PgError::Command`] when `pg_ctl stop` fails.
    pub fn stop(&self) -> Result<(), PgError> {
        if self.is_running() {
            self.pg_ctl(&["stop", "-m", "fast", "-w"], None)?;
        }
        Ok(())
    }

    /// Stops the server and deletes `root` once process `owner` has exited, even if
    /// it is killed: a detached shell watches it. Used for test clusters.
    ///
    /// # Errors
    /// [`PgError::Io`] when the watcher cannot be spawned.
    pub fn remove_when_process_exits(&self, owner: u32) -> Result<(), PgError> {
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 0.5; done; \
             pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             [ -n \"$pid\" ] && kill -QUIT \"$pid\" 2>/dev/null; sleep 1; rm -rf '{root}'",
            data = self.data_dir().display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io("spawning the cluster watcher"))?;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .args(["status", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn initdb(&self, options: &ClusterOptions) -> Result<(), PgError> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        if options.ephemeral {
            cmd.arg("--no-sync");
        }
        run(cmd, "initdb")?;
        // Only a Unix socket in a 0700 folder: no TCP port, no other OS user.
        let mut conf = format!(
            "\n# bulkhead private cluster\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
             port = {PORT}\nmax_connections = {}\nshared_buffers = 128MB\n",
            self.socket_dir().display(),
            options.max_connections
        );
        if options.ephemeral {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut text = fs::read_to_string(&path).map_err(io("reading postgresql.conf"))?;
        text.push_str(&conf);
        fs::write(&path, text).map_err(io("writing postgresql.conf"))?;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<(), PgError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        run(cmd, "pg_ctl")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    fn chown(&self, path: &Path) -> Result<(), PgError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }
}

fn run(mut cmd: Command, name: &str) -> Result<(), PgError> {
    let output = cmd.output().map_err(io(format!("running {name}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            command: name.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// The folder of `initdb`, `pg_ctl` and `postgres`: beside `initdb` on `PATH`, else
/// the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, PgError> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
    });
    if let Some(dir) = from_path.filter(|d| d.join("pg_ctl").is_file()) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(PgError::BinariesNotFound)
}

/// As root, the `postgres` OS user's ids; otherwise none (run as ourselves).
fn server_user() -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, PgError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(SUPERUSER)
        .ok()
        .flatten()
        .ok_or(PgError::NoPostgresUser)?;
    Ok(Some((user.uid, user.gid)))
}

/// Whether the OS user the server runs as could reach a cluster kept at `root`:
/// always when not root (the server runs as us); as root (the server runs as
/// the `postgres` OS user) only when every folder above `root` lets other users
/// through (`o+x`).
#[must_use]
pub fn server_can_reach(root: &Path) -> bool {
    !nix::unistd::geteuid().is_root()
        || root
            .canonicalize()
            .map_or_else(|_| reachable_by_others(root), |r| reachable_by_others(&r))
}

/// Whether every ancestor of `path` lets other users through (`o+x`).
fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The URL for `role` to `database` of the cluster kept under `root` (running
/// or not: for a second process reaching a cluster another one started).
#[must_use]
pub fn socket_url(root: &Path, role: &str, database: &str) -> String {
    let host = root
        .join("socket")
        .display()
        .to_string()
        .replace('/', "%2F");
    format!("postgresql://{role}@{host}:{PORT}/{database}")
}
