# Services the tests need, sourced by scripts/test. One function per service:
#
#   services_postgres   DATABASE_URL  PostgreSQL
#   services_nats       NATS_URL      NATS with JetStream
#   services_mysql      MYSQL_URL     MariaDB (MySQL protocol)
#
# Each one uses the variable as it is when it is set, after checking that its
# host and port answer (a few seconds at most). When it is unset, it starts a
# throwaway server from the distribution's binaries, on a free loopback port,
# with its data in a temporary folder, and exports the variable; everything
# it started is stopped and deleted when the sourcing shell exits. When the
# binaries are missing, it fails at once with the one command that installs them.
#
# Call services_check_binaries for all of them before doing anything slow, so
# that a missing server is reported in the first seconds.

# The temporary folder holding every throwaway server's data, and what to
# run at exit (the last started is stopped first).
_services_root=""
_services_stops=()

_services_die() {
    echo "scripts/test: $*" >&2
    exit 1
}

# Stops what was started, newest first, and deletes the data. Runs at exit.
_services_cleanup() {
    local i
    for ((i = ${#_services_stops[@]} - 1; i >= 0; i--)); do
        eval "${_services_stops[i]}" >/dev/null 2>&1 || true
    done
    _services_stops=()
    if [ -n "$_services_root" ]; then
        rm -rf "$_services_root"
        _services_root=""
    fi
}

# Makes the temporary folder and registers the cleanup. Not in a subshell:
# the trap and the folder's name must stay in the sourcing shell.
_services_init() {
    [ -z "$_services_root" ] || return 0
    _services_root=$(mktemp -d "${TMPDIR:-/tmp}/refract-services.XXXXXX")
    chmod 755 "$_services_root"
    trap _services_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# The folder for one service's data, owned by the user that runs it ($2).
_services_dir() {
    mkdir -p "$_services_root/$1"
    if [ -n "${2:-}" ]; then chown "$2" "$_services_root/$1"; fi
    echo "$_services_root/$1"
}

# Registers a command to run at exit, quoted word by word.
_services_on_exit() {
    local command
    printf -v command '%q ' "$@"
    _services_stops+=("$command")
}

# A TCP port nobody listens on at the moment, on 127.0.0.1.
_services_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether host:port accepts a TCP connection within a second.
_services_answers() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# Waits up to $3 seconds for host:port to accept connections; $4 names the
# server and $5 its log for the failure message.
_services_wait_tcp() {
    local deadline=$((SECONDS + $3))
    until _services_answers "$1" "$2"; do
        if ((SECONDS >= deadline)); then
            [ -n "${5:-}" ] && tail -n 20 "$5" >&2
            _services_die "$4 did not accept connections on $1:$2 within $3 s"
        fi
        sleep 0.1
    done
}

# Host and port of a URL ($2: the scheme's default port), as "host port";
# nothing for a URL without a host (a Unix socket).
_services_host_port() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
if u.hostname:
    print(u.hostname, u.port or sys.argv[2])
EOF
}

# Fails unless the server a set variable points at answers.
_services_check_url() {
    local name=$1 var=$2 default_port=$3 host port
    read -r host port <<<"$(_services_host_port "${!var}" "$default_port")" || true
    [ -n "${host:-}" ] || return 0
    local deadline=$((SECONDS + 5))
    until _services_answers "$host" "$port"; do
        ((SECONDS < deadline)) || _services_die "$var is set, but $name does not answer at $host:$port"
        sleep 0.2
    done
}

# Kills a pid, waiting up to 10 s for it to exit before SIGKILL.
_services_stop_pid() {
    kill "$1" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

# Runs a command as the non-root user servers refuse root for (PostgreSQL):
# `postgres` when it exists, else `nobody`. Plain when not root.
_services_unprivileged_user() {
    if [ "$(id -u)" != 0 ]; then
        id -un
    elif id postgres >/dev/null 2>&1; then
        echo postgres
    else
        echo nobody
    fi
}
_services_as() {
    local user=$1
    shift
    if [ "$(id -u)" != 0 ]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u "$user" -- "$@"
    else
        setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups -- "$@"
    fi
}

# The folder of the newest PostgreSQL server binaries: the distribution's
# versioned folders first (Debian and Ubuntu keep initdb off PATH), then PATH.
_services_pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return
        fi
    done
    local initdb
    initdb=$(command -v initdb 2>/dev/null) || return 0
    initdb=$(readlink -f "$initdb")
    [ -x "$(dirname "$initdb")/pg_ctl" ] && dirname "$initdb"
}

_services_mysql_bin() {
    local name
    for name in "$@"; do
        command -v "$name" 2>/dev/null && return
        [ -x "/usr/sbin/$name" ] && { echo "/usr/sbin/$name"; return; }
    done
    return 0
}

# Fails at once, naming the install command, for each unset variable whose
# server binaries are missing.
services_check_binaries() {
    if [ -z "${DATABASE_URL:-}" ] && [ -z "$(_services_pg_bin)" ]; then
        _services_die "DATABASE_URL is unset and no PostgreSQL server (initdb, pg_ctl) is installed: apt-get install postgresql"
    fi
    if [ -z "${NATS_URL:-}" ] && ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
        _services_die "NATS_URL is unset and nats-server is not installed: apt-get install nats-server"
    fi
    if [ -z "${MYSQL_URL:-}" ] && { [ -z "$(_services_mysql_bin mariadbd mysqld)" ] \
        || [ -z "$(_services_mysql_bin mariadb-install-db mysql_install_db)" ]; }; then
        _services_die "MYSQL_URL is unset and no MariaDB server is installed: apt-get install mariadb-server"
    fi
}

# PostgreSQL: DATABASE_URL, or a throwaway cluster with a database `test`.
services_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        _services_check_url PostgreSQL DATABASE_URL 5432
        return
    fi
    local bin user dir port
    bin=$(_services_pg_bin)
    [ -n "$bin" ] || _services_die "DATABASE_URL is unset and no PostgreSQL server (initdb, pg_ctl) is installed: apt-get install postgresql"
    # initdb and postgres refuse to run as root.
    user=$(_services_unprivileged_user)
    _services_init
    dir=$(_services_dir postgres "$user")
    _services_as "$user" test -w "$dir" \
        || _services_die "$user cannot write to $dir (PostgreSQL refuses to run as root): set TMPDIR to a folder it can reach"
    port=$(_services_free_port)
    _services_as "$user" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; _services_die "initdb failed"; }
    _services_on_exit _services_as "$user" "$bin/pg_ctl" -D "$dir/data" -m immediate -t 10 stop
    # Durability is not under test here: no fsync makes the many small commits fast.
    _services_as "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; _services_die "PostgreSQL did not start"; }
    _services_wait_tcp 127.0.0.1 "$port" 30 PostgreSQL "$dir/postgres.log"
    _services_as "$user" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test \
        || _services_die "could not create the PostgreSQL database test"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/test"
    echo "scripts/test: throwaway PostgreSQL at $DATABASE_URL" >&2
}

# NATS with JetStream: NATS_URL, or a throwaway nats-server.
services_nats() {
    if [ -n "${NATS_URL:-}" ]; then
        _services_check_url NATS NATS_URL 4222
        return
    fi
    local bin dir port
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    [ -x "$bin" ] || _services_die "NATS_URL is unset and nats-server is not installed: apt-get install nats-server"
    _services_init
    dir=$(_services_dir nats)
    port=$(_services_free_port)
    "$bin" -js -a 127.0.0.1 -p "$port" -sd "$dir/jetstream" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    _services_on_exit _services_stop_pid $!
    _services_wait_tcp 127.0.0.1 "$port" 15 nats-server "$dir/nats.log"
    export NATS_URL="nats://127.0.0.1:$port"
    echo "scripts/test: throwaway NATS (JetStream) at $NATS_URL" >&2
}

# MariaDB: MYSQL_URL, or a throwaway mariadbd whose root has an empty
# password, with a database `test`.
services_mysql() {
    if [ -n "${MYSQL_URL:-}" ]; then
        _services_check_url MariaDB MYSQL_URL 3306
        return
    fi
    local server install client dir port user
    server=$(_services_mysql_bin mariadbd mysqld)
    install=$(_services_mysql_bin mariadb-install-db mysql_install_db)
    client=$(_services_mysql_bin mariadb mysql)
    if [ -z "$server" ] || [ -z "$install" ] || [ -z "$client" ]; then
        _services_die "MYSQL_URL is unset and no MariaDB server is installed: apt-get install mariadb-server"
    fi
    _services_init
    dir=$(_services_dir mysql)
    port=$(_services_free_port)
    user=$(id -un)
    # --no-defaults: the machine's my.cnf (its socket, port, datadir) must not apply.
    "$install" --no-defaults --user="$user" --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve >"$dir/install.log" 2>&1 \
        || { tail -n 20 "$dir/install.log" >&2; _services_die "mariadb-install-db failed"; }
    "$server" --no-defaults --user="$user" --datadir="$dir/data" --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mysqld.pid" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$dir/mysqld.log" --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 \
        </dev/null >/dev/null 2>&1 &
    _services_on_exit _services_stop_pid $!
    _services_wait_tcp 127.0.0.1 "$port" 30 MariaDB "$dir/mysqld.log"
    "$client" --no-defaults -h 127.0.0.1 -P "$port" -u root -e 'CREATE DATABASE IF NOT EXISTS test' \
        || _services_die "could not create the MariaDB database test"
    export MYSQL_URL="mysql://root@127.0.0.1:$port/test"
    echo "scripts/test: throwaway MariaDB at $MYSQL_URL" >&2
}
