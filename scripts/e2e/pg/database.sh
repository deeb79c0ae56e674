# Sourced by the PostgreSQL wrappers: pg_database_url DATA_DIR prints the URL of the database that
# data dir's kiln uses (kiln_<hash of its path>). A data dir without the marker file .pg-test-db is
# new (a script removed and remade it): its database is made afresh then, as SQLite's would be.
pg_database_url() {
  local data db admin query
  [ -d "$1" ] || mkdir -p -m 700 "$1"
  data=$(cd "$1" && pwd)
  db="kiln_$(printf '%s' "$data" | sha256sum | cut -c1-16)"
  admin=${KILN_TEST_PG_URL%%/kiln_test*}
  query=${KILN_TEST_PG_URL#*kiln_test}
  if [ ! -f "$data/.pg-test-db" ]; then
    psql -q "$KILN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    psql -q "$KILN_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null
    touch "$data/.pg-test-db"
  fi
  printf '%s\n' "$admin/$db$query"
}
