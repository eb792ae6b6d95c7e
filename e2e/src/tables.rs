//! The tables of the scenarios: seeding, checksums, and slowing or gating
//! the target's writes so a scenario can act while a job runs.

use super::*;

/// The example's `contacts` table (the same columns as in the data-plane
/// tests and `make bench`).
pub const CONTACTS_TABLE: &str = "CREATE TABLE contacts (
    id bigint PRIMARY KEY, email text NOT NULL, age int, note jsonb, seen timestamptz)";

/// Inserts `rows` contacts (ids 1..=rows) into `contacts` of `database`.
pub fn insert_contacts(pg: &TempPostgres, database: &str, rows: u64) {
    pg.psql(
        database,
        &format!(
            "INSERT INTO contacts
             SELECT g, 'user' || g || '@example.com', (g % 100)::int,
                    jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7)),
                    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
               FROM generate_series(1, {rows}) g"
        ),
    );
}

/// The example's setup on a real PostgreSQL: `contacts` with `rows` rows in
/// database `source`, an empty `contacts` in `target` (same columns, so the
/// direct COPY path), and the Secrets `legacy-db`/`new-db` pointing at them.
pub fn seed_example(ns: &str, pg: &TempPostgres, rows: u64) {
    pg.psql("source", CONTACTS_TABLE);
    pg.psql("target", CONTACTS_TABLE);
    insert_contacts(pg, "source", rows);
    create_db_secrets(ns, &pg.url("source"), &pg.url("target"));
}

/// Applies the MigrationJob of `examples/postgres-to-postgres.yaml` (not its
/// Secrets, which point at a database the tests do not run), after `edit`.
pub fn apply_example_job(ns: &str, edit: impl FnOnce(String) -> String) {
    let manifest = std::fs::read_to_string(repo_root().join("examples/postgres-to-postgres.yaml"))
        .expect("read the example");
    let job: String = manifest
        .split("\n---")
        .filter(|d| d.contains("kind: MigrationJob"))
        .collect();
    let job = edit(job);
    let out = kubectl_stdin(&["-n", ns, "apply", "-f", "-"], &job);
    assert!(
        out.status.success(),
        "apply the example's job: {}\n{job}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows of `table` in `database`: count and an md5 over every column of
/// every row in key order. Equal on both sides means identical data.
pub fn checksum(pg: &TempPostgres, database: &str, table: &str, key: &str) -> String {
    pg.psql(
        database,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '')
               FROM {table} t"
        ),
    )
}

/// Makes every statement that writes into `table` of `database` take at
/// least `seconds` (a statement-level trigger that sleeps; rows are
/// unchanged). Each batch then takes at least that long whatever the
/// machine, so a scenario can act while a job is running.
pub fn slow_down_writes(pg: &TempPostgres, database: &str, table: &str, seconds: f64) {
    pg.psql(
        database,
        &format!(
            "CREATE OR REPLACE FUNCTION freight_e2e_slow() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END $$;
             CREATE TRIGGER freight_e2e_slow BEFORE INSERT ON {table}
               FOR EACH STATEMENT EXECUTE FUNCTION freight_e2e_slow('{seconds}')"
        ),
    );
}

/// A gate on the writes into `table` of `database`: while it is closed,
/// every statement that writes into the table waits (a statement-level
/// trigger takes a shared advisory lock that the gate holds exclusively),
/// so a job's batches block mid-write as behind a lock; opening it lets
/// them all go on at once. Each write also takes at least `seconds` (see
/// [`slow_down_writes`]). Open when made; dropping it opens it.
pub struct WriteGate {
    url: String,
    holder: Option<std::process::Child>,
}

/// Advisory lock key of [`WriteGate`] (the two-key form, apart from the
/// ledger's one-key advisory locks).
const GATE_KEY: &str = "7, 4242";

impl WriteGate {
    /// Installs the gate on `table` of `database`.
    pub fn install(pg: &TempPostgres, database: &str, table: &str, seconds: f64) -> Self {
        pg.psql(
            database,
            &format!(
                "CREATE OR REPLACE FUNCTION freight_e2e_gate() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN
                        PERFORM pg_advisory_lock_shared({GATE_KEY});
                        PERFORM pg_advisory_unlock_shared({GATE_KEY});
                        PERFORM pg_sleep(TG_ARGV[0]::float8);
                        RETURN NULL;
                      END $$;
                 CREATE TRIGGER freight_e2e_gate BEFORE INSERT ON {table}
                   FOR EACH STATEMENT EXECUTE FUNCTION freight_e2e_gate('{seconds}')"
            ),
        );
        Self {
            url: pg.url(database),
            holder: None,
        }
    }

    /// Closes the gate: holds the lock in a session of its own, and waits
    /// until it is held.
    pub fn close(&mut self, pg: &TempPostgres, database: &str) {
        assert!(self.holder.is_none(), "the gate is already closed");
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql is installed");
        child
            .stdin
            .as_mut()
            .expect("stdin is piped")
            .write_all(format!("SELECT pg_advisory_lock({GATE_KEY});\n").as_bytes())
            .expect("write to psql");
        self.holder = Some(child);
        let (class, obj) = GATE_KEY.split_once(", ").expect("two keys");
        let held = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {class}
               AND objid = {obj} AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted"
        );
        let start = Instant::now();
        while pg.psql(database, &held) != "1" {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the gate's lock was not granted in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens the gate and drops the trigger: writes go at full speed.
    pub fn remove(mut self, pg: &TempPostgres, database: &str, table: &str) {
        self.open();
        pg.psql(
            database,
            &format!("DROP TRIGGER freight_e2e_gate ON {table}"),
        );
    }

    /// Opens the gate (ends the session holding the lock).
    pub fn open(&mut self) {
        if let Some(mut child) = self.holder.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        self.open();
    }
}
