//! A PostgreSQL cluster of a test's own, so the test may restart it.

use std::process::Command;

/// A throwaway PostgreSQL cluster of its own (initdb in a temp dir, a free loopback port, fsync
/// off), so a test may restart it. Dropping it stops it at once and removes its directory, also
/// when the test panics.
pub(super) struct ThrowawayPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    pub(super) fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("provq-chaos-pg-")
            .tempdir()
            .expect("temp dir");
        // initdb refuses to run as root: then the cluster belongs to the postgres user.
        let as_postgres = command_output(Command::new("id").arg("-u")).trim() == "0";
        if as_postgres {
            command_output(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let mut pg = Self {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let data = pg.data();
        command_output(
            pg.tool("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .args(["--no-locale", "--no-sync"]),
        );
        // A free port may be taken between looking and binding: try a few.
        for attempt in 1..=3 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = pg.pg_ctl("start").output().expect("run pg_ctl start");
            if out.status.success() {
                return pg;
            }
            assert!(
                attempt < 3,
                "pg_ctl start failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        unreachable!()
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres` URL of database `name` on this cluster.
    pub(super) fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// `pg_ctl ACTION` on this cluster, waiting for it to finish.
    fn pg_ctl(&self, action: &str) -> Command {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-m", "fast", "-o", &options, action]);
        cmd
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is down for a moment.
    pub(super) fn restart(&self) {
        command_output(&mut self.pg_ctl("restart"));
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // The TempDir removes the directory after this.
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's versioned folder.
fn postgres_bin_dir() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // the newest version first
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test starts its own PostgreSQL cluster and needs initdb and pg_ctl, found \
                 neither on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL's server \
                 (Debian: apt-get install postgresql; .ci/run does)"
            )
        })
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn command_output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
