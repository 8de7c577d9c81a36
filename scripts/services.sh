#!/usr/bin/env bash
# Brings up the servers the test suite needs, on their standard loopback ports:
# PostgreSQL 5432, MariaDB 3306, Redis 6379, RabbitMQ 5672, NATS 4222, and the
# command-line peers kcat and amqp-publish, and Chromium for the console's
# browser tests. Each one already listening is left
# alone. A missing server is installed from Debian's packages when run as root.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
	local port=$1 name=$2
	for _ in $(seq 1 120); do
		listening "$port" && return 0
		sleep 0.5
	done
	log "$name did not start listening on 127.0.0.1:$port"
	return 1
}

apt_updated=
install() {
	if [ "$(id -u)" != 0 ]; then
		log "missing $*; install it (as root: apt-get install -y $*)"
		return 1
	fi
	if [ -z "$apt_updated" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		apt_updated=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

postgres() {
	listening 5432 && return 0
	if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
		install postgresql
		local conf
		conf=$(ls -d /etc/postgresql/*/main | head -1)
		# Trust local loopback connections, as the test suite's DSNs expect.
		sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/; s/^\(host.*::1\/128\s*\)\S*$/\1trust/; s/^\(local\s\+all\s\+all\s*\)\S*$/\1trust/' "$conf/pg_hba.conf"
	fi
	pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
	wait_port 5432 PostgreSQL
	su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 ||
		su postgres -c "createdb test"
}

mariadb() {
	listening 3306 && return 0
	if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
		install mariadb-server
		fresh=1
	fi
	mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
	start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
	wait_port 3306 MariaDB
	if [ -n "${fresh:-}" ]; then
		mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD(''); CREATE DATABASE IF NOT EXISTS test;" ||
			log "could not set up root without a password"
	fi
	mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS test" 2>/dev/null || true
}

redis() {
	listening 6379 && return 0
	command -v redis-server >/dev/null || install redis-server
	mkdir -p /var/lib/redis /var/log/redis
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log
	wait_port 6379 Redis
}

rabbitmq() {
	listening 5672 && return 0
	command -v rabbitmq-server >/dev/null || install rabbitmq-server
	rabbitmq-server -detached
	wait_port 5672 RabbitMQ
	# The AMQP port opens before the broker accepts logins; wait for it.
	for _ in $(seq 1 60); do
		rabbitmqctl -q status >/dev/null 2>&1 && break
		sleep 1
	done
}

nats() {
	listening 4222 && return 0
	[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || install nats-server
	mkdir -p /var/lib/nats-server
	start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server || echo /usr/sbin/nats-server)" -- \
		-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
	wait_port 4222 NATS
}

tools() {
	local missing=()
	command -v kcat >/dev/null || missing+=(kcat)
	command -v amqp-publish >/dev/null || missing+=(amqp-tools)
	command -v redis-server >/dev/null || missing+=(redis-server)
	# The console's browser tests drive a headless Chromium.
	command -v chromium >/dev/null || missing+=(chromium)
	[ ${#missing[@]} -eq 0 ] || install "${missing[@]}"
}

tools
postgres
mariadb
redis
rabbitmq
nats
log "all services up"
