"""mailbridge: mirror email metadata from IMAP into Postgres and keep it true."""

__version__ = "0.1.0"
