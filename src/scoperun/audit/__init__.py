"""The audit trail: one JSON record per run (`log`), a hash chain per host (`chain`), a host-local
SQLite index (`index`), where host state lives (`state`), statistics (`stats`) and Prometheus
metrics (`metrics`). Every run is recorded before anything starts.
"""

from __future__ import annotations

from scoperun.audit.log import AuditLog, keep_full_output, record_from_result

__all__ = ["AuditLog", "keep_full_output", "record_from_result"]
