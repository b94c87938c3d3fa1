#!/bin/sh
# Runs once, on the database's first start (docker-entrypoint-initdb.d):
# lets streaming standbys (docker compose --profile replica) connect for
# replication with the password of POSTGRES_USER, a superuser. A volume
# initialised before this file existed needs the line added by hand.
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
