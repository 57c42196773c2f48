"""The cluster's PostgreSQL side ([storage] database): connections, versioned migrations, and the
stores that keep their records there."""
