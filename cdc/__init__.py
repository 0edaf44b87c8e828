"""wpcdc: WordPress change-data-capture from the MySQL/MariaDB binlog to Kafka."""

__version__ = "0.1.0"
