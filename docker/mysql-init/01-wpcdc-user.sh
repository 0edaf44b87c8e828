#!/bin/sh
# Runs once, on the first start of the MySQL container: the replication user wpcdc needs, with
# exactly the privileges the README documents.
set -eu
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
CREATE USER IF NOT EXISTS 'wpcdc'@'%' IDENTIFIED BY '${WPCDC_MYSQL_PASSWORD}';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wpcdc'@'%';
GRANT SELECT ON wordpress.* TO 'wpcdc'@'%';
SQL
