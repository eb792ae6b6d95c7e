# shellcheck shell=bash
# A throwaway local PostgreSQL for `make demo` and `make bench`: Debian's server
# binaries (/usr/lib/postgresql/*/bin), run as the unprivileged `postgres` user
# (when we are root) in a temporary directory, listening on 127.0.0.1 only.
# Sourced, not executed. Functions return non-zero on failure; callers use set -e.
#
#   pg_ensure_packages                  apt-get install what is missing (root only)
#   pg_start DIR PORT [-c NAME=VALUE]   initdb + start; role freight/freight (superuser)
#   pg_stop DIR                         stop the server and remove DIR
#   pg_url DB                           postgres://freight:freight@127.0.0.1:$PG_PORT/DB
#   pg_sql DB SQL                       run SQL, print rows (unaligned, tuples only)
#   pg_create_contacts DB / pg_seed_contacts DB ROWS / pg_checksum DB
#
# Server settings are PostgreSQL's defaults unless the caller passes -c options.

PG_ROLE=freight
PG_PASSWORD=freight
PG_PORT=${PG_PORT:-55432}
PG_DIR=${PG_DIR:-}

pg_log() { printf '[pg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# pg_ensure_packages: PostgreSQL server + client, and the small tools the demo
# and bench use (jq, runuser). Installs with apt-get like .ci/run does.
pg_ensure_packages() {
  local need=()
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v jq >/dev/null || need+=(jq)
  command -v runuser >/dev/null || need+=(util-linux)
  ((${#need[@]})) || return 0
  if [[ $(id -u) != 0 ]]; then
    pg_log "missing packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})"
    return 1
  fi
  pg_log "installing ${need[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

# The newest installed server's bin directory.
pg_bin_dir() {
  local d
  d=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)
  [[ -n "$d" ]] || {
    pg_log "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
    return 1
  }
  dirname "$d"
}

# pg_as_server CMD...: run CMD as the postgres user when root (the server refuses root).
pg_as_server() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_port_free PORT: nothing listens on 127.0.0.1:PORT.
pg_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pg_start DIR PORT [-c NAME=VALUE ...]: a new cluster in DIR (created; owned by
# postgres), superuser `freight` with password `freight` (scram over TCP, trust on
# the socket in DIR), started and ready. Sets PG_DIR and PG_PORT.
pg_start() {
  local dir=$1 port=$2 bin
  shift 2
  bin=$(pg_bin_dir) || return 1
  pg_port_free "$port" || {
    pg_log "127.0.0.1:$port is already in use:"
    ss -ltnp "sport = :$port" >&2 2>/dev/null || true
    return 1
  }
  mkdir -p "$dir"
  if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$dir"; fi
  chmod 700 "$dir"
  PG_DIR=$dir
  PG_PORT=$port
  printf '%s\n' "$PG_PASSWORD" >"$dir/pwfile"
  if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$dir/pwfile"; fi
  pg_log "initdb in $dir/data ($(basename "$(dirname "$bin")"))"
  pg_as_server "$bin/initdb" -D "$dir/data" -U "$PG_ROLE" --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    return 1
  }
  rm -f "$dir/pwfile"
  # One string for pg_ctl -o; every value is ours (no spaces), so word splitting is safe.
  local opts="-c listen_addresses=127.0.0.1 -p $port -k $dir"
  while (($#)); do
    opts+=" $1"
    shift
  done
  pg_log "starting PostgreSQL on 127.0.0.1:$port"
  pg_as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start \
    >/dev/null || {
    tail -n 20 "$dir/server.log" >&2
    return 1
  }
}

# pg_stop DIR: fast shutdown, then remove DIR (only a directory pg_start made).
pg_stop() {
  local dir=$1 bin
  [[ -n "$dir" && -f "$dir/data/PG_VERSION" ]] || return 0
  bin=$(pg_bin_dir) || return 1
  pg_log "stopping PostgreSQL ($dir)"
  pg_as_server "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  case "$dir" in /tmp/?*) rm -rf "$dir" ;; esac
}

pg_url() { printf 'postgres://%s:%s@127.0.0.1:%s/%s' "$PG_ROLE" "$PG_PASSWORD" "$PG_PORT" "$1"; }

# pg_sql DB SQL: run SQL (stop at the first error), print rows unaligned without headers.
pg_sql() {
  PGOPTIONS='-c client_min_messages=warning' \
    psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$(pg_url "$1")" -c "$2"
}

# The server settings that matter for write throughput (name=value, one line).
pg_settings() {
  pg_sql postgres "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes',
      'wal_level', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_buffers',
      'work_mem', 'maintenance_work_mem', 'max_connections', 'server_version_num')"
}

# The contacts table: CRM-like rows of varied types.
PG_CONTACTS_DDL="CREATE TABLE contacts (
  id             bigint PRIMARY KEY,
  first_name     text NOT NULL,
  last_name      text NOT NULL,
  email          text NOT NULL,
  phone          text,
  company        text,
  created_at     timestamptz NOT NULL,
  lifetime_value numeric(12,2) NOT NULL,
  tags           text[] NOT NULL,
  attributes     jsonb NOT NULL,
  subscribed     boolean NOT NULL
)"

# pg_create_contacts DB: (re)create an empty contacts table with its primary key.
pg_create_contacts() {
  pg_sql "$1" "DROP TABLE IF EXISTS contacts; $PG_CONTACTS_DDL" >/dev/null
}

# pg_seed_contacts DB ROWS: (re)create contacts in DB with ROWS generated rows
# (unicode names, NULL phones, numeric, arrays, jsonb, booleans), then VACUUM ANALYZE.
pg_seed_contacts() {
  local db=$1 rows=$2
  pg_create_contacts "$db"
  pg_sql "$db" "INSERT INTO contacts
    SELECT g,
      (ARRAY['Ada','José','Zoë','Søren','Aiko','Mårten','Chloé','Łukasz','Thảo','Ólafur',
             'Renée','Dmitrij','Анна','Wei','Fatima','Noah','Ngozi','Siân','Ömer','Priya'])[1 + g % 20],
      (ARRAY['Lovelace','García','Müller','Østergaard','Tanaka','Nguyễn','Dubois','Kowalski',
             'O''Brien','Јовановић','van der Berg','Iyer','Smith'])[1 + (g / 20) % 13],
      'contact' || g || '@' || (ARRAY['example.com','example.org','exämple.de','mail.example.net'])[1 + g % 4],
      CASE WHEN g % 11 = 0 THEN NULL
           ELSE '+' || (1 + g % 49) || ' 555 ' || lpad((g * 7 % 10000000)::text, 7, '0') END,
      CASE WHEN g % 17 = 0 THEN NULL
           ELSE (ARRAY['Acme','Globex','Initech','Société Générale','Umbrella','Müller & Söhne',
                       'Stark Industries','北京科技','Wayne Enterprises'])[1 + g % 9] || ' ' || (g % 503) END,
      TIMESTAMPTZ '2015-01-01 00:00:00+00' + g * INTERVAL '97 seconds' + (g % 1000) * INTERVAL '1 millisecond',
      round((g * 7919 % 10000000) / 100.0, 2),
      CASE WHEN g % 13 = 0 THEN ARRAY[]::text[]
           ELSE ARRAY['crm', 'segment-' || g % 7] || CASE WHEN g % 3 = 0 THEN ARRAY['vip'] ELSE ARRAY[]::text[] END END,
      jsonb_build_object('source', (ARRAY['import','web','event','referral'])[1 + g % 4],
                         'score', g % 100, 'consent', g % 3 = 0,
                         'notes', CASE WHEN g % 5 = 0 THEN 'Prefers e-mail — «no calls»' END),
      g % 2 = 0
    FROM generate_series(1::bigint, $rows) g" >/dev/null
  pg_sql "$db" "VACUUM ANALYZE contacts" >/dev/null
}

# pg_checksum DB: "<count> <md5 over every column of every row, in key order>".
pg_checksum() {
  pg_sql "$1" "SELECT count(*) || ' ' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY id)), '-')
    FROM contacts t"
}
