//! A throwaway PostgreSQL server for tests: Debian's binaries, run as an
//! unprivileged user in a temporary directory, on a free loopback port.
//! Shared by the root tests, `make bench` and the end-to-end tests (which
//! also stop and restart it on the same data directory and port).

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running PostgreSQL server, stopped and removed on drop.
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    server: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // `id -u` keeps this free of extra dependencies.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root
/// (the server refuses to run as root).
fn pg_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl TempPostgres {
    /// Initializes and starts a server with databases `source` and `target`.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "freight-pg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown the data directory");
        }
        let init = pg_command(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "freight",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut pg = Self {
            dir,
            bin,
            server: None,
            port: free_port(),
        };
        pg.start_again();
        pg.psql("postgres", "CREATE DATABASE source");
        pg.psql("postgres", "CREATE DATABASE target");
        pg
    }

    /// Starts the server (again) on the same data directory and port, and
    /// waits until it accepts connections. Does nothing if it is running.
    pub fn start_again(&mut self) {
        if self.server.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .ok();
        let (out, err) = match &log {
            Some(f) => (
                f.try_clone().map_or_else(|_| Stdio::null(), Stdio::from),
                f.try_clone().map_or_else(|_| Stdio::null(), Stdio::from),
            ),
            None => (Stdio::null(), Stdio::null()),
        };
        let server = pg_command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "synchronous_commit=off", "-k"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.is_ready() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start; see {}",
                self.dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True when the server accepts connections.
    pub fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "freight",
                "-d",
                "postgres",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Stops the server with a "fast" shutdown (open transactions are rolled
    /// back, clients are disconnected) and waits until it is gone. The data
    /// directory and port stay: [`start_again`](Self::start_again) resumes.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let stopped = pg_command(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = server.kill();
        }
        let _ = server.wait();
    }

    /// Stops the server and starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://freight@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL with psql; panics on error; returns stdout (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self.try_psql(database, sql);
        match out {
            Ok(out) => out,
            Err(err) => panic!("psql: {err}\n{sql}"),
        }
    }

    /// Runs SQL with psql; returns stdout (unaligned, tuples only) or stderr.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
                "-c",
                sql,
            ])
            .output()
            .expect("psql is installed");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
