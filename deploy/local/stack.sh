#!/usr/bin/env bash
# zhongtai local stack: a Kafka-compatible broker (tansu, durable SQLite storage) and a
# ClickHouse server, both running from a project-local folder, plus the Python checkers
# the tests use in a project-local virtualenv.
#
#   deploy/local/stack.sh up        install what is missing, start what is not running, wait
#   deploy/local/stack.sh down      stop only what this script started (pid files)
#   deploy/local/stack.sh status    what runs, where, and whether it answers
#   deploy/local/stack.sh logs      the tail of both services' logs
#   deploy/local/stack.sh restart kafka|clickhouse   stop and start one service (fault tests)
#   deploy/local/stack.sh reset-kafka   restart tansu on an empty store (all topics gone)
#   deploy/local/stack.sh pause|resume kafka|clickhouse   SIGSTOP / SIGCONT one service: it
#                                   keeps its connections but answers nothing (a network
#                                   cut-off, for the fault matrix; docs/reliability.md)
#   deploy/local/stack.sh install   only install (tansu, ClickHouse, Python checkers)
#
# Environment overrides (defaults in brackets):
#   ZT_STACK_DIR [<repo>/.stack]   where state, logs, pid files and the venv live
#   ZT_KAFKA_HOST [127.0.0.1]  ZT_KAFKA_PORT [9092]
#   ZT_CH_HTTP_PORT [8123]  ZT_CH_TCP_PORT [9000]  ZT_CH_INTERSERVER_PORT [9009]
#   ZT_TANSU_STORAGE [sqlite://tansu.db, relative to $ZT_STACK_DIR/tansu]
#   ZT_SKIP_INSTALL [unset]    set to 1 to never install anything
#
# A service already answering on its port that this script did not start is reused, not
# restarted, and `down` leaves it alone.
set -euo pipefail

