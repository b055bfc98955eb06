"""Where nccurate reads and writes files: local disk or an object store (files, atomic), with retries of transient errors (retry)."""
