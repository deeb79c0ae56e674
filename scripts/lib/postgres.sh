# Sourced by scripts: a throwaway PostgreSQL 15 cluster under .build/pg for the tests and benches.
#   start_test_postgres  installs postgresql-15, makes a CA and a server certificate (localhost,
#                        127.0.0.1), initdb with SCRAM-SHA-256 only, TLS on, a free port, and exports
#                        KILN_TEST_PG_URL (verify-full against the CA), KILN_TEST_PG_CA, KILN_TEST_PG_PORT,
#                        KILN_TEST_PG_PASSWORD, KILN_TEST_PG_RESTART (a command that restarts the server)
#                        and KILN_TEST_PG_MD5_URL (a role whose password is stored as md5).
#   stop_test_postgres   stops it (the data stays under .build/pg until the next start).
# The server runs as the `postgres` user when this runs as root (initdb refuses root).
PG_BIN=/usr/lib/postgresql/15/bin

start_test_postgres() {
  ensure_packages postgresql-15 postgresql-client-15 openssl >/dev/null
  local root dir port pw as
  root=$(pwd)
  dir="$root/.build/pg"
  [ -f "$dir/data/postmaster.pid" ] && stop_test_postgres
  rm -rf "$dir"
  mkdir -p "$dir/run"
  pw=$(openssl rand -hex 16)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # A CA of the test's own and a server certificate it signed, for verify-full.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kiln test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
  chmod 600 "$dir/server.key"
  printf '%s\n' "$pw" > "$dir/pw"
  as=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -U kiln --pwfile="$dir/pw" --auth=scram-sha-256 -E UTF8 \
    --locale=C >/dev/null
  cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
max_connections = 800
fsync = off
EOF
  cat > "$dir/data/pg_hba.conf" <<EOF
local all all scram-sha-256
host all kiln_md5 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
EOF
  # No descriptor of ours stays open in the server (a CI runner waits for its output pipe to close).
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start </dev/null >/dev/null 2>&1 \
    || { cat "$dir/server.log" >&2; return 1; }
  PGPASSWORD=$pw psql -q -h 127.0.0.1 -p "$port" -U kiln -d postgres -v ON_ERROR_STOP=1 >/dev/null <<EOF
CREATE DATABASE kiln_test;
SET password_encryption = 'md5';
CREATE ROLE kiln_md5 LOGIN PASSWORD '$pw';
GRANT ALL ON DATABASE kiln_test TO kiln_md5;
EOF
  export KILN_TEST_PG_PORT=$port KILN_TEST_PG_PASSWORD=$pw KILN_TEST_PG_CA="$dir/ca.crt"
  export KILN_TEST_PG_URL="postgres://kiln:$pw@localhost:$port/kiln_test?sslmode=verify-full&sslrootcert=$dir/ca.crt"
  export KILN_TEST_PG_MD5_URL="postgres://kiln_md5:$pw@127.0.0.1:$port/kiln_test?sslmode=disable"
  export KILN_TEST_PG_RESTART="${as[*]} $PG_BIN/pg_ctl -D $dir/data -l $dir/server.log -w -t 60 -m fast restart </dev/null"
  echo "# PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (.build/pg; SCRAM, TLS)"
}

stop_test_postgres() {
  local dir as=()
  dir="$(pwd)/.build/pg"
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  [ -d "$dir/data" ] && "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}