TANSU_VERSION=0.6.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
STACK_DIR=${ZT_STACK_DIR:-$repo/.stack}
KAFKA_HOST=${ZT_KAFKA_HOST:-127.0.0.1}
KAFKA_PORT=${ZT_KAFKA_PORT:-9092}
CH_HTTP_PORT=${ZT_CH_HTTP_PORT:-8123}
CH_TCP_PORT=${ZT_CH_TCP_PORT:-9000}
CH_INTERSERVER_PORT=${ZT_CH_INTERSERVER_PORT:-9009}
TANSU_STORAGE=${ZT_TANSU_STORAGE:-sqlite://tansu.db}
VENV=$STACK_DIR/venv
REQUIREMENTS=$repo/tests/py/requirements.txt

export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pid_alive() {
  local f=$1
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

ch_ping() { curl -fsS --max-time 2 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null | grep -q Ok; }

# --- install ----------------------------------------------------------------------------

tansu_ok() {
  command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

install_tansu() {
  if tansu_ok; then return; fi
  log "installing tansu $TANSU_VERSION with cargo (about 20 minutes on 2 cores, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql >&2
  tansu_ok || die "tansu $TANSU_VERSION is not on PATH after cargo install"
}

apt_updated=0
apt_install() {
  if [[ $apt_updated == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

install_clickhouse() {
  if command -v clickhouse-server >/dev/null 2>&1 && command -v clickhouse-client >/dev/null 2>&1; then
    return
  fi
  log "installing Debian's clickhouse-server and clickhouse-client"
  apt_install clickhouse-server clickhouse-client
}

install_tools() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
  # promtool (Debian's prometheus package) checks metric names and alert rules (tests/py/test_helm.py).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if ((${#missing[@]})); then
    log "installing build tools: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

install_python() {
  local stamp=$VENV/.requirements.sha256 want
  want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  log "installing the Python checkers into $VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2
  echo "$want" >"$stamp"
}

install_all() {
  [[ ${ZT_SKIP_INSTALL:-} == 1 ]] && return
  install_tools
  install_clickhouse
  install_python
  install_tansu
}

# --- kafka (tansu) ------------------------------------------------------------------------

kafka_pid=$STACK_DIR/tansu/tansu.pid

start_kafka() {
  if pid_alive "$kafka_pid"; then return; fi
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "a broker already answers on $KAFKA_HOST:$KAFKA_PORT; reusing it (not started here)"
    return
  fi
  mkdir -p "$STACK_DIR/tansu"
  log "starting tansu on $KAFKA_HOST:$KAFKA_PORT (storage $TANSU_STORAGE)"
  (
    cd "$STACK_DIR/tansu"
    # tansu reads these from the environment too; unset them so a caller's env cannot redirect it.
    unset CLUSTER_ID LISTENER_URL ADVERTISED_LISTENER_URL STORAGE_ENGINE SCHEMA_REGISTRY
    RUST_LOG=${ZT_TANSU_LOG:-warn} nohup tansu broker \
      --cluster-id zhongtai-local \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --storage-engine "$TANSU_STORAGE" \
      >>"$STACK_DIR/tansu/tansu.log" 2>&1 </dev/null &
    echo $! >"$kafka_pid"
  )
}

wait_kafka() {
  for _ in $(seq 1 120); do
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then return; fi
    if [[ -f $kafka_pid ]] && ! pid_alive "$kafka_pid"; then
      tail -n 20 "$STACK_DIR/tansu/tansu.log" >&2 || true
      die "tansu exited during start; log above"
    fi
    sleep 0.5
  done
  die "tansu did not answer on $KAFKA_HOST:$KAFKA_PORT within 60 s"
}

# --- clickhouse ---------------------------------------------------------------------------

ch_dir=$STACK_DIR/clickhouse
ch_pid=$ch_dir/clickhouse.pid

start_clickhouse() {
  if pid_alive "$ch_pid"; then return; fi
  if ch_ping; then
    log "a ClickHouse server already answers on 127.0.0.1:$CH_HTTP_PORT; reusing it (not started here)"
    return
  fi
  mkdir -p "$ch_dir"/{data,tmp,user_files,format_schemas,log}
  sed -e "s#@CH_DIR@#$ch_dir#g" -e "s#@CH_HTTP_PORT@#$CH_HTTP_PORT#g" \
    -e "s#@CH_TCP_PORT@#$CH_TCP_PORT#g" -e "s#@CH_INTERSERVER_PORT@#$CH_INTERSERVER_PORT#g" \
    "$here/clickhouse/config.xml.in" >"$ch_dir/config.xml"
  cp "$here/clickhouse/users.xml" "$ch_dir/users.xml"
  log "starting ClickHouse on 127.0.0.1:$CH_HTTP_PORT (http) and :$CH_TCP_PORT (native)"
  (
    cd "$ch_dir"
    nohup clickhouse-server --config-file="$ch_dir/config.xml" \
      >>"$ch_dir/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$ch_pid"
  )
}

wait_clickhouse() {
  for _ in $(seq 1 120); do
    if ch_ping; then return; fi
    if [[ -f $ch_pid ]] && ! pid_alive "$ch_pid"; then
      tail -n 20 "$ch_dir/log/clickhouse-server.err.log" "$ch_dir/log/stdout.log" >&2 || true
      die "ClickHouse exited during start; log above"
    fi
    sleep 0.5
  done
  die "ClickHouse did not answer on 127.0.0.1:$CH_HTTP_PORT within 60 s"
}

# --- lifecycle ----------------------------------------------------------------------------

stop_pid() {
  local name=$1 f=$2
  if pid_alive "$f"; then
    local pid
    pid=$(cat "$f")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_up() {
  mkdir -p "$STACK_DIR"
  install_all
  start_kafka
  start_clickhouse
  wait_kafka
  wait_clickhouse
  cmd_status
}

cmd_down() {
  stop_pid tansu "$kafka_pid"
  stop_pid clickhouse "$ch_pid"
}

cmd_status() {
  local k c
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then k=up; else k=down; fi
  if ch_ping; then c=up; else c=down; fi
  pid_alive "$kafka_pid" && k="$k (pid $(cat "$kafka_pid"))" || { [[ $k == up ]] && k="$k (not started by this stack)"; }
  pid_alive "$ch_pid" && c="$c (pid $(cat "$ch_pid"))" || { [[ $c == up ]] && c="$c (not started by this stack)"; }
  echo "kafka       $KAFKA_HOST:$KAFKA_PORT  $k"
  echo "clickhouse  http://127.0.0.1:$CH_HTTP_PORT  native 127.0.0.1:$CH_TCP_PORT  $c"
  echo "python      $VENV"
}

cmd_logs() {
  for f in "$STACK_DIR/tansu/tansu.log" "$ch_dir/log/clickhouse-server.err.log"; do
    [[ -f $f ]] && { echo "== $f"; tail -n "${LINES_TO_SHOW:-40}" "$f"; }
  done
  return 0
}

# Stop tansu, forget its SQLite store (every topic and record) and start it empty: the
# fault matrix starts each run on an empty broker (tansu slows down as topics pile up).
cmd_reset_kafka() {
  pid_alive "$kafka_pid" || die "kafka was not started by this stack; not resetting it"
  [[ $TANSU_STORAGE == sqlite://* ]] || die "reset-kafka only knows the sqlite storage"
  stop_pid tansu "$kafka_pid"
  local db=$STACK_DIR/tansu/${TANSU_STORAGE#sqlite://}
  rm -f "$db" "$db-shm" "$db-wal"
  start_kafka
  wait_kafka
}

cmd_restart() {
  case ${1:-} in
    kafka) stop_pid tansu "$kafka_pid"; start_kafka; wait_kafka ;;
    clickhouse) stop_pid clickhouse "$ch_pid"; start_clickhouse; wait_clickhouse ;;
    *) die "restart takes kafka or clickhouse" ;;
  esac
}

# SIGSTOP/SIGCONT the service this script started: connections stay open and hang.
cmd_signal() {
  local sig=$1 f
  case ${2:-} in
    kafka) f=$kafka_pid ;;
    clickhouse) f=$ch_pid ;;
    *) die "pause and resume take kafka or clickhouse" ;;
  esac
  pid_alive "$f" || die "${2} was not started by this stack (no live pid in $f)"
  kill "-$sig" "$(cat "$f")"
  log "sent SIG$sig to ${2} (pid $(cat "$f"))"
}

case ${1:-} in
  up) cmd_up ;;
  pause) cmd_signal STOP "${2:-}" ;;
  resume) cmd_signal CONT "${2:-}" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  restart) shift; cmd_restart "$@" ;;
  reset-kafka) cmd_reset_kafka ;;
  install) install_all ;;
  *) echo "usage: $0 up|down|status|logs|restart|pause|resume kafka|clickhouse|reset-kafka|install" >&2; exit 2 ;;
esac
